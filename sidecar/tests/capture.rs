//! The sidecar end to end on a real kernel: real servers (python http.server, nginx) and clients
//! (curl, h2load, wrk) in PID namespaces standing in for pods, spans exported over OTLP to a real
//! receiver that decodes protobuf. Each test runs in both capture modes (`tracepoints::` and
//! `pod_scoped::`, see [`in_both_modes`]), in realistic pods in the pod-scoped one. Needs root; CI
//! runs as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests (run through in_both_modes, so outside #[test] functions): failing loudly is \
              their job"
)]

#[path = "support/otlp.rs"]
mod otlp;
#[path = "support/pod.rs"]
mod pod;
#[path = "support/sidecar.rs"]
mod sidecar;

use std::{collections::HashSet, time::Duration};

use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use otlp::OtlpReceiver;
use pod::{Mode, Pod, free_port, free_ports, run};
use sidecar::*;

/// A pod running `app.py` on a fresh port and a sidecar selecting that port, with `extra` env.
fn app_pod(mode: Mode, receiver: &OtlpReceiver, extra: &[(&'static str, String)]) -> (Pod, u16) {
    let mut pod = Pod::with_mode(mode);
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

/// A keep-alive connection the app accepted before the sidecar started, used again the moment
/// the sidecar captures: its requests are joined mid-stream, with the socket's own port.
async fn keepalive_connection_opened_before_the_sidecar_is_joined_at_once(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let port = free_port();
    pod.start_app("app", port);
    let script = pod.path("held_client.py");
    std::fs::write(
        &script,
        r#"import http.client, os, sys, time
directory, port = sys.argv[1], int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
conn.request("GET", "/status/200")
conn.getresponse().read()
open(os.path.join(directory, "ready"), "w").close()
while not os.path.exists(os.path.join(directory, "go")):
    time.sleep(0.001)
for code in (201, 202, 203):
    conn.request("GET", f"/status/{code}")
    response = conn.getresponse()
    response.read()
    print(response.status, flush=True)
"#,
    )
    .unwrap();
    let dir = pod.dir.path().to_string_lossy().into_owned();
    let (script, port_arg) = (script.to_string_lossy().into_owned(), port.to_string());
    pod.spawn("client", &["python3", &script, &dir, &port_arg], &[]);
    let ready = pod.path("ready");
    let deadline = std::time::Instant::now() + WAIT;
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            pod.log("client.err")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every process of the pod: the client's end of the connection too.
    start_sidecar(&mut pod, &sidecar_env(&receiver, &[]));
    std::fs::write(pod.path("go"), "").unwrap();
    pod.wait_for_log("client.out", "203", WAIT);
    wait_spans(&receiver, 6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = span_list(&receiver);
    let codes = |spans: Vec<&Span>| {
        let mut codes: Vec<i64> = spans
            .iter()
            .filter_map(|s| int_attr(s, "http.response.status_code"))
            .collect();
        codes.sort_unstable();
        codes
    };
    assert_eq!(
        codes(server_spans_on_port(&spans, port)),
        [201, 202, 203],
        "{spans:#?}"
    );
    let client: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert!(
        client
            .iter()
            .all(|s| int_attr(s, "server.port") == Some(i64::from(port))),
        "{client:#?}"
    );
    assert_eq!(codes(client), [201, 202, 203], "{spans:#?}");
    assert_eq!(spans.len(), 6, "{spans:#?}");
}

async fn python_server_methods_statuses_and_keep_alive(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let (_pod, port) = app_pod(
        mode,
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

async fn nginx_ten_thousand_requests_over_fifty_connections_lose_nothing(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
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

async fn decoy_pod_with_its_own_sidecar_neither_reports_the_others_traffic(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let decoy_receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let mut decoy = Pod::with_mode(mode);
    let [port, decoy_port] = free_ports();
    pod.start_app("app", port);
    decoy.start_nginx("decoy", decoy_port);
    // No selection criteria: every process of each pod is instrumented, and still nothing of the
    // other pod may show up.
    start_sidecar(&mut pod, &sidecar_env(&receiver, &[]));
    start_sidecar(&mut decoy, &sidecar_env(&decoy_receiver, &[]));
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
    wait_spans(&receiver, 1).await;
    let decoy_spans = wait_spans(&decoy_receiver, 1).await;
    assert!(!server_spans_on_port(&decoy_spans, decoy_port).is_empty());
    // A moment longer for anything that should not come.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = span_list(&receiver);
    assert_eq!(server_spans_on_port(&spans, port).len(), 1, "{spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| int_attr(s, "server.port") != Some(i64::from(decoy_port))),
        "the decoy's traffic leaked"
    );
    assert!(
        span_list(&decoy_receiver)
            .iter()
            .all(|s| int_attr(s, "server.port") != Some(i64::from(port))),
        "the app pod's traffic leaked into the decoy's sidecar"
    );
}

async fn traceparent_and_calls_made_while_serving_share_the_trace(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
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

async fn process_started_after_the_sidecar_is_instrumented_within_a_second(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let port = free_port();
    start_sidecar(
        &mut pod,
        &sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]),
    );
    pod.start_app("late", port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    one_request_makes_one_server_span(&receiver, port).await;
}

async fn runs_with_its_declared_capabilities_and_fails_clearly_with_fewer(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let sidecar = &pod::sidecar_bin();
    let port = free_port();
    let mut env = sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]);
    env.push(("OTEL_EBPF_CAPTURE_MODE", mode.as_env().to_string()));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Each mode's own set: the tracepoints need BPF, PERFMON, SYS_PTRACE, DAC_READ_SEARCH; the
    // pod-scoped hooks NET_ADMIN too. As CapEff: DAC_READ_SEARCH (2), NET_ADMIN (12),
    // SYS_PTRACE (19), PERFMON (38), BPF (39).
    let (caps, cap_eff, capturing, missing) = match mode {
        Mode::Tracepoints => (
            "+bpf,+perfmon,+sys_ptrace,+dac_read_search",
            "000000c000080004",
            "capturing with the BTF tracepoints sock_recv_length",
            // A load error: exit code 1.
            ("-bpf", "CAP_BPF", 1),
        ),
        Mode::Pod => (
            "+bpf,+perfmon,+sys_ptrace,+dac_read_search,+net_admin",
            "000000c000081004",
            "capturing with the pod-scoped hooks",
            // The forced mode impossible: exit code 2.
            ("-net_admin", "CAP_NET_ADMIN", 2),
        ),
    };
    let mut pod = Pod::with_mode(mode);
    pod.start_nginx("nginx", port);

    // One capability fewer: the forced mode cannot run, and says what is missing.
    let weak_caps = format!("--bounding-set=-all,{caps},{}", missing.0);
    let weak = pod.spawn("weak", &["setpriv", &weak_caps, "--", sidecar], &env_ref);
    pod.wait_for_log("weak.err", missing.1, WAIT);
    assert_eq!(wait_exit(weak), Some(missing.2), "{}", pod.log("weak.err"));

    let bounding = format!("--bounding-set=-all,{caps}");
    let nsenter = pod.spawn("sidecar", &["setpriv", &bounding, "--", sidecar], &env_ref);
    pod.wait_for_log("sidecar.err", capturing, WAIT);
    let pid = pod::child_of(nsenter).expect("the sidecar process");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains(&format!("CapEff:\t{cap_eff}")), "{status}");
    one_request_makes_one_server_span(&receiver, port).await;
}

/// The exit code of a process this test started through `nsenter` (which exits as its child
/// does), waiting up to [`WAIT`].
fn wait_exit(nsenter: u32) -> Option<i32> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a child of this process, with a status we own.
        let rc = unsafe { libc::waitpid(nsenter as i32, &mut status, libc::WNOHANG) };
        if rc == nsenter as i32 {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if rc < 0 || std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn collector_down_then_up(mode: Mode) {
    let mut receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let (_pod, port) = app_pod(
        mode,
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

in_both_modes!(
    keepalive_connection_opened_before_the_sidecar_is_joined_at_once,
    python_server_methods_statuses_and_keep_alive,
    nginx_ten_thousand_requests_over_fifty_connections_lose_nothing,
    decoy_pod_with_its_own_sidecar_neither_reports_the_others_traffic,
    traceparent_and_calls_made_while_serving_share_the_trace,
    process_started_after_the_sidecar_is_instrumented_within_a_second,
    runs_with_its_declared_capabilities_and_fails_clearly_with_fewer,
    collector_down_then_up,
);

/// Lines of a pod's log file containing `needle`.
fn log_lines(pod: &Pod, name: &str, needle: &str) -> usize {
    pod.log(name).lines().filter(|l| l.contains(needle)).count()
}

/// Waits until `name` has logged `needle` `count` times, returning how long that took.
fn wait_log_count(pod: &Pod, name: &str, needle: &str, count: usize) -> Duration {
    let start = std::time::Instant::now();
    while log_lines(pod, name, needle) < count {
        assert!(
            start.elapsed() < WAIT,
            "{name} logged {needle:?} fewer than {count} times:\n{}",
            pod.log(name)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

const ATTACHED: &str = "attached the pod-scoped hooks to a container";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_scoped_restarted_container_is_captured_within_a_second() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(Mode::Pod);
    let port = free_port();
    let app = pod.container("app");
    pod.start_app_in(&app, "app", port);
    start_sidecar(
        &mut pod,
        &sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]),
    );
    one_request_makes_one_server_span(&receiver, port).await;
    let attached = log_lines(&pod, "sidecar.err", ATTACHED);

    // A restart: the container's processes die, its cgroup goes, a new one comes.
    let app = pod.restart(&app);
    pod.wait_for_log("sidecar.err", "detached a container", WAIT);
    pod.start_app_in(&app, "app-restarted", port);
    let took = wait_log_count(&pod, "sidecar.err", ATTACHED, attached + 1);
    assert!(took < Duration::from_secs(1), "attached after {took:?}");
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{port}/users/again")]).trim(),
        "200"
    );
    let spans = wait_spans(&receiver, 2).await;
    assert_eq!(server_spans_on_port(&spans, port).len(), 2, "{spans:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_scoped_container_that_cannot_be_attached_falls_back_to_the_tracepoints() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(Mode::Pod);
    let [port, late_port] = free_ports();
    pod.start_app("app", port);
    start_sidecar(
        &mut pod,
        &sidecar_env(
            &receiver,
            &[("OTEL_EBPF_OPEN_PORT", format!("{port},{late_port}"))],
        ),
    );
    // Added later, on a node path where its cgroup v2 cannot be reached.
    let late = pod.container_without_cgroup2("late");
    pod.start_app_in(&late, "late", late_port);
    pod.wait_for_log("sidecar.err", "no cgroup v2 at", WAIT);
    pod.wait_for_log("sidecar.err", "falling back to the BTF tracepoints", WAIT);
    for port in [port, late_port] {
        assert_eq!(
            curl(&[&format!("http://127.0.0.1:{port}/status/200")]).trim(),
            "200"
        );
    }
    let spans = wait_spans(&receiver, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = [spans, span_list(&receiver)].concat();
    for port in [port, late_port] {
        let ids: HashSet<&[u8]> = server_spans_on_port(&spans, port)
            .iter()
            .map(|s| s.span_id.as_slice())
            .collect();
        assert_eq!(ids.len(), 1, "one span on {port}: {spans:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_net_admin_falls_back_to_the_tracepoints_and_says_why() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(Mode::Pod);
    let port = free_port();
    pod.start_nginx("nginx", port);
    let mut env = sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]);
    env.push(("OTEL_EBPF_CAPTURE_MODE", "auto".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sidecar = pod::sidecar_bin();
    pod.spawn(
        "sidecar",
        &[
            "setpriv",
            "--bounding-set=-all,+bpf,+perfmon,+sys_ptrace,+dac_read_search",
            "--",
            &sidecar,
        ],
        &env,
    );
    pod.wait_for_log("sidecar.err", "capturing with the BTF tracepoints", WAIT);
    let log = pod.log("sidecar.err");
    assert!(
        log.contains("pod-scoped capture unavailable") && log.contains("CAP_NET_ADMIN"),
        "{log}"
    );
    one_request_makes_one_server_span(&receiver, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_cgroup_v2_falls_back_to_the_tracepoints_and_says_why() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(Mode::Pod);
    let port = free_port();
    let app = pod.container_without_cgroup2("app");
    pod.start_app_in(&app, "app", port);
    let mut env = sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]);
    env.push(("OTEL_EBPF_CAPTURE_MODE", "auto".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sidecar_container = pod.container_without_cgroup2("sidecar");
    pod.spawn_in(&sidecar_container, "sidecar", &[&pod::sidecar_bin()], &env);
    pod.wait_for_log("sidecar.err", "capturing with the BTF tracepoints", WAIT);
    let log = pod.log("sidecar.err");
    assert!(
        log.contains("pod-scoped capture unavailable") && log.contains("no cgroup v2 at"),
        "{log}"
    );
    one_request_makes_one_server_span(&receiver, port).await;
}
