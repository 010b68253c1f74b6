//! HTTP/2 end to end on a real kernel: nginx serving cleartext HTTP/2 under h2load and curl,
//! an `Upgrade: h2c` request to python-hyper's h2, Node's built-in http2 module as server and
//! client, a connection opened before the sidecar started, and writes whose frame headers are
//! split across buffers (as grpcio's are); spans exported over OTLP to a real receiver, each in
//! both capture modes. Needs root; CI runs as root.
#![allow(
    clippy::expect_used,
    reason = "test bodies are plain functions, called by the tests `in_both_modes!` makes"
)]

#[path = "support/otlp.rs"]
mod otlp;
#[path = "support/pod.rs"]
mod pod;
#[path = "support/sidecar.rs"]
mod sidecar;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use otlp::OtlpReceiver;
use pod::{Mode, Pod, free_ports, run, wait_for_port};
use sidecar::*;

fn server(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/servers")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

/// The pod's sidecar, selecting `ports`, exporting to `receiver`.
fn sidecar_selecting(pod: &mut Pod, receiver: &OtlpReceiver, ports: &[u16]) {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let env = sidecar_env(receiver, &[("OTEL_EBPF_OPEN_PORT", ports.join(","))]);
    start_sidecar(pod, &env);
}

/// Spans of `kind` as (name, status code) counts.
fn tally(spans: &[&Span]) -> BTreeMap<(String, i64), usize> {
    let mut counts = BTreeMap::new();
    for span in spans {
        let key = (
            span.name.clone(),
            int_attr(span, "http.response.status_code").unwrap_or(0),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn of_kind(spans: &[Span], kind: SpanKind) -> Vec<&Span> {
    spans.iter().filter(|s| s.kind == kind as i32).collect()
}

/// Many streams in flight on each connection: nginx writes (and the pod-scoped hooks see) skbs
/// of dozens of HEADERS and DATA frames, far beyond the bounded copy; every request is a span.
async fn nginx_h2c_under_h2load_one_span_per_request(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    pod.start_nginx_h2c("nginx", port);
    let env = sidecar_env(
        &receiver,
        &[
            ("OTEL_EBPF_OPEN_PORT", port.to_string()),
            // h2load sends as fast as nginx answers: size the export queue for the burst.
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16384".to_string()),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2048".to_string()),
            // And the ring buffer, so an unoptimised test build keeps up too.
            ("OTEL_EBPF_BPF_RINGBUF_SIZE", (16 << 20).to_string()),
        ],
    );
    start_sidecar(&mut pod, &env);
    // 10k requests over 10 connections, 100 streams in flight on each.
    let base = format!("http://127.0.0.1:{port}");
    let out = run(&[
        "h2load",
        "-n",
        "8000",
        "-c",
        "10",
        "-m",
        "100",
        &format!("{base}/status/200"),
    ]);
    assert!(out.contains("8000 done, 8000 succeeded"), "{out}");
    let out = run(&[
        "h2load",
        "-n",
        "2000",
        "-c",
        "10",
        "-m",
        "100",
        &format!("{base}/status/404"),
    ]);
    // h2load counts a 404 as failed: all of them done, all answered 4xx.
    assert!(
        out.contains("2000 done") && out.contains("2000 4xx"),
        "{out}"
    );
    receiver
        .wait_for_spans(10_000, Duration::from_secs(60))
        .await;
    // Nothing more arrives after the expected count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans: Vec<Span> = receiver.spans().into_iter().map(|(_, s)| s).collect();
    assert!(spans.len() >= 10_000);
    let server = server_spans_on_port(&spans, port);
    assert_eq!(
        tally(&server),
        BTreeMap::from([
            (("GET /status/*".to_owned(), 200), 8000),
            (("GET /status/*".to_owned(), 404), 2000),
        ])
    );
    for span in &server {
        assert_eq!(
            str_attr(span, "network.protocol.version").as_deref(),
            Some("2")
        );
        assert!(str_attr(span, "url.path").is_some_and(|p| p.starts_with("/status/")));
    }
}

async fn curl_with_prior_knowledge_and_an_incoming_traceparent(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    pod.start_nginx_h2c("nginx", port);
    sidecar_selecting(&mut pod, &receiver, &[port]);
    let code = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        &format!("http://127.0.0.1:{port}/status/500"),
    ]);
    assert_eq!(code.trim(), "500");
    let spans = wait_spans(&receiver, 1).await;
    let server = server_spans_on_port(&spans, port);
    assert_eq!(server.len(), 1, "{server:#?}");
    let span = server[0];
    assert_eq!(int_attr(span, "http.response.status_code"), Some(500));
    assert_eq!(str_attr(span, "url.path").as_deref(), Some("/status/500"));
    assert_eq!(
        hex::encode(&span.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32)
    );
}

async fn an_upgrade_to_h2c_is_followed_into_http2(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    pod.spawn(
        "h2c",
        &["python3", &server("h2c_upgrade.py"), &port.to_string()],
        &[],
    );
    wait_for_port(port, Duration::from_secs(10));
    sidecar_selecting(&mut pod, &receiver, &[port]);
    // curl upgrades the first request, then sends the second on the same HTTP/2 connection.
    let base = format!("http://127.0.0.1:{port}");
    let codes = curl(&[
        "--http2",
        &format!("{base}/first"),
        "-o",
        "/dev/null",
        &format!("{base}/missing"),
    ]);
    assert_eq!(codes.split_whitespace().collect::<Vec<_>>(), ["200", "404"]);
    let spans = wait_spans(&receiver, 2).await;
    let server = server_spans_on_port(&spans, port);
    let mut seen: Vec<(String, i64, String)> = server
        .iter()
        .map(|s| {
            (
                str_attr(s, "url.path").unwrap_or_default(),
                int_attr(s, "http.response.status_code").unwrap_or(0),
                str_attr(s, "network.protocol.version").unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("/first".to_owned(), 200, "2".to_owned()),
            ("/missing".to_owned(), 404, "2".to_owned()),
        ]
    );
}

async fn node_http2_server_and_client_in_the_pod(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    pod.spawn(
        "node",
        &["node", &server("node_h2.js"), "serve", &port.to_string()],
        &[],
    );
    wait_for_port(port, Duration::from_secs(10));
    // No port selection: every process of the pod, the client too. The client waits for a
    // file to appear, which the test makes once the sidecar instruments it.
    start_sidecar(&mut pod, &sidecar_env(&receiver, &[]));
    let go = pod.path("go");
    let go_arg = go.to_string_lossy().into_owned();
    pod.spawn(
        "client",
        &[
            "node",
            &server("node_h2.js"),
            "get",
            &port.to_string(),
            &format!("--after={go_arg}"),
            "/a",
            "/missing",
            "POST:/upload",
        ],
        &[],
    );
    let deadline = std::time::Instant::now() + WAIT;
    while pod
        .log("sidecar.err")
        .lines()
        .filter(|l| l.contains("instrumenting process") && l.contains("node"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the client was never instrumented"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&go, "").expect("go file");
    pod.wait_for_log("client.out", "200", WAIT);
    let spans = wait_spans(&receiver, 6).await;
    for kind in [SpanKind::Server, SpanKind::Client] {
        let mut seen: Vec<(String, String, i64)> = of_kind(&spans, kind)
            .iter()
            .map(|s| {
                (
                    str_attr(s, "http.request.method").unwrap_or_default(),
                    str_attr(
                        s,
                        if kind == SpanKind::Client {
                            "url.full"
                        } else {
                            "url.path"
                        },
                    )
                    .unwrap_or_default(),
                    int_attr(s, "http.response.status_code").unwrap_or(0),
                )
            })
            .collect();
        seen.sort();
        let path = |p: &str| match kind {
            SpanKind::Server => p.to_owned(),
            _ => format!("http://127.0.0.1:{port}{p}"),
        };
        assert_eq!(
            seen,
            [
                ("GET".to_owned(), path("/a"), 200),
                ("GET".to_owned(), path("/missing"), 404),
                ("POST".to_owned(), path("/upload"), 200),
            ],
            "{kind:?}"
        );
    }
    // The POST's body sizes, both sides.
    for span in spans
        .iter()
        .filter(|s| str_attr(s, "http.request.method").as_deref() == Some("POST"))
    {
        assert_eq!(int_attr(span, "http.request.body.size"), Some(5000));
        assert_eq!(int_attr(span, "http.response.body.size"), Some(5000));
    }
}

async fn a_session_opened_before_the_sidecar_started_still_yields_spans(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    pod.spawn(
        "node",
        &["node", &server("node_h2.js"), "serve", &port.to_string()],
        &[],
    );
    wait_for_port(port, Duration::from_secs(10));
    // The client's session is open (one request done) before the sidecar starts.
    let mut client = Command::new("node")
        .args([
            &server("node_h2.js"),
            "hold",
            &port.to_string(),
            "/early",
            "/late",
            "/missing",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut stdout = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("first status");
    assert_eq!(line.trim(), "200");
    sidecar_selecting(&mut pod, &receiver, &[port]);
    writeln!(client.stdin.take().expect("stdin")).expect("go on");
    assert!(client.wait().expect("client").success());
    let spans = wait_spans(&receiver, 3).await;
    let server = server_spans_on_port(&spans, port);
    // Later requests of the session are seen; the header table of the session's start is not,
    // so a field may be unknown, but never wrong, and statuses (static table) are known.
    let mut statuses: Vec<i64> = server
        .iter()
        .map(|s| int_attr(s, "http.response.status_code").unwrap_or(0))
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 404], "{spans:#?}");
    for span in &server {
        if let Some(path) = str_attr(span, "url.path") {
            assert!(
                ["/early", "/late", "/missing"].contains(&path.as_str()),
                "{path}"
            );
        }
    }
}

async fn frame_headers_split_across_the_buffers_of_a_write_are_followed(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    pod.start_nginx_h2c("nginx", port);
    // Every process of the pod: nginx and the client.
    start_sidecar(&mut pod, &sidecar_env(&receiver, &[]));
    let go = pod.path("go");
    let go_arg = go.to_string_lossy().into_owned();
    pod.spawn(
        "client",
        &[
            "python3",
            &server("h2_split_writes.py"),
            &port.to_string(),
            "20",
            &go_arg,
        ],
        &[],
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !pod
        .log("sidecar.err")
        .lines()
        .any(|l| l.contains("instrumenting process") && l.contains("python"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the client was never instrumented"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&go, "").expect("go file");
    let deadline = std::time::Instant::now() + WAIT;
    while pod.log("client.out").lines().count() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "client: {}{}",
            pod.log("client.out"),
            pod.log("client.err")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pod.log("client.out").lines().all(|l| l == "200"));
    // Every request both ways: the HEADERS behind each split frame header were captured.
    wait_spans(&receiver, 40).await;
    // Nothing more arrives after the expected count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = span_list(&receiver);
    for kind in [SpanKind::Server, SpanKind::Client] {
        let of = of_kind(&spans, kind);
        assert_eq!(of.len(), 20, "{kind:?}: {of:#?}");
        assert!(
            of.iter()
                .all(|s| int_attr(s, "http.response.status_code") == Some(200)
                    && str_attr(s, "url.path").as_deref() == Some("/")),
            "{of:#?}"
        );
    }
}

in_both_modes!(
    nginx_h2c_under_h2load_one_span_per_request,
    curl_with_prior_knowledge_and_an_incoming_traceparent,
    an_upgrade_to_h2c_is_followed_into_http2,
    node_http2_server_and_client_in_the_pod,
    a_session_opened_before_the_sidecar_started_still_yields_spans,
    frame_headers_split_across_the_buffers_of_a_write_are_followed,
);
