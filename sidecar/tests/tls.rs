//! TLS plaintext end to end on a real kernel: nginx serving HTTPS (HTTP/1.1 and HTTP/2 by ALPN)
//! to curl and h2load, Python's ssl module as server and client, and the sidecar's TLS hooks
//! with exactly its four capabilities (`uprobe_multi` links) and as root with perf-event uprobes
//! forced; spans exported over OTLP to a real receiver. The certificates are made by the test
//! with the openssl CLI. Needs root; CI runs as root.

#![allow(
    clippy::expect_used,
    reason = "the helpers set up real peers: failing loudly with context is their job"
)]

#[path = "support/databases.rs"]
mod databases;
#[path = "support/otlp.rs"]
mod otlp;
#[path = "support/pod.rs"]
mod pod;
#[path = "support/sidecar.rs"]
mod sidecar;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use otlp::OtlpReceiver;
use pod::{Mode, Pod, child_of, free_ports, nginx_conf, pid_in_namespace, run, wait_for_port};
use sidecar::*;

fn server(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/servers")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

/// A self-signed certificate and its key for 127.0.0.1, under `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("cert dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key.to_string_lossy(),
        "-out",
        &cert.to_string_lossy(),
    ]);
    (cert, key)
}

/// Starts nginx serving HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on `port`.
fn start_nginx_https(pod: &mut Pod, name: &str, port: u16) {
    let dir = pod.path(name);
    let (cert, key) = certificate(&dir);
    let conf = nginx_conf(&dir, port);
    let text = std::fs::read_to_string(&conf).expect("nginx.conf");
    let text = text.replace(
        &format!("{port};"),
        &format!(
            "{port} ssl http2;\n        ssl_certificate {};\n        ssl_certificate_key {};",
            cert.display(),
            key.display()
        ),
    );
    std::fs::write(&conf, text).expect("nginx.conf");
    let conf_arg = conf.to_string_lossy().into_owned();
    pod.spawn(name, &["nginx", "-c", &conf_arg], &[]);
    wait_for_port(port, Duration::from_secs(10));
}

fn of_kind(spans: &[Span], kind: SpanKind) -> Vec<&Span> {
    spans.iter().filter(|s| s.kind == kind as i32).collect()
}

/// Spans as (name, status code) counts.
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

/// Waits until the sidecar logs that it hooked the TLS library of pod process `pid`.
fn wait_for_hooks(pod: &Pod, pid: u32) {
    pod.wait_for_log(
        "sidecar.err",
        &format!("TLS hooks attached pid={pid} "),
        WAIT,
    );
}

/// A curl in the pod that reads its URLs from a FIFO: it is running, its libssl mapped, before
/// it makes any request, so the test can wait for the sidecar to hook it first.
struct PendingCurl {
    fifo: PathBuf,
    pid: u32,
    log: String,
}

impl PendingCurl {
    fn start(pod: &mut Pod, name: &str, extra: &[&str]) -> Self {
        let fifo = pod.path(&format!("{name}.urls"));
        run(&["mkfifo", &fifo.to_string_lossy()]);
        let fifo_arg = fifo.to_string_lossy().into_owned();
        let mut argv = vec![
            "curl",
            "-sk",
            "-w",
            "%{http_code}\\n",
            "-K",
            fifo_arg.as_str(),
        ];
        argv.extend_from_slice(extra);
        let host_pid = pod.spawn(name, &argv, &[]);
        let deadline = Instant::now() + WAIT;
        let pid = loop {
            if let Some(child) = child_of(host_pid) {
                break pid_in_namespace(child);
            }
            assert!(Instant::now() < deadline, "curl never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        Self {
            fifo,
            pid,
            log: format!("{name}.out"),
        }
    }

    /// Hands over the URLs (each with its output discarded); curl then runs them in order.
    fn go(&self, urls: &[String]) {
        let mut config = String::new();
        for url in urls {
            config.push_str(&format!("url = \"{url}\"\noutput = \"/dev/null\"\n"));
        }
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.fifo)
            .expect("curl's FIFO");
        fifo.write_all(config.as_bytes()).expect("curl config");
    }
}

async fn nginx_https_and_curl_yield_server_and_client_spans(mode: Mode) {
    let pod = nginx_https_and_curl(mode, &[]).await;
    assert_eq!(
        log_lines(&pod, "TLS plaintext through uprobe_multi links"),
        1
    );
    // One entry link and one return link per library.
    assert!(hook_lines(&pod).iter().all(|l| l.contains(" links=2")));
}

