//! The webhook server over real TLS: certificates generated here with rcgen, real HTTP/1.1 and
//! HTTP/2 clients, certificate rotation through a Secret-volume style symlink swap, limits,
//! timeouts, and the binary's startup errors and graceful shutdown.

// Test code: helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use obi_webhook::{Config, Server};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::{StatusCode, Version};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const SAMPLE_UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
}

fn pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("obi-webhook {name}"));
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
    }
}

/// A directory laid out like a Kubernetes Secret volume: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<generation>`, updated by atomically renaming a new `..data` symlink.
struct SecretVolume {
    dir: tempfile::TempDir,
    generation: usize,
}

impl SecretVolume {
    fn new(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let volume = Self { dir, generation: 0 };
        volume.write_generation(0, &pki.cert_pem, &pki.key_pem);
        std::os::unix::fs::symlink("..gen-0", volume.path("..data")).unwrap();
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), volume.path(file)).unwrap();
        }
        volume
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_generation(&self, generation: usize, cert: &str, key: &str) {
        let dir = self.path(&format!("..gen-{generation}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
    }

    /// The kubelet's atomic update: new directory, new symlink, rename over `..data`, clean up.
    fn rotate(&mut self, cert: &str, key: &str) {
        let old = self.generation;
        self.generation += 1;
        self.write_generation(self.generation, cert, key);
        std::os::unix::fs::symlink(
            format!("..gen-{}", self.generation),
            self.path("..data_tmp"),
        )
        .unwrap();
        std::fs::rename(self.path("..data_tmp"), self.path("..data")).unwrap();
        std::fs::remove_dir_all(self.path(&format!("..gen-{old}"))).unwrap();
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "OBI_WEBHOOK_TLS_CERT_FILE".to_owned(),
                self.path("tls.crt").display().to_string(),
            ),
            (
                "OBI_WEBHOOK_TLS_KEY_FILE".to_owned(),
                self.path("tls.key").display().to_string(),
            ),
        ]
    }
}

/// An in-process server on ephemeral loopback ports.
struct Running {
    tls: SocketAddr,
    health: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<obi_webhook::Result<()>>,
}

async fn start(volume: &SecretVolume, extra: &[(&str, &str)]) -> Running {
    let mut vars = volume.env();
    for (name, value) in [
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("HEALTH_ADDR", "127.0.0.1:0"),
        ("CERT_RELOAD_INTERVAL_MS", "100"),
        ("OTLP_ENDPOINT", "http://otel-collector.observability:4318"),
    ]
    .iter()
    .chain(extra)
    {
        vars.push((format!("OBI_WEBHOOK_{name}"), (*value).to_owned()));
    }
    let server = Server::bind(Config::from_vars(vars).unwrap())
        .await
        .unwrap();
    let (tls, health) = (server.tls_addr().unwrap(), server.health_addr().unwrap());
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        tls,
        health,
        stop,
        task,
    }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls.port())
    }

    fn health_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.health)
    }

    async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Http {
    One,
    Two,
}

