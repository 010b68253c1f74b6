//! What the sidecar's end-to-end tests share: a sidecar in a pod exporting to the test's OTLP
//! receiver, waiting for its spans, reading their attributes, and a curl client.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test harness: failing loudly with context is its job"
)]

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};

use super::otlp::{OtlpReceiver, int_attribute, string_attribute};
use super::pod::{Pod, run};

/// How long a test waits for spans.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn str_attr(span: &Span, key: &str) -> Option<String> {
    string_attribute(&span.attributes, key).map(str::to_owned)
}

pub fn int_attr(span: &Span, key: &str) -> Option<i64> {
    int_attribute(&span.attributes, key)
}

/// Environment for a sidecar exporting over gRPC to `receiver`, flushing quickly.
pub fn sidecar_env(
    receiver: &OtlpReceiver,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", receiver.grpc_addr),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_string()),
        ("OTEL_EBPF_LOG_LEVEL", "info".to_string()),
    ];
    env.extend(extra.iter().cloned());
    env
}

pub fn start_sidecar(pod: &mut Pod, env: &[(&'static str, String)]) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pod.start_sidecar(&env);
}

/// The spans the receiver holds, without their resources.
pub fn span_list(receiver: &OtlpReceiver) -> Vec<Span> {
    receiver.spans().into_iter().map(|(_, s)| s).collect()
}

/// Waits until the receiver holds at least `n` spans, then returns all of them.
pub async fn wait_spans(receiver: &OtlpReceiver, n: usize) -> Vec<Span> {
    receiver
        .wait_for_spans(n, WAIT)
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

pub fn curl(args: &[&str]) -> String {
    let mut argv = vec!["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\n"];
    argv.extend_from_slice(args);
    run(&argv)
}

pub fn server_spans_on_port(spans: &[Span], port: u16) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| {
            s.kind == SpanKind::Server as i32 && int_attr(s, "server.port") == Some(i64::from(port))
        })
        .collect()
}
