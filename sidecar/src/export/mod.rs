//! Export: OTLP encoding ([`encode`]), the span queue ([`batch`]) and its export task, the
//! transport ([`otlp`]), the metric export ([`metrics`]), the Prometheus endpoint
//! ([`prometheus`]) and the trace printer ([`printer`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::telemetry::metrics::SelfMetrics;

pub mod batch;
pub mod encode;
pub mod metrics;
pub mod otlp;
pub mod printer;
pub mod prometheus;

use batch::SpanQueue;
use encode::EncodedScope;
use otlp::{Exporter, Outcome, Traces};

/// How long an export may overrun its own timeout before it is abandoned.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Exports the queue's batches one after the other until it is closed and empty. The request
/// buffer is taken back after each export, so it is reused whenever the transport let go of it.
pub(crate) async fn export_spans(
    queue: Arc<SpanQueue>,
    mut exporter: Exporter<Traces>,
    scope: EncodedScope,
    metrics: SelfMetrics,
) {
    let mut body = Vec::new();
    while let Some(batch) = queue.next().await {
        let count = batch.len() as u64;
        body.clear();
        batch.encode_request(&scope, &mut body);
        queue.recycle(batch);
        let request = Bytes::from(std::mem::take(&mut body));
        match exporter.export(request.clone()).await {
            Outcome::Accepted { rejected } => {
                let rejected = rejected.min(count);
                metrics.spans_exported.add(count - rejected);
                metrics.spans_dropped.add(rejected);
            }
            Outcome::Failed => metrics.spans_dropped.add(count),
        }
        body = request.try_into_mut().map(Vec::from).unwrap_or_default();
    }
}
