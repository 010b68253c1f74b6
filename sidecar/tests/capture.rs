//! The sidecar end to end on a real kernel: real servers (python http.server, nginx) and clients
//! (curl, h2load, wrk) in PID namespaces standing in for pods, spans exported over OTLP to a real
//! receiver that decodes protobuf. Needs root; CI runs as root.

#[path = "support/otlp.rs"]
mod otlp;
#[path = "support/pod.rs"]
mod pod;
#[path = "support/sidecar.rs"]
mod sidecar;

use std::{collections::HashSet, time::Duration};

use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use otlp::OtlpReceiver;
use pod::{Pod, free_port, free_ports, run};
use sidecar::*;

/// A pod running `app.py` on a fresh port and a sidecar selecting that port, with `extra` env.
fn app_pod(receiver: &OtlpReceiver, extra: &[(&'static str, String)]) -> (Pod, u16) {
    let mut pod = Pod::new();
    let port = free_port();
    pod.start_app("app", port);
    let mut env = vec![("OTEL_EBPF_OPEN_PORT", port.to_string())];
    env.extend(extra.iter().cloned());
    start_sidecar(&mut pod, &sidecar_env(receiver, &env));
    (pod, port)
}

/// A GET answered 200 on `port` arrives at the receiver as exactly one server span.
async fn one_request_makes_one_server_span(receiver: &OtlpReceiver, port: u16) {
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{port}/status/200")]).trim(),
        "200"
    );
    let spans = wait_spans(receiver, 1).await;
    assert_eq!(server_spans_on_port(&spans, port).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_methods_statuses_and_keep_alive() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let (_pod, port) = app_pod(
        &receiver,
        &[
            ("OTEL_EBPF_ROUTES_PATTERNS", "/users/{id}".to_string()),
            ("OTEL_SERVICE_NAME", "demo-app".to_string()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(curl(&[&format!("{base}/status/200")]).trim(), "200");
    assert_eq!(curl(&[&format!("{base}/status/404")]).trim(), "404");
    assert_eq!(curl(&[&format!("{base}/status/500")]).trim(), "500");
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "--data-binary",
            "hello sidecar",
            &format!("{base}/echo")
        ])
        .trim(),
        "200"
    );
    assert_eq!(curl(&["-I", &format!("{base}/status/200")]).trim(), "200");
    assert_eq!(curl(&[&format!("{base}/users/42?secret=1")]).trim(), "200");
    // Twenty requests on one keep-alive connection.
    let urls: Vec<String> = (0..20).map(|i| format!("{base}/users/{i}")).collect();
    let mut argv: Vec<&str> = vec!["curl", "-sS", "-o", "/dev/null", "--keepalive"];
    argv.extend(urls.iter().map(String::as_str));
    run(&argv);

    let all = receiver.wait_for_spans(26, WAIT).await;
    let spans: Vec<Span> = all.into_iter().map(|(_, s)| s).collect();
    let server = server_spans_on_port(&spans, port);
    assert_eq!(
        server.len(),
        26,
        "exactly one span per request: {server:#?}"
    );
    let find = |method: &str, path: &str| {
        server
            .iter()
            .find(|s| {
                str_attr(s, "http.request.method").as_deref() == Some(method)
                    && str_attr(s, "url.path").as_deref() == Some(path)
            })
            .unwrap_or_else(|| panic!("no {method} {path} span"))
    };
    for (method, path, status, error) in [
        ("GET", "/status/200", 200, false),
        ("GET", "/status/404", 404, false),
        ("GET", "/status/500", 500, true),
        ("POST", "/echo", 200, false),
        ("HEAD", "/status/200", 200, false),
        ("GET", "/users/42", 200, false),
    ] {
        let span = find(method, path);
        assert_eq!(
            int_attr(span, "http.response.status_code"),
            Some(status),
            "{method} {path}"
        );
        assert_eq!(
            str_attr(span, "network.protocol.version").as_deref(),
            Some("1.1")
        );
        let code = span.status.as_ref().map_or(0, |s| s.code);
        assert_eq!(
            code == StatusCode::Error as i32,
            error,
            "{method} {path} status {code}"
        );
        assert!(span.end_time_unix_nano > span.start_time_unix_nano);
        assert!(!span.trace_id.is_empty() && span.parent_span_id.is_empty());
    }
    let users = find("GET", "/users/42");
    assert_eq!(users.name, "GET /users/{id}");
    assert_eq!(
        str_attr(users, "http.route").as_deref(),
        Some("/users/{id}")
    );
    assert!(
        !server.iter().any(|s| s
            .attributes
            .iter()
            .any(|kv| format!("{:?}", kv.value).contains("secret"))),
        "query strings must not be exported"
    );
    let echo = find("POST", "/echo");
    assert_eq!(int_attr(echo, "http.request.body.size"), Some(13));
    assert_eq!(int_attr(echo, "http.response.body.size"), Some(13));
    // Spans start no earlier than a second before now: the monotonic clock was converted.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        server.iter().all(
            |s| s.start_time_unix_nano <= now && now - s.start_time_unix_nano < 120_000_000_000
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_ten_thousand_requests_over_fifty_connections_lose_nothing() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::new();
    let [port, metrics_port] = free_ports();
    pod.start_nginx("nginx", port);
    start_sidecar(
        &mut pod,
        &sidecar_env(
            &receiver,
            &[
                ("OTEL_EBPF_OPEN_PORT", port.to_string()),
                ("OTEL_EBPF_PROMETHEUS_PORT", metrics_port.to_string()),
                // h2load sends as fast as nginx answers: size the export queue for the burst.
                ("OTEL_BSP_MAX_QUEUE_SIZE", "16384".to_string()),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2048".to_string()),
                // And the ring buffer, so an unoptimised test build keeps up too.
                ("OTEL_EBPF_BPF_RINGBUF_SIZE", (16 << 20).to_string()),
            ],
        ),
    );
    let out = run(&[
        "h2load",
        "--h1",
        "-n",
        "10000",
        "-c",
        "50",
        "-t",
        "1",
        &format!("http://127.0.0.1:{port}/status/200"),
    ]);
    assert!(out.contains("10000 succeeded"), "h2load: {out}");
    let got = receiver
        .wait_for_spans(10000, Duration::from_secs(60))
        .await
        .len();
    // Wait a moment longer: anything beyond 10000 would be a duplicate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = span_list(&receiver);
    let server = server_spans_on_port(&spans, port);
    assert_eq!(
        server.len(),
        10000,
        "{got} spans arrived; the sidecar's counters:\n{}",
        run(&[
            "curl",
            "-sS",
            &format!("http://127.0.0.1:{metrics_port}/metrics")
        ])
        .lines()
        .filter(|l| l.starts_with("obi_"))
        .collect::<Vec<_>>()
        .join("\n")
    );
    assert!(
        server
            .iter()
            .all(|s| int_attr(s, "http.response.status_code") == Some(200))
    );
    let ids: HashSet<&[u8]> = server.iter().map(|s| s.span_id.as_slice()).collect();
    assert_eq!(ids.len(), 10000, "span ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoy_in_another_pid_namespace_yields_no_spans() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::new();
    let mut decoy = Pod::new();
    let [port, decoy_port] = free_ports();
    pod.start_app("app", port);
    decoy.start_nginx("decoy", decoy_port);
    // No selection criteria: every process of the pod is instrumented, and still nothing of the
    // other namespace may show up.
    start_sidecar(&mut pod, &sidecar_env(&receiver, &[]));
    let out = run(&[
        "wrk",
        "-t",
        "1",
        "-c",
        "4",
        "-d",
        "1s",
        &format!("http://127.0.0.1:{decoy_port}/"),
    ]);
    assert!(out.contains("requests in"), "wrk: {out}");
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{port}/status/200")]).trim(),
        "200"
    );
    let spans = wait_spans(&receiver, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans_now = span_list(&receiver);
    assert!(spans.len() <= spans_now.len());
    assert_eq!(server_spans_on_port(&spans_now, port).len(), 1);
    assert!(
        spans_now
            .iter()
            .all(|s| int_attr(s, "server.port") != Some(i64::from(decoy_port))),
        "the decoy's traffic leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_and_calls_made_while_serving_share_the_trace() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::new();
    let [app, backend] = free_ports();
    pod.start_app("app", app);
    pod.start_nginx("backend", backend);
    start_sidecar(
        &mut pod,
        &sidecar_env(
            &receiver,
            &[("OTEL_EBPF_OPEN_PORT", format!("{app},{backend}"))],
        ),
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let status = curl(&[
        "-H",
        &format!("traceparent: 00-{trace_id}-{parent}-01"),
        &format!("http://127.0.0.1:{app}/call/{backend}/status/404"),
    ]);
    assert_eq!(status.trim(), "404");
    // The app's server span, its client span, and nginx's server span.
    let spans = wait_spans(&receiver, 3).await;
    let app_server = server_spans_on_port(&spans, app);
    assert_eq!(app_server.len(), 1, "{spans:#?}");
    let app_server = app_server[0];
    assert_eq!(hex::encode(&app_server.trace_id), trace_id);
    assert_eq!(hex::encode(&app_server.parent_span_id), parent);
    let client: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(client.len(), 1, "{spans:#?}");
    let client = client[0];
    assert_eq!(
        client.trace_id, app_server.trace_id,
        "client call joins the trace"
    );
    assert_eq!(
        client.parent_span_id, app_server.span_id,
        "client call is a child of the server span"
    );
    assert_eq!(int_attr(client, "http.response.status_code"), Some(404));
    assert_eq!(
        client.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        str_attr(client, "url.full").as_deref(),
        Some(format!("http://127.0.0.1:{backend}/status/404").as_str())
    );
    assert_eq!(int_attr(client, "server.port"), Some(i64::from(backend)));
    assert_eq!(server_spans_on_port(&spans, backend).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_started_after_the_sidecar_is_instrumented_within_a_second() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::new();
    let port = free_port();
    start_sidecar(
        &mut pod,
        &sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]),
    );
    pod.start_app("late", port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    one_request_makes_one_server_span(&receiver, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_its_declared_capabilities_and_fails_clearly_with_fewer() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let sidecar = &pod::sidecar_bin();
    let port = free_port();
    let env = sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Too few: without CAP_BPF loading must fail, saying what is missing.
    let mut pod = Pod::new();
    pod.spawn(
        "weak",
        &[
            "setpriv",
            "--bounding-set=-all,+perfmon,+sys_ptrace,+dac_read_search",
            "--",
            sidecar,
        ],
        &env_ref,
    );
    pod.wait_for_log("weak.err", "CAP_BPF", WAIT);

    // The declared set: BPF, PERFMON, SYS_PTRACE, DAC_READ_SEARCH.
    pod.start_nginx("nginx", port);
    let nsenter = pod.spawn(
        "sidecar",
        &[
            "setpriv",
            "--bounding-set=-all,+bpf,+perfmon,+sys_ptrace,+dac_read_search",
            "--",
            sidecar,
        ],
        &env_ref,
    );
    // The preferred hooks (socket tracepoints, BTF) need nothing beyond these either.
    pod.wait_for_log(
        "sidecar.err",
        "capturing with the BTF tracepoints sock_recv_length",
        WAIT,
    );
    // DAC_READ_SEARCH (2), SYS_PTRACE (19), PERFMON (38), BPF (39) and nothing else.
    let pid = pod::child_of(nsenter).expect("the sidecar process");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("CapEff:\t000000c000080004"), "{status}");
    one_request_makes_one_server_span(&receiver, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_then_up() {
    let mut receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let (_pod, port) = app_pod(
        &receiver,
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "500".to_string())],
    );
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{port}/users/1")]).trim(),
        "200"
    );
    receiver.wait_for_spans(1, WAIT).await;
    receiver.stop().await;
    for i in 0..5 {
        assert_eq!(
            curl(&[&format!("http://127.0.0.1:{port}/users/down{i}")]).trim(),
            "200"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.restart().await.expect("restart the receiver");
    for i in 0..5 {
        assert_eq!(
            curl(&[&format!("http://127.0.0.1:{port}/users/up{i}")]).trim(),
            "200"
        );
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let spans = span_list(&receiver);
        let up = spans
            .iter()
            .filter(|s| str_attr(s, "url.path").is_some_and(|p| p.contains("/up")))
            .count();
        if up == 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "export did not resume: {up} of 5 spans"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