/// Perf-event uprobes forced, as root (CAP_SYS_ADMIN in the effective set): the same spans.
async fn nginx_https_and_curl_traced_with_perf_event_uprobes(mode: Mode) {
    let pod = nginx_https_and_curl(mode, &[("OTEL_EBPF_TLS_UPROBES", "perf".to_owned())]).await;
    assert_eq!(
        log_lines(&pod, "TLS plaintext through perf-event uprobes"),
        1
    );
    assert_eq!(log_lines(&pod, "uprobe_multi"), 0);
    // One uprobe per function and kind: libssl.so.3 exports all seven, five get a return
    // probe. nginx's master and worker and curl each have theirs.
    let hooks = hook_lines(&pod);
    assert!(hooks.len() >= 2, "{hooks:#?}");
    assert!(hooks.iter().all(|l| l.contains(" links=12")), "{hooks:#?}");
}

/// Lines of the sidecar's log that contain `needle`.
fn log_lines(pod: &Pod, needle: &str) -> usize {
    pod.log("sidecar.err")
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// The sidecar's "TLS hooks attached" lines.
fn hook_lines(pod: &Pod) -> Vec<String> {
    pod.log("sidecar.err")
        .lines()
        .filter(|l| l.contains("TLS hooks attached"))
        .map(str::to_owned)
        .collect()
}

/// nginx HTTPS and a curl in the pod, with the sidecar given `extra` variables: three requests
/// over one keep-alive connection, each exactly one server and one client span. Returns the pod,
/// for its logs.
async fn nginx_https_and_curl(mode: Mode, extra: &[(&'static str, String)]) -> Pod {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    start_nginx_https(&mut pod, "nginx", port);
    // Every process of the pod: curl too.
    start_sidecar(&mut pod, &sidecar_env(&receiver, extra));
    let curl = PendingCurl::start(&mut pod, "curl", &["--http1.1"]);
    wait_for_hooks(&pod, curl.pid);
    let base = format!("https://127.0.0.1:{port}");
    curl.go(&[
        format!("{base}/status/200"),
        format!("{base}/status/404"),
        format!("{base}/status/200"),
    ]);
    pod.wait_for_log(&curl.log, "200", WAIT);
    let spans = wait_spans(&receiver, 6).await;
    let expected = BTreeMap::from([
        (("GET /status/*".to_owned(), 200), 2),
        (("GET /status/*".to_owned(), 404), 1),
    ]);
    let server = server_spans_on_port(&spans, port);
    assert_eq!(tally(&server), expected, "{server:#?}");
    let client = of_kind(&spans, SpanKind::Client);
    let client_names: BTreeMap<(String, i64), usize> = tally(&client)
        .into_iter()
        .map(|((_, code), n)| (("GET /status/*".to_owned(), code), n))
        .collect();
    assert_eq!(client_names, expected, "{client:#?}");
    for span in server.iter().chain(&client) {
        assert_eq!(str_attr(span, "url.scheme").as_deref(), Some("https"));
        assert_eq!(int_attr(span, "server.port"), Some(i64::from(port)));
        assert_eq!(
            str_attr(span, "network.protocol.version").as_deref(),
            Some("1.1")
        );
    }
    for span in &client {
        assert!(
            str_attr(span, "url.full").is_some_and(|u| u.starts_with(&format!("{base}/status/"))),
            "{span:?}"
        );
    }
    // Each client span is the parent-less peer of a server span: one per request, no more.
    assert_eq!(spans.len(), 6, "{spans:#?}");
    pod
}

async fn curl_over_https_with_an_incoming_traceparent_and_http2_by_alpn(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    start_nginx_https(&mut pod, "nginx", port);
    start_sidecar(
        &mut pod,
        &sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]),
    );
    for version in ["--http1.1", "--http2"] {
        let code = curl(&[
            "-k",
            version,
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            &format!("https://127.0.0.1:{port}/status/500"),
        ]);
        assert_eq!(code.trim(), "500");
    }
    let spans = wait_spans(&receiver, 2).await;
    let server = server_spans_on_port(&spans, port);
    assert_eq!(server.len(), 2, "{server:#?}");
    let mut versions: Vec<String> = server
        .iter()
        .map(|s| str_attr(s, "network.protocol.version").unwrap_or_default())
        .collect();
    versions.sort();
    assert_eq!(versions, ["1.1", "2"]);
    for span in server {
        assert_eq!(int_attr(span, "http.response.status_code"), Some(500));
        assert_eq!(str_attr(span, "url.scheme").as_deref(), Some("https"));
        assert_eq!(
            hex::encode(&span.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7");
    }
}

/// `h2load` against nginx over TLS: exactly one span per request.
async fn h2load_exact(
    mode: Mode,
    protocol: &[&str],
    requests: usize,
    connections: usize,
    streams: usize,
) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    start_nginx_https(&mut pod, "nginx", port);
    let env = sidecar_env(
        &receiver,
        &[
            ("OTEL_EBPF_OPEN_PORT", port.to_string()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16384".to_string()),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2048".to_string()),
            ("OTEL_EBPF_BPF_RINGBUF_SIZE", (16 << 20).to_string()),
        ],
    );
    start_sidecar(&mut pod, &env);
    let (n, c, m) = (
        requests.to_string(),
        connections.to_string(),
        streams.to_string(),
    );
    let url = format!("https://127.0.0.1:{port}/status/200");
    let mut argv = vec!["h2load", "-n", &n, "-c", &c, "-m", &m];
    argv.extend_from_slice(protocol);
    argv.push(&url);
    let out = run(&argv);
    assert!(
        out.contains(&format!("{requests} done, {requests} succeeded")),
        "{out}"
    );
    receiver
        .wait_for_spans(requests, Duration::from_secs(60))
        .await;
    // Nothing more arrives after the expected count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = span_list(&receiver);
    let server = server_spans_on_port(&spans, port);
    assert_eq!(
        tally(&server),
        BTreeMap::from([(("GET /status/*".to_owned(), 200), requests)])
    );
    assert!(
        server
            .iter()
            .all(|s| str_attr(s, "url.scheme").as_deref() == Some("https"))
    );
}

async fn ten_thousand_https_requests_over_fifty_keepalive_connections_none_lost(mode: Mode) {
    h2load_exact(mode, &["--h1"], 10_000, 50, 1).await;
}

async fn h2load_over_tls_with_alpn_h2_and_a_hundred_streams(mode: Mode) {
    h2load_exact(mode, &[], 10_000, 10, 100).await;
}

async fn python_ssl_server_and_client_calls_join_the_request_trace(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [nginx_port, app_port] = free_ports();
    start_nginx_https(&mut pod, "nginx", nginx_port);
    let (cert, key) = certificate(&pod.path("app"));
    pod.spawn(
        "app",
        &[
            "python3",
            &server("tls_app.py"),
            &app_port.to_string(),
            &cert.to_string_lossy(),
            &key.to_string_lossy(),
        ],
        &[],
    );
    wait_for_port(app_port, Duration::from_secs(10));
    start_sidecar(&mut pod, &sidecar_env(&receiver, &[]));
    let app_pid = pod
        .log("sidecar.err")
        .lines()
        .find(|l| l.contains("instrumenting process") && l.contains("python3"))
        .and_then(|l| {
            l.split("pid=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the app is instrumented");
    wait_for_hooks(&pod, app_pid);
    let code = curl(&[
        "-k",
        "--http1.1",
        &format!("https://127.0.0.1:{app_port}/call/{nginx_port}/status/404"),
    ]);
    assert_eq!(code.trim(), "404");
    // The app's server span, its client span to nginx, nginx's server span.
    let spans = wait_spans(&receiver, 3).await;
    let app_server = server_spans_on_port(&spans, app_port);
    let nginx_server = server_spans_on_port(&spans, nginx_port);
    let client = of_kind(&spans, SpanKind::Client);
    assert_eq!(
        (app_server.len(), nginx_server.len(), client.len()),
        (1, 1, 1),
        "{spans:#?}"
    );
    let (inbound, outbound, nginx) = (app_server[0], client[0], nginx_server[0]);
    assert_eq!(
        str_attr(inbound, "url.path").as_deref(),
        Some(format!("/call/{nginx_port}/status/404").as_str())
    );
    assert_eq!(
        str_attr(outbound, "url.full").as_deref(),
        Some(format!("https://127.0.0.1:{nginx_port}/status/404").as_str())
    );
    assert_eq!(int_attr(outbound, "http.response.status_code"), Some(404));
    // The client call made while serving joins the request's trace, as a child of its span
    // (the sidecar adds no header to the outgoing request: nginx's span starts a trace of its
    // own, as over cleartext).
    assert_eq!(outbound.trace_id, inbound.trace_id);
    assert_eq!(outbound.parent_span_id, inbound.span_id);
    assert_eq!(int_attr(nginx, "http.response.status_code"), Some(404));
    assert_eq!(str_attr(nginx, "url.scheme").as_deref(), Some("https"));
}

async fn a_process_started_after_the_sidecar_is_hooked_within_a_second(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    start_sidecar(
        &mut pod,
        &sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]),
    );
    let started = Instant::now();
    start_nginx_https(&mut pod, "nginx", port);
    // nginx's worker is selected by its port once it listens: hooked within a second of that.
    let deadline = started + Duration::from_secs(1) + Duration::from_millis(500);
    loop {
        let hooked = pod
            .log("sidecar.err")
            .lines()
            .filter(|l| l.contains("TLS hooks attached"))
            .count();
        if hooked >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", pod.log("sidecar.err"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let code = curl(&["-k", &format!("https://127.0.0.1:{port}/status/200")]);
    assert_eq!(code.trim(), "200");
    let spans = wait_spans(&receiver, 1).await;
    assert_eq!(server_spans_on_port(&spans, port).len(), 1, "{spans:#?}");
}

async fn a_decoy_pods_https_traffic_is_never_reported(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let mut decoy = Pod::with_mode(mode);
    let [port, decoy_port] = free_ports();
    start_nginx_https(&mut pod, "nginx", port);
    start_nginx_https(&mut decoy, "nginx", decoy_port);
    // Selecting both ports: only the sidecar's own pod is ever looked at.
    start_sidecar(
        &mut pod,
        &sidecar_env(
            &receiver,
            &[("OTEL_EBPF_OPEN_PORT", format!("{port},{decoy_port}"))],
        ),
    );
    for _ in 0..5 {
        let code = curl(&["-k", &format!("https://127.0.0.1:{decoy_port}/status/200")]);
        assert_eq!(code.trim(), "200");
    }
    let code = curl(&["-k", &format!("https://127.0.0.1:{port}/status/404")]);
    assert_eq!(code.trim(), "404");
    let spans = wait_spans(&receiver, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = if spans.len() > 1 {
        spans
    } else {
        span_list(&receiver)
    };
    assert!(
        server_spans_on_port(&spans, decoy_port).is_empty(),
        "{spans:#?}"
    );
    assert_eq!(spans.len(), 1, "{spans:#?}");
}

/// Capability numbers (linux/capability.h).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Starts the sidecar with `env` under `setpriv`: root's uid, but only the mode's capabilities,
/// in every set (so perf-event uprobes, which need CAP_SYS_ADMIN, are out of reach, and
/// uprobe_multi links are not), forced into the pod's mode; waits until it captures and checks
/// its effective set.
fn start_sidecar_with_the_modes_capabilities(pod: &mut Pod, env: &[(&'static str, String)]) {
    let mode = pod.mode;
    let mut env = env.to_vec();
    env.push(("OTEL_EBPF_CAPTURE_MODE", mode.as_env().to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bin = pod::sidecar_bin();
    let (names, caps) = match mode {
        Mode::Tracepoints => (
            "+bpf,+perfmon,+sys_ptrace,+dac_read_search",
            vec![CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_PERFMON, CAP_BPF],
        ),
        Mode::Pod => (
            "+bpf,+perfmon,+sys_ptrace,+dac_read_search,+net_admin",
            vec![
                CAP_DAC_READ_SEARCH,
                CAP_NET_ADMIN,
                CAP_SYS_PTRACE,
                CAP_PERFMON,
                CAP_BPF,
            ],
        ),
    };
    let inheritable = format!("--inh-caps=-all,{names}");
    let bounding = format!("--bounding-set=-all,{names}");
    let host_pid = pod.spawn("sidecar", &["setpriv", &inheritable, &bounding, &bin], &env);
    pod.wait_for_log("sidecar.err", "capturing", WAIT);
    // setpriv exec'd the sidecar: nsenter's child. Its effective set is the mode's, no more.
    let sidecar_pid = child_of(host_pid).expect("the sidecar runs");
    let status =
        std::fs::read_to_string(format!("/proc/{sidecar_pid}/status")).expect("sidecar status");
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapEff");
    let expected = caps.iter().fold(0u64, |mask, cap| mask | 1 << cap);
    assert_eq!(effective, expected, "{status}");
}

async fn tls_spans_with_exactly_the_capture_modes_capabilities(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    start_nginx_https(&mut pod, "nginx", port);
    start_sidecar_with_the_modes_capabilities(
        &mut pod,
        &sidecar_env(&receiver, &[("OTEL_EBPF_OPEN_PORT", port.to_string())]),
    );
    pod.wait_for_log("sidecar.err", "TLS hooks attached", WAIT);
    let code = curl(&["-k", &format!("https://127.0.0.1:{port}/status/200")]);
    assert_eq!(code.trim(), "200");
    let spans = wait_spans(&receiver, 1).await;
    let server = server_spans_on_port(&spans, port);
    assert_eq!(server.len(), 1, "{spans:#?}");
    assert_eq!(str_attr(server[0], "url.scheme").as_deref(), Some("https"));
}

/// Perf-event uprobes forced without CAP_SYS_ADMIN (the sidecar's own capability set): one log
/// line names the missing capability, TLS is not captured, cleartext still is.
async fn forced_perf_uprobes_without_cap_sys_admin_leave_tls_off_and_cleartext_on(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [tls_port, plain_port] = free_ports();
    start_nginx_https(&mut pod, "nginx", tls_port);
    pod.start_nginx("plain", plain_port);
    start_sidecar_with_the_modes_capabilities(
        &mut pod,
        &sidecar_env(
            &receiver,
            &[
                ("OTEL_EBPF_OPEN_PORT", format!("{tls_port},{plain_port}")),
                ("OTEL_EBPF_TLS_UPROBES", "perf".to_owned()),
            ],
        ),
    );
    let log = pod.log("sidecar.err");
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CAP_SYS_ADMIN"))
        .collect();
    assert_eq!(named.len(), 1, "{log}");
    assert!(
        named[0].contains(
            "TLS plaintext is not captured: OTEL_EBPF_TLS_UPROBES=perf: perf-event uprobes \
             need CAP_SYS_ADMIN"
        ),
        "{log}"
    );
    // The HTTPS requests first: spans of theirs, if any were made, would come before the
    // cleartext one's.
    for _ in 0..3 {
        let code = curl(&["-k", &format!("https://127.0.0.1:{tls_port}/status/200")]);
        assert_eq!(code.trim(), "200");
    }
    let code = curl(&[&format!("http://127.0.0.1:{plain_port}/status/404")]);
    assert_eq!(code.trim(), "404");
    let spans = wait_spans(&receiver, 1).await;
    // Nothing more arrives after the cleartext span.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = if spans.len() > 1 {
        spans
    } else {
        span_list(&receiver)
    };
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let plain = server_spans_on_port(&spans, plain_port);
    assert_eq!(plain.len(), 1, "{spans:#?}");
    assert_eq!(int_attr(plain[0], "http.response.status_code"), Some(404));
    assert_eq!(str_attr(plain[0], "url.scheme").as_deref(), Some("http"));
    let log = pod.log("sidecar.err");
    assert!(!log.contains("TLS hooks attached"), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.contains("CAP_SYS_ADMIN")).count(),
        1,
        "{log}"
    );
}

async fn node_https_and_http2_secure_server_and_clients(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let [port] = free_ports();
    let (cert, key) = certificate(&pod.path("node"));
    pod.spawn(
        "node",
        &[
            "node",
            &server("node_tls.js"),
            "serve",
            &port.to_string(),
            &cert.to_string_lossy(),
            &key.to_string_lossy(),
        ],
        &[],
    );
    wait_for_port(port, Duration::from_secs(10));
    start_sidecar(&mut pod, &sidecar_env(&receiver, &[]));
    let go = pod.path("go");
    let go_arg = go.to_string_lossy().into_owned();
    let host_pid = pod.spawn(
        "client",
        &[
            "node",
            &server("node_tls.js"),
            "get",
            &port.to_string(),
            &go_arg,
            "/a",
            "/missing",
        ],
        &[],
    );
    let deadline = Instant::now() + WAIT;
    let client_pid = loop {
        if let Some(child) = child_of(host_pid) {
            break pid_in_namespace(child);
        }
        assert!(Instant::now() < deadline, "the client never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    wait_for_hooks(&pod, client_pid);
    std::fs::write(&go, "").expect("go file");
    // Two statuses per protocol.
    let deadline = Instant::now() + WAIT;
    while pod.log("client.out").lines().count() < 4 {
        assert!(
            Instant::now() < deadline,
            "client: {} {}",
            pod.log("client.out"),
            pod.log("client.err")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spans = wait_spans(&receiver, 8).await;
    for kind in [SpanKind::Server, SpanKind::Client] {
        let mut seen: Vec<(String, i64, String)> = of_kind(&spans, kind)
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
        let want = |path: &str, code, version: &str| (path.to_owned(), code, version.to_owned());
        assert_eq!(
            seen,
            [
                want("/a", 200, "1.1"),
                want("/a", 200, "2"),
                want("/missing", 404, "1.1"),
                want("/missing", 404, "2"),
            ],
            "{kind:?}: {spans:#?}"
        );
        for span in of_kind(&spans, kind) {
            assert_eq!(str_attr(span, "url.scheme").as_deref(), Some("https"));
            assert_eq!(int_attr(span, "server.port"), Some(i64::from(port)));
        }
    }
}

/// PostgreSQL with `ssl=on`, psycopg with `sslmode=require` (its bundled libssl). The client is
/// hooked before it connects: its spans say the database. The server's backend is forked for the
/// connection and hooked by the next scan, after the handshake: its spans begin mid-stream.
async fn postgres_over_tls_client_and_server_spans(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let port = databases::start_tls_in_pod(&mut pod, "postgres");
    let env = sidecar_env(
        &receiver,
        &[
            (
                "OTEL_EBPF_AUTO_TARGET_EXE",
                "*/{postgres,python3*}".to_owned(),
            ),
            ("OTEL_EBPF_DB_INCLUDE_QUERY_TEXT", "true".to_owned()),
        ],
    );
    start_sidecar(&mut pod, &env);
    let dir = pod.dir.path().to_string_lossy().into_owned();
    let client = databases::py_client("pg-tls", port, &[&dir]);
    pod.spawn("client", &["bash", "-c", &client], &[]);
    let announced = |name: &str| -> u32 {
        databases::wait_for_path(&pod.path(name));
        std::fs::read_to_string(pod.path(name))
            .expect("announced pid")
            .trim()
            .parse()
            .expect("a pid")
    };
    let client_pid = announced("started");
    wait_for_hooks(&pod, client_pid);
    std::fs::write(pod.path("connect"), "").expect("connect file");
    let backend = announced("ready");
    wait_for_hooks(&pod, backend);
    std::fs::write(pod.path("go"), "").expect("go file");
    let tls_query = |s: &&Span| str_attr(s, "db.query.text").as_deref() == Some("SELECT ? AS tls");
    let of = |spans: &[Span], kind| -> usize {
        of_kind(spans, kind).iter().filter(|s| tls_query(s)).count()
    };
    let deadline = Instant::now() + WAIT;
    let mut spans = span_list(&receiver);
    while (of(&spans, SpanKind::Client) < 3 || of(&spans, SpanKind::Server) < 3)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        spans = span_list(&receiver);
    }
    // Nothing more arrives after the expected count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = span_list(&receiver);
    let client: Vec<&Span> = of_kind(&spans, SpanKind::Client)
        .into_iter()
        .filter(tls_query)
        .collect();
    let server: Vec<&Span> = of_kind(&spans, SpanKind::Server)
        .into_iter()
        .filter(tls_query)
        .collect();
    assert_eq!((client.len(), server.len()), (3, 3), "{spans:#?}");
    for span in client.iter().chain(&server) {
        assert_eq!(
            str_attr(span, "db.system.name").as_deref(),
            Some("postgresql")
        );
        assert_eq!(int_attr(span, "server.port"), Some(i64::from(port)));
    }
    // The client's startup was seen; the backend joined after it.
    for span in &client {
        assert_eq!(str_attr(span, "db.namespace").as_deref(), Some("shop"));
    }
    for span in &server {
        assert_eq!(str_attr(span, "db.namespace"), None);
    }
}

in_both_modes!(
    postgres_over_tls_client_and_server_spans,
    nginx_https_and_curl_yield_server_and_client_spans,
    nginx_https_and_curl_traced_with_perf_event_uprobes,
    curl_over_https_with_an_incoming_traceparent_and_http2_by_alpn,
    ten_thousand_https_requests_over_fifty_keepalive_connections_none_lost,
    h2load_over_tls_with_alpn_h2_and_a_hundred_streams,
    python_ssl_server_and_client_calls_join_the_request_trace,
    a_process_started_after_the_sidecar_is_hooked_within_a_second,
    a_decoy_pods_https_traffic_is_never_reported,
    tls_spans_with_exactly_the_capture_modes_capabilities,
    forced_perf_uprobes_without_cap_sys_admin_leave_tls_off_and_cleartext_on,
    node_https_and_http2_secure_server_and_clients,
);
