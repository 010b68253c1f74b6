//! Export: OTLP exporters built from the configuration, the span batching task, the Prometheus
//! endpoint and the trace printer. Telemetry hands them finished spans and metric readers.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    MetricExporter, SpanExporter as OtlpSpanExporter, WithExportConfig, WithHttpConfig,
    WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{BatchConfig, OtlpSignal, Protocol};
use crate::telemetry::metrics::{PrometheusMetrics, SelfMetrics};
use crate::{Error, Result};

pub mod printer;

/// How long an export may overrun its own timeout before it is abandoned.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn exporter_error(
    signal: &'static str,
) -> impl Fn(opentelemetry_otlp::ExporterBuildError) -> Error {
    move |error| Error::Exporter {
        signal,
        message: error.to_string(),
    }
}

fn grpc_metadata(signal: &'static str, config: &OtlpSignal) -> Result<MetadataMap> {
    let mut headers = http::HeaderMap::new();
    for (key, value) in &config.headers {
        let name = http::HeaderName::from_bytes(key.as_bytes()).map_err(|e| Error::Exporter {
            signal,
            message: format!("header {key:?}: {e}"),
        })?;
        let value = http::HeaderValue::from_str(value).map_err(|e| Error::Exporter {
            signal,
            message: format!("header {key:?}: {e}"),
        })?;
        headers.append(name, value);
    }
    Ok(MetadataMap::from_headers(headers))
}

fn configure_grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    signal: &'static str,
    config: &OtlpSignal,
) -> Result<B> {
    Ok(builder
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.timeout)
        .with_metadata(grpc_metadata(signal, config)?))
}

fn configure_http<B: WithExportConfig + WithHttpConfig>(builder: B, config: &OtlpSignal) -> B {
    builder
        .with_endpoint(config.endpoint.clone())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(config.timeout)
        .with_headers(config.headers.iter().cloned().collect())
}

pub(crate) fn span_exporter(config: &OtlpSignal) -> Result<OtlpSpanExporter> {
    const SIGNAL: &str = "traces";
    let builder = OtlpSpanExporter::builder();
    match config.protocol {
        Protocol::Grpc => configure_grpc(builder.with_tonic(), SIGNAL, config)?.build(),
        Protocol::HttpProtobuf => configure_http(builder.with_http(), config).build(),
    }
    .map_err(exporter_error(SIGNAL))
}

pub(crate) fn metric_exporter(config: &OtlpSignal) -> Result<MetricExporter> {
    const SIGNAL: &str = "metrics";
    let builder = MetricExporter::builder();
    match config.protocol {
        Protocol::Grpc => configure_grpc(builder.with_tonic(), SIGNAL, config)?
            .with_temporality(Temporality::Cumulative)
            .build(),
        Protocol::HttpProtobuf => configure_http(builder.with_http(), config)
            .with_temporality(Temporality::Cumulative)
            .build(),
    }
    .map_err(exporter_error(SIGNAL))
}

/// A span waiting for export.
#[derive(Debug)]
pub(crate) struct QueuedSpan {
    pub(crate) resource: Arc<Resource>,
    pub(crate) span: SpanData,
}

/// Tracks whether the collector is reachable, to log transitions rather than every failure.
#[derive(Debug, Default)]
pub(crate) struct ExportHealth {
    failing: bool,
}

impl ExportHealth {
    pub(crate) fn record(
        &mut self,
        signal: &str,
        result: std::result::Result<OTelSdkResult, ()>,
    ) -> bool {
        match result {
            Ok(Ok(())) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(signal, "OTLP export works again");
                }
                true
            }
            Ok(Err(error)) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(signal, %error, "OTLP export failed; dropping until it works");
                }
                false
            }
            Err(()) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(signal, "OTLP export timed out; dropping until it works");
                }
                false
            }
        }
    }
}

/// Batches queued spans (up to the batch size, or for the schedule delay) and exports them.
pub(crate) async fn export_spans(
    mut queue: mpsc::Receiver<QueuedSpan>,
    mut exporter: OtlpSpanExporter,
    batch: BatchConfig,
    timeout: Duration,
    metrics: SelfMetrics,
) {
    let mut pending: Vec<QueuedSpan> = Vec::with_capacity(batch.max_export_batch_size);
    let mut health = ExportHealth::default();
    let mut open = true;
    while open {
        if queue
            .recv_many(&mut pending, batch.max_export_batch_size)
            .await
            == 0
        {
            break;
        }
        let deadline = Instant::now() + batch.schedule_delay;
        while pending.len() < batch.max_export_batch_size {
            let room = batch.max_export_batch_size - pending.len();
            match tokio::time::timeout_at(deadline, queue.recv_many(&mut pending, room)).await {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // Group by resource (few distinct ones per batch), keeping arrival order within each.
        let mut groups: Vec<(Arc<Resource>, Vec<SpanData>)> = Vec::new();
        for QueuedSpan { resource, span } in pending.drain(..) {
            match groups.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &resource)) {
                Some((_, spans)) => spans.push(span),
                None => groups.push((resource, vec![span])),
            }
        }
        for (resource, spans) in groups {
            let count = spans.len() as u64;
            exporter.set_resource(&resource);
            // The exporter has its own timeout; this one guards against it not firing.
            let result = tokio::time::timeout(timeout + SHUTDOWN_GRACE, exporter.export(spans))
                .await
                .map_err(|_| ());
            if health.record("traces", result) {
                metrics.spans_exported.add(count);
            } else {
                metrics.spans_dropped.add(count);
            }
        }
    }
    if let Err(error) = exporter.shutdown() {
        tracing::debug!(%error, "shutting down the span exporter");
    }
}

/// Serves `/metrics` until stopped.
pub(crate) async fn serve_prometheus(
    listener: tokio::net::TcpListener,
    metrics: Arc<PrometheusMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    metrics.encode(),
                )
            }
        }),
    );
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "the Prometheus endpoint stopped");
    }
}
