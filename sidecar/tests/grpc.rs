//! gRPC end to end on a real kernel: Python grpcio servers and clients in a pod
//! (`tests/servers/grpc_peer.py`), the sidecar exporting to a real OTLP receiver. Unary calls
//! with OK and error statuses on both sides, a server-streaming call, a client deadline, and a
//! gRPC call made by an HTTP handler. Each test runs in both capture modes (`tracepoints::` and
//! `pod_scoped::`, see `in_both_modes!`). Needs root; CI runs as root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests (run through in_both_modes, so outside #[test] functions) and their helpers \
              fail loudly with context"
)]

#[path = "support/otlp.rs"]
mod otlp;
#[path = "support/pod.rs"]
mod pod;
#[path = "support/sidecar.rs"]
mod sidecar;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use otlp::{OtlpReceiver, int_attribute, string_attribute};
use pod::{Container, Mode, Pod, free_ports, wait_for_port};
use sidecar::*;

fn peer_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/servers/grpc_peer.py")
        .to_string_lossy()
        .into_owned()
}

/// A pod whose `app` container runs the gRPC server on `port`, and whose `obi` container runs
/// the sidecar, instrumenting every process of the pod.
async fn pod_with_server(mode: Mode, receiver: &OtlpReceiver, port: u16) -> (Pod, Container) {
    let mut pod = Pod::with_mode(mode);
    let app = pod.container("app");
    let obi = pod.container("obi");
    pod.spawn_in(
        &app,
        "server",
        &["python3", &peer_script(), "serve", &port.to_string()],
        &[],
    );
    wait_for_port(port, Duration::from_secs(20));
    let env = sidecar_env(
        receiver,
        &[("OTEL_EBPF_CAPTURE_MODE", mode.as_env().to_owned())],
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pod.spawn_in(&obi, "sidecar", &[&pod::sidecar_bin()], &env);
    pod.wait_for_log("sidecar.err", "capturing", Duration::from_secs(20));
    (pod, app)
}

/// Runs the gRPC client in the pod once the sidecar instruments it (so its connection is seen
/// from the start), and returns what it printed: one status name per call.
async fn run_client(pod: &mut Pod, app: &Container, port: u16, calls: &[&str]) -> Vec<String> {
    let go = pod.path("go");
    let go_arg = format!("--after={}", go.to_string_lossy());
    let script = peer_script();
    let port = port.to_string();
    let mut argv = vec!["python3", &script, "call", &port, &go_arg];
    argv.extend_from_slice(calls);
    let before = instrumented(pod);
    pod.spawn_in(app, "client", &argv, &[]);
    let deadline = Instant::now() + WAIT;
    while instrumented(pod) == before {
        assert!(
            Instant::now() < deadline,
            "the client was never instrumented"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&go, "").expect("go file");
    let deadline = Instant::now() + WAIT;
    loop {
        let printed: Vec<String> = pod.log("client.out").lines().map(str::to_owned).collect();
        if printed.len() == calls.len() {
            return printed;
        }
        assert!(
            Instant::now() < deadline,
            "the client printed {printed:?}; stderr: {}",
            pod.log("client.err")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Processes the sidecar said it instruments.
/// Python processes the sidecar instruments so far (the pod's `pause` and idle containers are
/// instrumented too, and must not count).
fn instrumented(pod: &Pod) -> usize {
    pod.log("sidecar.err")
        .lines()
        .filter(|l| l.contains("instrumenting process") && l.contains("python"))
        .count()
}

fn of_kind(spans: &[Span], kind: SpanKind) -> Vec<&Span> {
    spans.iter().filter(|s| s.kind == kind as i32).collect()
}

fn is_error(span: &Span) -> bool {
    span.status.as_ref().map(|s| s.code) == Some(StatusCode::Error as i32)
}

/// Spans as (name, gRPC status code, error) counts.
fn tally(spans: &[&Span]) -> BTreeMap<(String, Option<i64>, bool), usize> {
    let mut counts = BTreeMap::new();
    for span in spans {
        let key = (
            span.name.clone(),
            int_attr(span, "rpc.grpc.status_code"),
            is_error(span),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Every span is a gRPC one: nothing of the calls also became an HTTP span.
fn assert_only_grpc(spans: &[Span]) {
    for span in spans {
        assert_eq!(
            str_attr(span, "rpc.system").as_deref(),
            Some("grpc"),
            "{span:#?}"
        );
        assert!(
            !span.attributes.iter().any(|kv| kv.key.starts_with("http.")),
            "{span:#?}"
        );
    }
}

/// The count of the latest data point of histogram `name` whose attributes include `attrs`.
fn histogram_count(metrics: &[Metric], name: &str, attrs: &[(&str, &str)]) -> u64 {
    let Some(metric) = metrics.iter().rev().find(|m| m.name == name) else {
        return 0;
    };
    let Some(metric::Data::Histogram(histogram)) = &metric.data else {
        return 0;
    };
    histogram
        .data_points
        .iter()
        .filter(|point| {
            attrs.iter().all(|(key, value)| {
                string_attribute(&point.attributes, key) == Some(*value)
                    || int_attribute(&point.attributes, key)
                        .map(|i| i.to_string())
                        .as_deref()
                        == Some(*value)
            })
        })
        .map(|point| point.count)
        .sum()
}

async fn unary_calls_with_ok_and_error_statuses_on_both_sides(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let [port] = free_ports();
    let (mut pod, app) = pod_with_server(mode, &receiver, port).await;
    let calls = [
        "SayHello:a",
        "SayHello:b",
        "SayHello:c",
        "SayHello:status:5",
        "SayHello:status:5",
        "SayHello:status:3",
        "SayHello:status:13",
        "SayHello:status:14",
        "SayHello:raise",
        "Missing",
    ];
    let printed = run_client(&mut pod, &app, port, &calls).await;
    assert_eq!(
        printed,
        [
            "OK",
            "OK",
            "OK",
            "NOT_FOUND",
            "NOT_FOUND",
            "INVALID_ARGUMENT",
            "INTERNAL",
            "UNAVAILABLE",
            "UNKNOWN",
            "UNIMPLEMENTED",
        ]
    );
    wait_spans(&receiver, 2 * calls.len()).await;
    // Nothing more arrives after the expected count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = span_list(&receiver);
    assert_only_grpc(&spans);
    let hello = "shop.Greeter/SayHello".to_owned();
    let missing = "shop.Greeter/Missing".to_owned();
    // Servers: an error for the server's own faults only.
    assert_eq!(
        tally(&of_kind(&spans, SpanKind::Server)),
        BTreeMap::from([
            ((hello.clone(), Some(0), false), 3),
            ((hello.clone(), Some(2), true), 1),
            ((hello.clone(), Some(3), false), 1),
            ((hello.clone(), Some(5), false), 2),
            ((hello.clone(), Some(13), true), 1),
            ((hello.clone(), Some(14), true), 1),
            ((missing.clone(), Some(12), true), 1),
        ])
    );
    // Clients: an error for anything but OK.
    assert_eq!(
        tally(&of_kind(&spans, SpanKind::Client)),
        BTreeMap::from([
            ((hello.clone(), Some(0), false), 3),
            ((hello.clone(), Some(2), true), 1),
            ((hello.clone(), Some(3), true), 1),
            ((hello.clone(), Some(5), true), 2),
            ((hello.clone(), Some(13), true), 1),
            ((hello.clone(), Some(14), true), 1),
            ((missing.clone(), Some(12), true), 1),
        ])
    );
    for span in &spans {
        assert_eq!(
            str_attr(span, "rpc.service").as_deref(),
            Some("shop.Greeter")
        );
        assert_eq!(int_attr(span, "server.port"), Some(i64::from(port)));
        assert_eq!(
            str_attr(span, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        let client_address = str_attr(span, "client.address");
        match span.kind {
            k if k == SpanKind::Server as i32 => {
                assert_eq!(client_address.as_deref(), Some("127.0.0.1"));
            }
            _ => assert_eq!(client_address, None),
        }
    }
    // Each server span continues its client span's trace? grpcio sends no traceparent, so
    // each side is a trace of its own; the client spans are roots (no serving request).
    for span in of_kind(&spans, SpanKind::Client) {
        assert!(span.parent_span_id.is_empty(), "{span:#?}");
    }
    // The duration histograms count the same calls, per status code.
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics: Vec<Metric> = receiver.metrics().into_iter().map(|(_, m)| m).collect();
        let server = |code: &str| {
            histogram_count(
                &metrics,
                "rpc.server.call.duration",
                &[
                    ("rpc.system", "grpc"),
                    ("rpc.service", "shop.Greeter"),
                    ("rpc.method", "SayHello"),
                    ("rpc.grpc.status_code", code),
                ],
            )
        };
        let client_ok = histogram_count(
            &metrics,
            "rpc.client.call.duration",
            &[("rpc.method", "SayHello"), ("rpc.grpc.status_code", "0")],
        );
        let http = metrics.iter().any(|m| m.name.starts_with("http."));
        if (server("0"), server("5"), server("13"), client_ok) == (3, 2, 1, 3) {
            assert!(!http, "gRPC calls made HTTP metrics");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server 0/5/13: {}/{}/{}, client OK: {client_ok}",
            server("0"),
            server("5"),
            server("13")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_server_streaming_call_is_one_span_from_request_to_last_message(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let [port] = free_ports();
    let (mut pod, app) = pod_with_server(mode, &receiver, port).await;
    let printed = run_client(&mut pod, &app, port, &["Count:6"]).await;
    assert_eq!(printed, ["OK 6"]);
    wait_spans(&receiver, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = span_list(&receiver);
    assert_only_grpc(&spans);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for span in &spans {
        assert_eq!(span.name, "shop.Greeter/Count");
        assert_eq!(int_attr(span, "rpc.grpc.status_code"), Some(0));
        assert!(!is_error(span));
        // Six messages 20 ms apart: the span covers the whole stream.
        let duration = span.end_time_unix_nano - span.start_time_unix_nano;
        assert!(duration >= 100_000_000, "{duration} ns: {span:#?}");
    }
}

async fn a_client_deadline_is_an_error_on_the_client_span(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let [port] = free_ports();
    let (mut pod, app) = pod_with_server(mode, &receiver, port).await;
    let printed = run_client(&mut pod, &app, port, &["Sleep:600@150", "SayHello:after"]).await;
    assert_eq!(printed, ["DEADLINE_EXCEEDED", "OK"]);
    wait_spans(&receiver, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = span_list(&receiver);
    assert_only_grpc(&spans);
    let sleeps: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "shop.Greeter/Sleep")
        .collect();
    let client: Vec<&&Span> = sleeps
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(client.len(), 1, "{sleeps:#?}");
    let client = client[0];
    assert!(is_error(client), "{client:#?}");
    // The deadline ended the call: about 150 ms, not the 600 ms the server sleeps.
    let duration = client.end_time_unix_nano - client.start_time_unix_nano;
    assert!(
        (100_000_000..500_000_000).contains(&duration),
        "{duration} ns"
    );
    deadline_status(client);
    // The server's span of the same call ends no later than its handler returns, and is an
    // error either way (DEADLINE_EXCEEDED, or a stream the client reset).
    let server: Vec<&&Span> = sleeps
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "{sleeps:#?}");
    assert!(is_error(server[0]), "{:#?}", server[0]);
    // The next call on the same connection is unaffected.
    let hello: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "shop.Greeter/SayHello")
        .collect();
    assert_eq!(hello.len(), 2, "{spans:#?}");
    assert!(
        hello
            .iter()
            .all(|s| int_attr(s, "rpc.grpc.status_code") == Some(0))
    );
}

/// What the wire says of a call whose client deadline passed: DEADLINE_EXCEEDED from the
/// server, or the client's reset of the stream (no status, `error.type` `_OTHER`).
fn deadline_status(client: &Span) {
    match int_attr(client, "rpc.grpc.status_code") {
        Some(code) => assert_eq!(code, 4, "{client:#?}"),
        None => {
            assert_eq!(str_attr(client, "error.type").as_deref(), Some("_OTHER"));
            assert_eq!(
                client.status.as_ref().map(|s| s.message.as_str()),
                Some("stream reset")
            );
        }
    }
}

async fn a_grpc_call_made_while_serving_an_http_request_joins_its_trace(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let [grpc_port, http_port] = free_ports();
    let (mut pod, app) = pod_with_server(mode, &receiver, grpc_port).await;
    pod.spawn_in(
        &app,
        "frontend",
        &[
            "python3",
            &peer_script(),
            "http",
            &http_port.to_string(),
            &grpc_port.to_string(),
        ],
        &[],
    );
    wait_for_port(http_port, Duration::from_secs(20));
    let deadline = Instant::now() + WAIT;
    while instrumented(&pod) < 2 {
        assert!(
            Instant::now() < deadline,
            "the frontend was never instrumented: {}",
            pod.log("sidecar.err")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first call connects the channel: grpcio's own threads connect and write it (it is a
    // root). Later calls are written by the thread making them, the one serving the request.
    let names = ["first", "ann", "bob", "cy"];
    for name in names {
        let code = curl(&[&format!("http://127.0.0.1:{http_port}/hello/{name}")]);
        assert_eq!(code.trim(), "200");
    }
    // Per request: the frontend's HTTP server span, its gRPC client span, the gRPC server span.
    wait_spans(&receiver, 3 * names.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = span_list(&receiver);
    let http: Vec<&Span> = spans
        .iter()
        .filter(|s| str_attr(s, "http.request.method").is_some())
        .collect();
    let mut calls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32 && str_attr(s, "rpc.system").is_some())
        .collect();
    calls.sort_by_key(|s| s.start_time_unix_nano);
    let log = pod.log("sidecar.err");
    assert_eq!(http.len(), names.len(), "{spans:#?}\nsidecar:\n{log}");
    assert_eq!(calls.len(), names.len(), "{spans:#?}\nsidecar:\n{log}");
    assert_eq!(of_kind(&spans, SpanKind::Server).len(), 2 * names.len());
    assert!(calls[0].parent_span_id.is_empty(), "{:#?}", calls[0]);
    // Each later gRPC client span is a child of the HTTP request it was made for.
    for call in &calls[1..] {
        assert_eq!(call.name, "shop.Greeter/SayHello");
        let parent = http
            .iter()
            .find(|s| s.span_id == call.parent_span_id)
            .unwrap_or_else(|| panic!("no HTTP parent for {call:#?} in {http:#?}"));
        assert_eq!(parent.trace_id, call.trace_id);
        assert!(parent.start_time_unix_nano <= call.start_time_unix_nano);
        assert!(call.end_time_unix_nano <= parent.end_time_unix_nano);
    }
}

in_both_modes!(
    unary_calls_with_ok_and_error_statuses_on_both_sides,
    a_server_streaming_call_is_one_span_from_request_to_last_message,
    a_client_deadline_is_an_error_on_the_client_span,
    a_grpc_call_made_while_serving_an_http_request_joins_its_trace,
);