fn client(cas: &[&str], http: Http) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    for ca in cas {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    if http == Http::One {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn sample() -> Vec<u8> {
    std::fs::read(support::testdata("admission-review.json")).unwrap()
}

async fn metrics(running: &Running) -> String {
    reqwest::get(running.health_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|line| line.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_admission_reviews_over_http1_and_http2() {
    let pki = pki("main");
    let volume = SecretVolume::new(&pki);
    let running = start(&volume, &[]).await;

    for (http, version) in [(Http::One, Version::HTTP_11), (Http::Two, Version::HTTP_2)] {
        let response = client(&[&pki.ca_pem], http)
            .post(running.url("/mutate"))
            .header("content-type", "application/json")
            .body(sample())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version);
        if http == Http::One {
            // One request per HTTP/1.1 connection (see server::http_builder).
            assert_eq!(response.headers()["connection"], "close");
        }
        assert_eq!(response.headers()["content-type"], "application/json");
        let answer = support::decode(&response.bytes().await.unwrap());
        assert_eq!(answer.uid, SAMPLE_UID);
        assert!(answer.allowed);
        assert_eq!(answer.patch.len(), 3, "{:?}", answer.patch);
    }

    let health = reqwest::get(running.health_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = reqwest::get(running.health_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let text = metrics(&running).await;
    assert_eq!(
        metric_line(
            &text,
            r#"obi_webhook_admission_requests_total{operation="CREATE",result="patched"}"#
        ),
        Some(r#"obi_webhook_admission_requests_total{operation="CREATE",result="patched"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"obi_webhook_injections_total{action="injected"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("obi_webhook_admission_duration_seconds_count 2"),
        "{text}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_wrong_content_and_oversized_bodies() {
    let pki = pki("main");
    let volume = SecretVolume::new(&pki);
    let running = start(&volume, &[]).await;

    for http in [Http::One, Http::Two] {
        let client = client(&[&pki.ca_pem], http);
        let garbage = client
            .post(running.url("/mutate"))
            .body("{\"kind\": 42}")
            .send()
            .await
            .unwrap();
        assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
        let message = garbage.text().await.unwrap();
        assert!(
            message.starts_with("request body is not an admission.k8s.io/v1 AdmissionReview"),
            "{message}"
        );

        let get = client.get(running.url("/mutate")).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
        let unknown = client
            .post(running.url("/validate"))
            .body(sample())
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

        let oversized = vec![b' '; obi_webhook::server::MAX_BODY_BYTES + 1];
        let too_large = client
            .post(running.url("/mutate"))
            .body(oversized)
            .send()
            .await
            .unwrap();
        assert_eq!(
            too_large.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{http:?}"
        );

        // Exactly at the limit is read (and then rejected for not being a review).
        let mut at_limit = sample();
        at_limit.resize(obi_webhook::server::MAX_BODY_BYTES, b' ');
        let accepted = client
            .post(running.url("/mutate"))
            .body(at_limit)
            .send()
            .await
            .unwrap();
        assert_eq!(
            accepted.status(),
            StatusCode::OK,
            "{http:?}: whitespace after the review is valid JSON"
        );
    }
    let text = metrics(&running).await;
    assert!(
        text.contains(r#"obi_webhook_errors_total{kind="invalid_review"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"obi_webhook_errors_total{kind="body"} 2"#),
        "{text}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_the_certificate_without_dropping_requests() {
    let old = pki("old");
    let new = pki("new");
    let mut volume = SecretVolume::new(&old);
    let running = start(&volume, &[]).await;
    let url = running.url("/mutate");

    // A client that keeps sending over its connections for the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sender = {
        let (client, url, stop, sent, failed) = (
            client(&[&old.ca_pem, &new.ca_pem], Http::Two),
            url.clone(),
            stop.clone(),
            sent.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.post(&url).body(sample()).send().await {
                    Ok(response) if response.status() == StatusCode::OK => {
                        sent.fetch_add(1, Ordering::SeqCst)
                    }
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    let peer_certificate = || async {
        // No pooling: every request is a new connection and a new handshake.
        let fresh = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(old.ca_pem.as_bytes()).unwrap())
            .add_root_certificate(reqwest::Certificate::from_pem(new.ca_pem.as_bytes()).unwrap())
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let response = fresh
            .post(running.url("/mutate"))
            .body(sample())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .unwrap()
            .peer_certificate()
            .unwrap()
            .to_vec()
    };
    assert_eq!(peer_certificate().await, old.cert_der);
    tokio::time::sleep(Duration::from_millis(300)).await;

    volume.rotate(&new.cert_pem, &new.key_pem);
    let rotated_at = Instant::now();
    while peer_certificate().await != new.cert_der {
        assert!(
            rotated_at.elapsed() < Duration::from_secs(5),
            "new certificate not served after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let only_new = client(&[&new.ca_pem], Http::One)
        .post(&url)
        .body(sample())
        .send()
        .await
        .unwrap();
    assert_eq!(only_new.status(), StatusCode::OK);

    // A broken update (key of another pair) is refused; the current certificate stays.
    volume.rotate(&old.cert_pem, &new.key_pem);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(peer_certificate().await, new.cert_der);

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(
        sent.load(Ordering::SeqCst) > 10,
        "too few requests during rotation"
    );
    let text = metrics(&running).await;
    assert!(
        text.contains(r#"obi_webhook_cert_reloads_total{result="success"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"obi_webhook_cert_reloads_total{result="failure"} 1"#),
        "{text}"
    );
    running.shutdown().await;
}

type Versions = &'static [&'static rustls::SupportedProtocolVersion];
const TLS13: Versions = &[&rustls::version::TLS13];
const TLS12: Versions = &[&rustls::version::TLS12];

fn tls_connector(ca_pem: &str, versions: Versions, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_tls_versions_and_alpn() {
    let pki = pki("main");
    let volume = SecretVolume::new(&pki);
    let running = start(&volume, &[]).await;
    struct Case {
        versions: Versions,
        offered: &'static [&'static [u8]],
        chosen: Option<&'static [u8]>,
    }
    let cases = [
        Case {
            versions: TLS13,
            offered: &[b"h2", b"http/1.1"],
            chosen: Some(b"h2"),
        },
        Case {
            versions: TLS12,
            offered: &[b"h2"],
            chosen: Some(b"h2"),
        },
        Case {
            versions: TLS12,
            offered: &[b"http/1.1"],
            chosen: Some(b"http/1.1"),
        },
        Case {
            versions: TLS13,
            offered: &[],
            chosen: None,
        },
    ];
    for case in cases {
        let connector = tls_connector(&pki.ca_pem, case.versions, case.offered);
        let stream = tls_connect(running.tls, &connector).await.unwrap();
        let (_, session) = stream.get_ref();
        assert_eq!(session.protocol_version(), Some(case.versions[0].version));
        assert_eq!(session.alpn_protocol(), case.chosen);
    }
    let unknown_alpn = tls_connect(
        running.tls,
        &tls_connector(&pki.ca_pem, TLS13, &[b"spdy/3"]),
    )
    .await;
    assert!(
        unknown_alpn.is_err(),
        "an unsupported ALPN protocol must fail the handshake"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let pki = pki("main");
    let volume = SecretVolume::new(&pki);
    let running = start(
        &volume,
        &[
            ("HEADER_READ_TIMEOUT_MS", "300"),
            ("REQUEST_TIMEOUT_MS", "500"),
        ],
    )
    .await;

    // No TLS handshake at all.
    let started = Instant::now();
    let mut silent = TcpStream::connect(running.tls).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buffer))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // Headers that never finish.
    let connector = tls_connector(&pki.ca_pem, TLS13, &[b"http/1.1"]);
    let mut stream = tls_connect(running.tls, &connector).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut response))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert!(
        read.is_err() || !String::from_utf8_lossy(&response).contains("200 OK"),
        "{response:?}"
    );

    // A body that stops arriving: 408 once the request timeout expires.
    let mut stream = tls_connect(running.tls, &connector).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The binary.

/// `N` distinct free loopback ports, all held while choosing (a released port can be handed out
/// again at once).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [StdListener; N] =
        std::array::from_fn(|_| StdListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
    listeners.map(|l| l.local_addr().unwrap().port())
}

fn binary(env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_obi-webhook"));
    command
        .env_clear()
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn fails_with(env: &[(String, String)], code: i32, message: &str) {
    let output = binary(env).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in:\n{stderr}"
    );
}

fn var(name: &str, value: &str) -> (String, String) {
    (format!("OBI_WEBHOOK_{name}"), value.to_owned())
}

#[test]
fn binary_refuses_bad_configuration_and_certificates() {
    fails_with(
        &[var("LISTEN_ADDR", "8443")],
        2,
        "OBI_WEBHOOK_LISTEN_ADDR: \"8443\"",
    );
    fails_with(
        &[var("SIDECAR_MEMORY_LIMIT", "lots")],
        2,
        "OBI_WEBHOOK_SIDECAR_MEMORY_LIMIT",
    );

    let local = [
        var("LISTEN_ADDR", "127.0.0.1:0"),
        var("HEALTH_ADDR", "127.0.0.1:0"),
    ];
    let missing = [&local[..], &[var("TLS_CERT_FILE", "/nonexistent/tls.crt")]].concat();
    fails_with(&missing, 1, "cannot read /nonexistent/tls.crt");

    let (a, b) = (pki("a"), pki("b"));
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cert = write("tls.crt", &a.cert_pem);
    let other_key = write("other.key", &b.key_pem);
    let mismatched = [
        &local[..],
        &[var("TLS_CERT_FILE", &cert), var("TLS_KEY_FILE", &other_key)],
    ]
    .concat();
    fails_with(&mismatched, 1, "do not form a usable pair");
    let garbage = write("garbage.crt", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    let invalid = [
        &local[..],
        &[
            var("TLS_CERT_FILE", &garbage),
            var("TLS_KEY_FILE", &other_key),
        ],
    ]
    .concat();
    fails_with(&invalid, 1, "invalid TLS material");
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(url: &str) {
    let started = Instant::now();
    loop {
        if let Ok(response) = reqwest::get(url).await
            && response.status() == StatusCode::OK
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "webhook not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_finishes_in_flight_requests_on_sigterm() {
    let pki = pki("main");
    let volume = SecretVolume::new(&pki);
    let [tls_port, health_port] = free_ports();
    let mut env = volume.env();
    env.push(var("LISTEN_ADDR", &format!("127.0.0.1:{tls_port}")));
    env.push(var("HEALTH_ADDR", &format!("127.0.0.1:{health_port}")));
    env.push(var("LOG_FORMAT", "json"));
    let mut process = Process(binary(&env).spawn().unwrap());
    let health = format!("http://127.0.0.1:{health_port}");
    wait_ready(&format!("{health}/readyz")).await;

    // A request whose body is still arriving when SIGTERM comes.
    let body = sample();
    let (head, tail) = body.split_at(body.len() / 2);
    let connector = tls_connector(&pki.ca_pem, TLS13, &[b"http/1.1"]);
    let tls_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port));
    let mut stream = tls_connect(tls_addr, &connector).await.unwrap();
    let headers = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(headers.as_bytes()).await.unwrap();
    stream.write_all(head).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    signal(&process.0, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let readiness = reqwest::get(format!("{health}/readyz")).await.unwrap();
    assert_eq!(
        readiness.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while draining"
    );
    assert!(
        TcpStream::connect(tls_addr).await.is_err(),
        "no new connections while draining"
    );

    stream.write_all(tail).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains(SAMPLE_UID), "{response}");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "webhook did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(process.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    for line in stderr.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["level"].is_string() && entry["message"].is_string(),
            "{line}"
        );
    }
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("deployment patched"), "{stderr}");
}

#[test]
fn secret_volume_layout_is_what_the_kubelet_produces() {
    let pki = pki("layout");
    let mut volume = SecretVolume::new(&pki);
    let read = |volume: &SecretVolume| std::fs::read_to_string(volume.path("tls.crt")).unwrap();
    assert_eq!(read(&volume), pki.cert_pem);
    assert_eq!(
        std::fs::read_link(volume.path("tls.crt")).unwrap(),
        Path::new("..data/tls.crt")
    );
    let next = self::pki("next");
    volume.rotate(&next.cert_pem, &next.key_pem);
    assert_eq!(read(&volume), next.cert_pem);
    assert_eq!(
        std::fs::read_link(volume.path("..data")).unwrap(),
        Path::new("..gen-1")
    );
    assert!(!volume.path("..gen-0").exists());
}
