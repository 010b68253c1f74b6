//! Telemetry end to end: transactions recorded through the real `Telemetry`, exported over
//! OTLP/gRPC and OTLP/HTTP to a real receiver that decodes the protobuf, the Prometheus endpoint
//! fetched over HTTP, and a collector that goes down, hangs, and comes back.

#[path = "support/golden.rs"]
mod golden;
#[path = "support/otlp.rs"]
mod otlp;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obi_sidecar::config::Config;
use obi_sidecar::protocol::http::{GrpcCall, HttpExchange, HttpVersion};
use obi_sidecar::telemetry::metrics::{DURATION_BUCKETS, SIZE_BUCKETS};
use obi_sidecar::telemetry::spans::WallClock;
use obi_sidecar::telemetry::{ProcessInfo, Telemetry};
use obi_sidecar::transaction::{Facts, SpanKind, TraceContext, Transaction};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status};
use otlp::{OtlpReceiver, Reply, Transport, int_attribute, string_attribute};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(15);

fn config(vars: &[(&str, &str)]) -> obi_sidecar::Result<Config> {
    Config::from_iter(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
}

fn process() -> ProcessInfo {
    ProcessInfo {
        pid: 4242,
        exe: "/usr/bin/python3.12".to_owned(),
        container: Some("app".to_owned()),
    }
}

/// A transaction that ended just now and took 5 ms.
fn transaction(kind: SpanKind, method: &str, target: &str, status: u16, id: u8) -> Transaction {
    let end_ns = WallClock::monotonic_now_ns();
    Transaction {
        kind,
        pid: 4242,
        tid: 4243,
        facts: Facts::Http(HttpExchange {
            method: method.to_owned(),
            target: target.to_owned(),
            host: Some("shop.example".to_owned()),
            version: HttpVersion::Http11,
            status,
            request_body_size: Some(100),
            response_body_size: Some(5000),
            aborted: None,
            grpc: None,
        }),
        start_ns: end_ns - 5_000_000,
        end_ns,
        local: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        peer: Some(SocketAddr::from(([127, 0, 0, 2], 40000))),
        trace: TraceContext {
            trace_id: [0xab; 16],
            span_id: [id; 8],
            parent_span_id: None,
            sampled: true,
        },
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn resource_string<'a>(resource: &'a Resource, key: &str) -> Option<&'a str> {
    string_attribute(&resource.attributes, key)
}

fn histogram_point(
    metric: &Metric,
) -> Option<&opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint> {
    match &metric.data {
        Some(metric::Data::Histogram(histogram)) => histogram.data_points.first(),
        _ => None,
    }
}

fn sum_value(metric: &Metric) -> Option<i64> {
    let point = match &metric.data {
        Some(metric::Data::Sum(sum)) => sum.data_points.first(),
        Some(metric::Data::Gauge(gauge)) => gauge.data_points.first(),
        _ => None,
    }?;
    match point.value {
        Some(number_data_point::Value::AsInt(value)) => Some(value),
        _ => None,
    }
}

/// Spans and metrics through one transport, checked field by field.
async fn roundtrip(protocol: &str) -> TestResult {
    let receiver = OtlpReceiver::start().await?;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let config = config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue%20team"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.namespace.name=shop,k8s.pod.name=web-1,k8s.pod.uid=u-1",
        ),
        ("OTEL_EBPF_ROUTES_PATTERNS", "/users/{id}"),
    ])?;
    let mut telemetry = Telemetry::start(&config).await?;

    let server = transaction(SpanKind::Server, "GET", "/users/7?token=secret", 200, 1);
    let mut client = transaction(SpanKind::Client, "POST", "/api/orders/99", 503, 2);
    client.trace.parent_span_id = Some(server.trace.span_id);
    let recorded_at = SystemTime::now();
    telemetry.record(&server, &process());
    telemetry.record(&client, &process());
    telemetry.self_metrics().processes_instrumented.set(1);

    let spans = receiver.wait_for_spans(2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (resource, server_span) = spans
        .iter()
        .find(|(_, s)| s.kind == span::SpanKind::Server as i32)
        .ok_or("no server span")?;
    let (_, client_span) = spans
        .iter()
        .find(|(_, s)| s.kind == span::SpanKind::Client as i32)
        .ok_or("no client span")?;

    // Resource: the process, the pod (OTEL_RESOURCE_ATTRIBUTES) and the SDK.
    for (key, value) in [
        ("service.name", "python3.12"),
        ("k8s.container.name", "app"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-1"),
        ("k8s.pod.uid", "u-1"),
        ("process.executable.name", "python3.12"),
        ("process.executable.path", "/usr/bin/python3.12"),
        ("telemetry.sdk.language", "rust"),
        ("telemetry.sdk.name", "opentelemetry"),
    ] {
        assert_eq!(resource_string(resource, key), Some(value), "{key}");
    }
    assert_eq!(
        int_attribute(&resource.attributes, "process.pid"),
        Some(4242)
    );

    // Server span.
    assert_eq!(server_span.name, "GET /users/{id}");
    assert_eq!(server_span.trace_id, vec![0xab; 16]);
    assert_eq!(server_span.span_id, vec![1; 8]);
    assert!(server_span.parent_span_id.is_empty());
    assert_eq!(
        server_span.end_time_unix_nano - server_span.start_time_unix_nano,
        5_000_000
    );
    let expected_end = unix_nanos(recorded_at);
    let skew = server_span.end_time_unix_nano.abs_diff(expected_end);
    assert!(skew < 1_000_000_000, "end time off by {skew} ns");
    let status = server_span.status.clone().unwrap_or_default();
    assert_eq!(status.code, status::StatusCode::Unset as i32);
    let attributes = &server_span.attributes;
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/users/7"),
        ("url.scheme", "http"),
        ("http.route", "/users/{id}"),
        ("server.address", "shop.example"),
        ("client.address", "127.0.0.2"),
        ("network.protocol.version", "1.1"),
    ] {
        assert_eq!(string_attribute(attributes, key), Some(value), "{key}");
    }
    for (key, value) in [
        ("http.response.status_code", 200),
        ("server.port", 8080),
        ("client.port", 40000),
        ("http.request.body.size", 100),
        ("http.response.body.size", 5000),
    ] {
        assert_eq!(int_attribute(attributes, key), Some(value), "{key}");
    }
    assert_eq!(string_attribute(attributes, "url.full"), None);
    assert!(!format!("{server_span:?}").contains("secret"));

    // Client span: child of the server span, an error because of the 503.
    assert_eq!(client_span.name, "POST /api/orders/*");
    assert_eq!(client_span.trace_id, vec![0xab; 16]);
    assert_eq!(client_span.parent_span_id, vec![1; 8]);
    assert_eq!(
        string_attribute(&client_span.attributes, "url.full"),
        Some("http://shop.example/api/orders/99")
    );
    assert_eq!(
        string_attribute(&client_span.attributes, "error.type"),
        Some("503")
    );
    let status = client_span.status.clone().unwrap_or_default();
    assert_eq!(status.code, status::StatusCode::Error as i32);

    // Metrics: histograms with OBI's buckets and the four attributes.
    let duration = receiver
        .wait_for_metric(WAIT, |_, m| m.name == "http.server.request.duration")
        .await
        .ok_or("no http.server.request.duration")?;
    assert_eq!(
        resource_string(&duration.0, "service.name"),
        Some("python3.12")
    );
    assert_eq!(duration.1.unit, "s");
    let point = histogram_point(&duration.1).ok_or("not a histogram")?;
    assert_eq!(point.count, 1);
    assert_eq!(point.explicit_bounds, DURATION_BUCKETS.to_vec());
    assert!((point.sum.unwrap_or_default() - 0.005).abs() < 1e-9);
    assert_eq!(
        string_attribute(&point.attributes, "http.request.method"),
        Some("GET")
    );
    assert_eq!(
        string_attribute(&point.attributes, "http.route"),
        Some("/users/{id}")
    );
    assert_eq!(
        int_attribute(&point.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(int_attribute(&point.attributes, "server.port"), Some(8080));
    assert_eq!(point.attributes.len(), 4);

    let size = receiver
        .wait_for_metric(WAIT, |_, m| m.name == "http.client.response.body.size")
        .await
        .ok_or("no http.client.response.body.size")?;
    assert_eq!(size.1.unit, "By");
    let point = histogram_point(&size.1).ok_or("not a histogram")?;
    assert_eq!(point.explicit_bounds, SIZE_BUCKETS.to_vec());
    assert_eq!(point.count, 1);
    assert_eq!(
        int_attribute(&point.attributes, "http.response.status_code"),
        Some(503)
    );
    for name in [
        "http.client.request.duration",
        "http.server.request.body.size",
        "http.server.response.body.size",
        "http.client.request.body.size",
    ] {
        receiver
            .wait_for_metric(WAIT, |_, m| m.name == name)
            .await
            .ok_or(format!("no {name}"))?;
    }

    // The sidecar's own counters, under its own service name.
    let exported = receiver
        .wait_for_metric(WAIT, |_, m| {
            m.name == "obi.sidecar.spans.exported" && sum_value(m) == Some(2)
        })
        .await
        .ok_or("obi.sidecar.spans.exported never reached 2")?;
    assert_eq!(
        resource_string(&exported.0, "service.name"),
        Some("obi-sidecar")
    );
    assert_eq!(resource_string(&exported.0, "k8s.pod.name"), Some("web-1"));
    receiver
        .wait_for_metric(WAIT, |_, m| {
            m.name == "obi.sidecar.processes.instrumented" && sum_value(m) == Some(1)
        })
        .await
        .ok_or("no obi.sidecar.processes.instrumented")?;

    telemetry.shutdown().await;

    // Transport, paths and headers as configured.
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    let transport = if protocol == "grpc" {
        Transport::Grpc
    } else {
        Transport::Http
    };
    for request in &requests {
        assert_eq!(request.transport, transport);
        assert!(
            request
                .headers
                .iter()
                .any(|(k, v)| k == "x-tenant" && v == "blue team"),
            "{request:?}"
        );
    }
    if transport == Transport::Http {
        assert!(requests.iter().any(|r| r.path == "/v1/traces"));
        assert!(requests.iter().any(|r| r.path == "/v1/metrics"));
    }
    Ok(())
}

#[tokio::test]
async fn exports_spans_and_metrics_over_grpc() -> TestResult {
    roundtrip("grpc").await
}

#[tokio::test]
async fn exports_spans_and_metrics_over_http_protobuf() -> TestResult {
    roundtrip("http/protobuf").await
}

fn nginx() -> ProcessInfo {
    ProcessInfo {
        pid: 77,
        exe: "/usr/sbin/nginx".to_owned(),
        container: None,
    }
}

/// An HTTP/1.1 exchange of the golden set.
fn exchange(
    method: &str,
    target: &str,
    host: Option<&str>,
    status: u16,
    (request_body_size, response_body_size): (Option<u64>, Option<u64>),
) -> HttpExchange {
    HttpExchange {
        method: method.to_owned(),
        target: target.to_owned(),
        host: host.map(str::to_owned),
        version: HttpVersion::Http11,
        status,
        request_body_size,
        response_body_size,
        aborted: None,
        grpc: None,
    }
}

/// A gRPC call of the golden set: an HTTP/2 exchange with its `grpc-status`, if any.
fn grpc(
    path: &str,
    authority: Option<&str>,
    status: Option<u32>,
    aborted: Option<&'static str>,
) -> HttpExchange {
    HttpExchange {
        version: HttpVersion::Http2,
        aborted,
        grpc: Some(GrpcCall { status }),
        ..exchange("POST", path, authority, 200, (Some(12), Some(17)))
    }
}

/// A transaction of the golden set: `index` ms after `base_ns`, taking `duration_ns`.
fn golden_transaction(
    base_ns: u64,
    index: u8,
    duration_ns: u64,
    kind: SpanKind,
    exchange: HttpExchange,
) -> Transaction {
    let start_ns = base_ns + u64::from(index) * 1_000_000;
    Transaction {
        kind,
        pid: 4242,
        tid: 4243,
        facts: Facts::Http(exchange),
        start_ns,
        end_ns: start_ns + duration_ns,
        local: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        peer: Some(SocketAddr::from(([127, 0, 0, 2], 40000))),
        trace: TraceContext {
            trace_id: [0xab; 16],
            span_id: [index; 8],
            parent_span_id: None,
            sampled: true,
        },
    }
}

/// The golden transactions, with the process each belongs to: every kind of span and metric
/// point the HTTP and gRPC mappings make (errors, missing responses, non-standard methods, remote and
/// local parents, IPv6 peers, a span the sampler drops, two resources).
fn golden_transactions(base_ns: u64) -> Vec<(Transaction, ProcessInfo)> {
    use SpanKind::{Client, Server};
    const MS: u64 = 1_000_000;
    let shop = Some("shop.example");
    let table = [
        (
            5 * MS,
            Server,
            exchange(
                "GET",
                "/users/7?token=secret",
                shop,
                200,
                (Some(0), Some(5000)),
            ),
        ),
        (
            120 * MS,
            Server,
            exchange("POST", "/api/orders/99", shop, 201, (Some(2048), Some(17))),
        ),
        (
            300 * MS,
            Server,
            exchange("get", "/users/8", None, 404, (None, Some(120))),
        ),
        (
            2_600 * MS,
            Server,
            exchange("PURGE", "/cache/x", shop, 500, (None, None)),
        ),
        (
            12_000 * MS,
            Server,
            exchange("GET", "/slow", shop, 0, (None, None)),
        ),
        (
            40 * MS,
            Client,
            HttpExchange {
                version: HttpVersion::Http10,
                ..exchange(
                    "POST",
                    "/v1/items/9?q=1",
                    Some("api.internal:9090"),
                    503,
                    (Some(64), Some(0)),
                )
            },
        ),
        (
            2 * MS,
            Client,
            exchange("GET", "/health", None, 200, (None, Some(2))),
        ),
        (
            7 * MS,
            Server,
            exchange("GET", "/", shop, 200, (None, Some(612))),
        ),
        (
            MS,
            Server,
            exchange("GET", "/", Some("web:80"), 200, (None, Some(612))),
        ),
        (
            3 * MS,
            Server,
            exchange(
                "GET",
                "/static/app.3f2a9c1b.js",
                Some("web"),
                304,
                (None, Some(0)),
            ),
        ),
        (0, Server, exchange("OPTIONS", "*", shop, 204, (None, None))),
        (
            90 * MS,
            Client,
            exchange("CONNECT", "db:5432", Some("db:5432"), 200, (None, None)),
        ),
        (
            5 * MS,
            Server,
            exchange("GET", "/users/7", shop, 200, (Some(0), Some(4100))),
        ),
        (
            3 * MS,
            Server,
            grpc(
                "/shop.Greeter/SayHello",
                Some("greeter:50051"),
                Some(0),
                None,
            ),
        ),
        (
            8 * MS,
            Client,
            grpc("/shop.Greeter/SayHello", None, Some(14), None),
        ),
        (
            150 * MS,
            Server,
            grpc("/shop.Greeter/Count", None, None, Some("stream reset")),
        ),
    ];
    let mut set: Vec<Transaction> = (1..)
        .zip(table)
        .map(|(index, (duration, kind, exchange))| {
            golden_transaction(base_ns, index, duration, kind, exchange)
        })
        .collect();
    // 2: called by a remote service that sampled it.
    set[1].trace.parent_span_id = Some([0x99; 8]);
    // 6: sent while serving 1 (a local parent).
    set[5].trace.parent_span_id = Some([1; 8]);
    // 7: to an IPv6 peer without a Host header.
    set[6].peer = Some(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9000)));
    // 8: its caller did not sample it: metrics only.
    set[7].trace.parent_span_id = Some([0x98; 8]);
    set[7].trace.sampled = false;
    // 15: a gRPC call made while serving 14.
    set[14].trace.parent_span_id = Some([14; 8]);
    // 9 and 10: another process, on other addresses.
    for tx in &mut set[8..10] {
        tx.pid = 77;
        tx.local = Some(SocketAddr::from(([10, 1, 2, 3], 80)));
        tx.peer = Some(SocketAddr::from(([10, 9, 8, 7], 5555)));
    }
    set.into_iter()
        .map(|tx| {
            let process = if tx.pid == 77 { nginx() } else { process() };
            (tx, process)
        })
        .collect()
}

/// The golden transactions through one transport: spans, metric points (resources and scopes
/// included) and the Prometheus exposition, compared field by field with testdata/otlp/, which
/// was recorded from the opentelemetry-otlp exporter.
async fn golden(protocol: &str, compression: &str) -> TestResult {
    let receiver = OtlpReceiver::start().await?;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let mut config = config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", compression),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.namespace.name=shop,k8s.pod.name=web-1,k8s.pod.uid=u-1",
        ),
        ("OTEL_EBPF_ROUTES_PATTERNS", "/users/{id}"),
        ("OTEL_EBPF_HTTP_INCLUDE_QUERY", "true"),
    ])?;
    config.prometheus_port = Some(0);
    let mut telemetry = Telemetry::start(&config).await?;
    let base_ns = WallClock::monotonic_now_ns() - 20_000_000_000;
    let transactions = golden_transactions(base_ns);
    for (tx, process) in &transactions {
        telemetry.record(tx, process);
    }
    let metrics = telemetry.self_metrics();
    metrics.events_captured.add(10);
    metrics.events_dropped.set_total(3);
    metrics.processes_instrumented.set(2);

    let sampled = transactions.len() - 1;
    assert_eq!(receiver.wait_for_spans(sampled, WAIT).await.len(), sampled);
    receiver
        .wait_for_metric(WAIT, |_, m| {
            m.name == "obi.sidecar.spans.exported" && sum_value(m) == Some(sampled as i64)
        })
        .await
        .ok_or("obi.sidecar.spans.exported never reached the number of spans")?;
    // One more export of every resource, all of it after the last change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = telemetry.prometheus_addr().ok_or("no Prometheus address")?;
    let exposition = reqwest::get(format!("http://127.0.0.1:{}/metrics", addr.port()))
        .await?
        .text()
        .await?;
    telemetry.shutdown().await;

    // The span of the first golden transaction starts 1 ms after base_ns.
    let first = receiver
        .spans()
        .into_iter()
        .find(|(_, s)| s.span_id == [1; 8])
        .ok_or("no span 1")?;
    let base_unix_nano = first.1.start_time_unix_nano - 1_000_000;
    golden::check(
        "spans.txt",
        &golden::spans(&receiver.trace_requests(), base_unix_nano),
    )?;
    golden::check("metrics.txt", &golden::metrics(&receiver.metric_requests()))?;
    golden::check("prometheus.txt", &golden::prometheus(&exposition))?;
    // Every request was sent as configured.
    let expected = if compression == "gzip" {
        "gzip"
    } else {
        "identity"
    };
    let encodings = receiver.encodings();
    assert!(!encodings.is_empty());
    assert!(encodings.iter().all(|e| e == expected), "{encodings:?}");
    Ok(())
}

#[tokio::test]
async fn golden_export_over_grpc() -> TestResult {
    golden("grpc", "none").await
}

#[tokio::test]
async fn golden_export_over_http_protobuf() -> TestResult {
    golden("http/protobuf", "none").await
}

#[tokio::test]
async fn golden_export_gzipped_over_grpc() -> TestResult {
    golden("grpc", "gzip").await
}

#[tokio::test]
async fn golden_export_gzipped_over_http_protobuf() -> TestResult {
    golden("http/protobuf", "gzip").await
}

/// A CA, and a certificate for 127.0.0.1 it signed, as PEM: (CA, certificate, key).
fn test_pki() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// Spans and metrics to a collector over TLS that a generated CA vouches for; without that CA
/// (the built-in roots only), nothing gets through and the spans are counted as dropped.
async fn tls_to_the_collector(protocol: &str) -> TestResult {
    let (ca, cert, key) = test_pki()?;
    let dir = tempfile::tempdir()?;
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca)?;
    let receiver = OtlpReceiver::start_tls(&cert, &key).await?;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
    ];

    let mut untrusting = Telemetry::start(&config(&vars)?).await?;
    untrusting.record(
        &transaction(SpanKind::Server, "GET", "/", 200, 1),
        &process(),
    );
    let dropped = untrusting.self_metrics().clone();
    untrusting.shutdown().await;
    assert_eq!(dropped.spans_dropped.get(), 1);
    assert_eq!(dropped.spans_exported.get(), 0);
    assert!(receiver.spans().is_empty());

    let ca_path = ca_path.to_string_lossy();
    let mut vars = vars.to_vec();
    vars.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_path));
    let mut telemetry = Telemetry::start(&config(&vars)?).await?;
    telemetry.record(
        &transaction(SpanKind::Server, "GET", "/", 200, 2),
        &process(),
    );
    let spans = receiver.wait_for_spans(1, WAIT).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].1.span_id, vec![2; 8]);
    receiver
        .wait_for_metric(WAIT, |_, m| m.name == "http.server.request.duration")
        .await
        .ok_or("no metrics over TLS")?;
    telemetry.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn tls_to_the_collector_over_grpc() -> TestResult {
    tls_to_the_collector("grpc").await
}

#[tokio::test]
async fn tls_to_the_collector_over_http_protobuf() -> TestResult {
    tls_to_the_collector("http/protobuf").await
}

/// A telemetry exporting spans only, to `receiver` over `protocol`, in batches of `batch`.
async fn span_telemetry(
    receiver: &OtlpReceiver,
    protocol: &str,
    batch: &str,
    timeout_ms: &str,
) -> obi_sidecar::Result<Telemetry> {
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => format!("{}/v1/traces", receiver.http_endpoint()),
    };
    Telemetry::start(&config(&[
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", timeout_ms),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ])?)
    .await
}

/// Waits until `exported + dropped` reaches `n`.
async fn settled(metrics: &obi_sidecar::telemetry::metrics::SelfMetrics, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.spans_exported.get() + metrics.spans_dropped.get() < n
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 429 with a retry delay, then 503, then success: the same batch arrives once, the second
/// attempt no sooner than the delay said; a refusal that is not retryable drops the batch.
async fn refusals_are_retried(protocol: &str) -> TestResult {
    let receiver = OtlpReceiver::start().await?;
    receiver.reply_with([
        Reply::Refuse {
            http: 429,
            retry_after: Some(Duration::from_secs(1)),
        },
        Reply::Refuse {
            http: 503,
            retry_after: None,
        },
    ]);
    let mut telemetry = span_telemetry(&receiver, protocol, "3", "5000").await?;
    let metrics = telemetry.self_metrics().clone();
    record_many(&mut telemetry, 0..3);
    settled(&metrics, 3).await;
    assert_eq!(
        (metrics.spans_exported.get(), metrics.spans_dropped.get()),
        (3, 0)
    );
    assert_eq!(received_ids(&receiver), vec![0, 1, 2]);
    let attempts = receiver.trace_attempts();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let waited = attempts[1] - attempts[0];
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    // Backoff, not the server's delay, for the 503: well under a second.
    assert!(attempts[2] - attempts[1] < Duration::from_secs(1));

    receiver.reply_with([Reply::Refuse {
        http: 400,
        retry_after: None,
    }]);
    record_many(&mut telemetry, 10..13);
    settled(&metrics, 6).await;
    assert_eq!(
        (metrics.spans_exported.get(), metrics.spans_dropped.get()),
        (3, 3)
    );
    assert_eq!(receiver.trace_attempts().len(), 4);
    telemetry.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn refusals_are_retried_over_grpc() -> TestResult {
    refusals_are_retried("grpc").await
}

#[tokio::test]
async fn refusals_are_retried_over_http_protobuf() -> TestResult {
    refusals_are_retried("http/protobuf").await
}

/// The collector takes a batch but rejects part of it: those are counted as dropped.
async fn partial_success_is_counted(protocol: &str) -> TestResult {
    let receiver = OtlpReceiver::start().await?;
    receiver.reply_with([Reply::Partial(2)]);
    let mut telemetry = span_telemetry(&receiver, protocol, "5", "5000").await?;
    let metrics = telemetry.self_metrics().clone();
    record_many(&mut telemetry, 0..5);
    settled(&metrics, 5).await;
    assert_eq!(
        (metrics.spans_exported.get(), metrics.spans_dropped.get()),
        (3, 2)
    );
    assert_eq!(receiver.trace_attempts().len(), 1);
    telemetry.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn partial_success_is_counted_over_grpc() -> TestResult {
    partial_success_is_counted("grpc").await
}

#[tokio::test]
async fn partial_success_is_counted_over_http_protobuf() -> TestResult {
    partial_success_is_counted("http/protobuf").await
}

/// A collector slower than the export timeout: the export gives up at the timeout (the spans
/// counted as dropped) and the next one goes through.
async fn exports_time_out(protocol: &str) -> TestResult {
    let receiver = OtlpReceiver::start().await?;
    receiver.reply_with([Reply::Delay(Duration::from_secs(5))]);
    let mut telemetry = span_telemetry(&receiver, protocol, "2", "400").await?;
    let metrics = telemetry.self_metrics().clone();
    let started = tokio::time::Instant::now();
    record_many(&mut telemetry, 0..2);
    settled(&metrics, 2).await;
    let took = started.elapsed();
    assert_eq!(metrics.spans_dropped.get(), 2);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
    record_many(&mut telemetry, 2..4);
    settled(&metrics, 4).await;
    assert_eq!(metrics.spans_exported.get(), 2);
    assert!(received_ids(&receiver).contains(&3));
    telemetry.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn exports_time_out_over_grpc() -> TestResult {
    exports_time_out("grpc").await
}

#[tokio::test]
async fn exports_time_out_over_http_protobuf() -> TestResult {
    exports_time_out("http/protobuf").await
}

/// The duration points of `GET /` exported last, with their temporality.
async fn last_duration_points(
    receiver: &OtlpReceiver,
    count: u64,
) -> Result<
    (
        i32,
        Vec<opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint>,
    ),
    String,
> {
    let (_, metric) = receiver
        .wait_for_metric(WAIT, |_, m| {
            m.name == "http.server.request.duration"
                && histogram_point(m).is_some_and(|p| p.count == count)
        })
        .await
        .ok_or(format!("no duration point of count {count}"))?;
    match metric.data {
        Some(metric::Data::Histogram(h)) => Ok((h.aggregation_temporality, h.data_points)),
        _ => Err("not a histogram".to_owned()),
    }
}

/// Cumulative points carry every measurement since the start; delta points only those since
/// the last export, over back-to-back intervals, and the sidecar's counters likewise.
async fn temporality(preference: &str) -> TestResult {
    let receiver = OtlpReceiver::start().await?;
    let mut telemetry = Telemetry::start(&config(&[
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            &format!("{}/v1/metrics", receiver.http_endpoint()),
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            preference,
        ),
    ])?)
    .await?;
    let delta = preference == "delta";
    let server = transaction(SpanKind::Server, "GET", "/", 200, 1);
    telemetry.record(&server, &process());
    telemetry.record(&server, &process());
    telemetry.self_metrics().events_captured.add(10);
    let (kind, first) = last_duration_points(&receiver, 2).await?;
    assert_eq!(kind, if delta { 1 } else { 2 });
    receiver
        .wait_for_metric(WAIT, |_, m| {
            m.name == "obi.sidecar.events.captured" && sum_value(m) == Some(10)
        })
        .await
        .ok_or("no events.captured of 10")?;

    telemetry.record(&server, &process());
    telemetry.self_metrics().events_captured.add(5);
    let (kind, second) = last_duration_points(&receiver, if delta { 1 } else { 3 }).await?;
    assert_eq!(kind, if delta { 1 } else { 2 });
    assert_eq!((first.len(), second.len()), (1, 1));
    if delta {
        // The second interval starts where the first export ended.
        assert!(second[0].start_time_unix_nano >= first[0].time_unix_nano);
        assert!((second[0].sum.unwrap_or_default() - 0.005).abs() < 1e-9);
    } else {
        assert_eq!(
            second[0].start_time_unix_nano,
            first[0].start_time_unix_nano
        );
        assert!((second[0].sum.unwrap_or_default() - 0.015).abs() < 1e-9);
    }
    let captured = if delta { 5 } else { 15 };
    receiver
        .wait_for_metric(WAIT, |_, m| {
            m.name == "obi.sidecar.events.captured" && sum_value(m) == Some(captured)
        })
        .await
        .ok_or(format!("no events.captured of {captured}"))?;
    telemetry.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn cumulative_temporality_by_default() -> TestResult {
    temporality("cumulative").await
}

#[tokio::test]
async fn delta_temporality_when_preferred() -> TestResult {
    temporality("delta").await
}

/// Past the cardinality limit, new attribute sets go to one `otel.metric.overflow` series, in
/// OTLP and Prometheus alike; the series within the limit keep counting.
#[tokio::test]
async fn cardinality_overflow() -> TestResult {
    let receiver = OtlpReceiver::start().await?;
    let mut config = config(&[
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            &format!("{}/v1/metrics", receiver.http_endpoint()),
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_EBPF_METRICS_CARDINALITY_LIMIT", "3"),
        ("OTEL_SERVICE_NAME", "shop"),
    ])?;
    config.prometheus_port = Some(0);
    let mut telemetry = Telemetry::start(&config).await?;
    for path in ["/a", "/b", "/c", "/d", "/e", "/a", "/d"] {
        telemetry.record(
            &transaction(SpanKind::Server, "GET", path, 200, 1),
            &process(),
        );
    }
    let (_, metric) = receiver
        .wait_for_metric(WAIT, |_, m| m.name == "http.server.request.duration")
        .await
        .ok_or("no duration metric")?;
    let Some(metric::Data::Histogram(histogram)) = metric.data else {
        return Err("not a histogram".into());
    };
    let mut points: Vec<(String, u64)> = histogram
        .data_points
        .iter()
        .map(|p| {
            let route = string_attribute(&p.attributes, "http.route")
                .unwrap_or("-")
                .to_owned();
            let overflow = matches!(
                otlp::attribute(&p.attributes, "otel.metric.overflow"),
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(true))
            );
            (
                if overflow {
                    "overflow".to_owned()
                } else {
                    route
                },
                p.count,
            )
        })
        .collect();
    points.sort();
    let expected = [("/a", 2), ("/b", 1), ("/c", 1), ("overflow", 3)];
    assert_eq!(points, expected.map(|(r, c)| (r.to_owned(), c)).to_vec());
    let addr = telemetry.prometheus_addr().ok_or("no Prometheus address")?;
    let body = reqwest::get(format!("http://127.0.0.1:{}/metrics", addr.port()))
        .await?
        .text()
        .await?;
    let overflow = r#"http_server_request_duration_seconds_count{service_name="shop",k8s_container_name="app",http_request_method="",http_response_status_code="",http_route="",server_port="",otel_metric_overflow="true"} 3"#;
    assert!(body.lines().any(|l| l == overflow), "{body}");
    telemetry.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn parent_based_sampling_follows_the_caller() -> TestResult {
    let receiver = OtlpReceiver::start().await?;
    let config = config(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            &receiver.grpc_endpoint(),
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ])?;
    let mut telemetry = Telemetry::start(&config).await?;
    let root = transaction(SpanKind::Server, "GET", "/", 200, 1);
    let mut sampled_child = transaction(SpanKind::Server, "GET", "/", 200, 2);
    sampled_child.trace.parent_span_id = Some([9; 8]);
    let mut unsampled_child = sampled_child.clone();
    unsampled_child.trace.span_id = [3; 8];
    unsampled_child.trace.sampled = false;
    for tx in [&root, &sampled_child, &unsampled_child] {
        telemetry.record(tx, &process());
    }
    // Shutdown flushes the queue, so what arrived by then is everything.
    telemetry.shutdown().await;
    let spans = receiver.spans();
    let ids: Vec<_> = spans.iter().map(|(_, s)| s.span_id.clone()).collect();
    assert_eq!(ids, vec![vec![2u8; 8]]);
    assert!(receiver.metrics().is_empty(), "no metrics endpoint was set");
    Ok(())
}

#[tokio::test]
async fn prometheus_endpoint_serves_http_and_self_metrics() -> TestResult {
    // No OTLP endpoint at all: not an error, Prometheus only.
    let mut config = config(&[("OTEL_SERVICE_NAME", "checkout")])?;
    assert!(config.traces.is_none() && config.metrics.is_none());
    // Port 0: an ephemeral port, so tests never collide.
    config.prometheus_port = Some(0);
    let mut telemetry = Telemetry::start(&config).await?;
    let addr = telemetry.prometheus_addr().ok_or("no Prometheus address")?;
    telemetry.record(
        &transaction(SpanKind::Server, "GET", "/items/12", 404, 1),
        &process(),
    );
    telemetry.self_metrics().events_captured.add(10);
    telemetry.self_metrics().events_dropped.set_total(3);
    telemetry.self_metrics().processes_instrumented.set(2);

    let response = reqwest::get(format!("http://127.0.0.1:{}/metrics", addr.port())).await?;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = response.text().await?;
    let labels = r#"service_name="checkout",k8s_container_name="app",http_request_method="GET",http_response_status_code="404",http_route="/items/*",server_port="8080""#;
    for line in [
        format!("http_server_request_duration_seconds_count{{{labels}}} 1"),
        format!("http_server_request_duration_seconds_bucket{{le=\"0.005\",{labels}}} 1"),
        format!("http_server_request_duration_seconds_bucket{{le=\"0.0\",{labels}}} 0"),
        format!("http_server_response_body_size_bytes_bucket{{le=\"4096.0\",{labels}}} 0"),
        format!("http_server_response_body_size_bytes_bucket{{le=\"8192.0\",{labels}}} 1"),
        "obi_sidecar_events_captured_total 10".to_owned(),
        "obi_sidecar_events_dropped_total 3".to_owned(),
        "obi_sidecar_spans_exported_total 0".to_owned(),
        "obi_sidecar_spans_dropped_total 0".to_owned(),
        "obi_sidecar_processes_instrumented 2".to_owned(),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    let missing = reqwest::get(format!("http://127.0.0.1:{}/other", addr.port())).await?;
    assert_eq!(missing.status(), 404);
    telemetry.shutdown().await;
    // The endpoint is gone after shutdown.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/metrics", addr.port()))
            .await
            .is_err()
    );
    Ok(())
}

/// Records spans with ids from `ids`.
fn record_many(telemetry: &mut Telemetry, ids: std::ops::Range<u32>) {
    for id in ids {
        let mut tx = transaction(SpanKind::Server, "GET", "/", 200, 0);
        tx.trace.span_id[..4].copy_from_slice(&id.to_be_bytes());
        tx.trace.span_id[7] = 1;
        telemetry.record(&tx, &process());
    }
}

fn received_ids(receiver: &OtlpReceiver) -> Vec<u32> {
    receiver
        .spans()
        .iter()
        .filter_map(|(_, s)| Some(u32::from_be_bytes(s.span_id.get(..4)?.try_into().ok()?)))
        .collect()
}

async fn collector_down_then_up(protocol: &str) -> TestResult {
    let mut receiver = OtlpReceiver::start().await?;
    // A signal-specific endpoint is used as-is: the HTTP path must be spelled out.
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => format!("{}/v1/traces", receiver.http_endpoint()),
    };
    let config = config(&[
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "50"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ])?;
    let mut telemetry = Telemetry::start(&config).await?;
    let metrics = telemetry.self_metrics().clone();

    // Up: spans flow.
    record_many(&mut telemetry, 0..5);
    assert_eq!(receiver.wait_for_spans(5, WAIT).await.len(), 5);
    // The exporter counts once the collector answered, just after the receiver stored them.
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.spans_exported.get() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.spans_exported.get(), 5);

    // Down: every span is dropped and counted, none is kept around.
    receiver.stop().await;
    record_many(&mut telemetry, 1000..3000);
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.spans_dropped.get() < 2000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.spans_dropped.get(), 2000);
    assert_eq!(metrics.spans_exported.get(), 5);

    // Up again, same port: export resumes on its own.
    receiver.restart().await?;
    let mut next = 5000;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !received_ids(&receiver).iter().any(|id| *id >= 5000) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "export never resumed"
        );
        record_many(&mut telemetry, next..next + 1);
        next += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    record_many(&mut telemetry, 9000..9020);
    telemetry.shutdown().await;

    let ids = received_ids(&receiver);
    assert!(
        ids.iter().all(|id| !(1000..3000).contains(id)),
        "a span from the outage arrived"
    );
    let late: Vec<u32> = ids.iter().copied().filter(|id| *id >= 9000).collect();
    assert_eq!(late, (9000..9020).collect::<Vec<_>>());
    // Every span is accounted for: exported (and received) or dropped.
    let recorded = 5 + 2000 + u64::from(next - 5000) + 20;
    assert_eq!(metrics.spans_exported.get(), ids.len() as u64);
    assert_eq!(
        metrics.spans_exported.get() + metrics.spans_dropped.get(),
        recorded
    );
    Ok(())
}

#[tokio::test]
async fn collector_down_then_up_over_grpc() -> TestResult {
    collector_down_then_up("grpc").await
}

#[tokio::test]
async fn collector_down_then_up_over_http_protobuf() -> TestResult {
    collector_down_then_up("http/protobuf").await
}

/// A collector that accepts connections and never answers: exports hang until their timeout.
/// `record` must not wait for them, and what does not fit in the queue is dropped at once.
#[tokio::test]
async fn hung_collector_bounds_the_queue_and_shutdown() -> TestResult {
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", black_hole.local_addr()?);
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            held.push(stream);
        }
    });
    let config = config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        // Long enough that the first export is surely still hanging when the burst comes.
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "50"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
    ])?;
    let mut telemetry = Telemetry::start(&config).await?;
    let metrics = telemetry.self_metrics().clone();
    record_many(&mut telemetry, 0..1);
    // Let the export task take that span and get stuck exporting it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    // This runtime is single-threaded: nothing else runs during these calls, so the queue
    // (50) takes exactly 50 and the rest is dropped on the spot.
    record_many(&mut telemetry, 1..2001);
    assert_eq!(metrics.spans_dropped.get(), 1950);
    assert_eq!(metrics.spans_exported.get(), 0);
    tokio::time::timeout(Duration::from_secs(10), telemetry.shutdown())
        .await
        .map_err(|_| "shutdown did not finish")?;
    assert_eq!(metrics.spans_exported.get(), 0);
    holder.abort();
    Ok(())
}

/// Set in the child process of `trace_printer_writes_every_span_to_stdout`.
const PRINTER_CHILD: &str = "OBI_TEST_PRINTER_CHILD";

/// In the child: records spans with the JSON printer on, so they go to the real stdout.
#[tokio::test]
async fn printer_child() -> TestResult {
    let Ok(format) = std::env::var(PRINTER_CHILD) else {
        return Ok(()); // Only meaningful as the child of the test below.
    };
    let config = config(&[
        ("OTEL_EBPF_TRACE_PRINTER", &format),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
    ])?;
    let mut telemetry = Telemetry::start(&config).await?;
    for (id, status) in [(1, 200), (2, 404), (3, 500)] {
        let mut tx = transaction(SpanKind::Server, "GET", "/users/1", status, id);
        if id == 2 {
            // A caller that did not sample: the sampler drops it, the printer still shows it.
            tx.trace.parent_span_id = Some([9; 8]);
            tx.trace.sampled = false;
        }
        telemetry.record(&tx, &process());
    }
    telemetry.shutdown().await;
    Ok(())
}

/// Runs `printer_child` in a child process and reads what it printed on stdout.
fn printed_lines(format: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "printer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PRINTER_CHILD, format)
        .output()?;
    assert!(output.status.success(), "{output:?}");
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

#[test]
fn trace_printer_writes_every_span_to_stdout() -> TestResult {
    let lines: Vec<serde_json::Value> = printed_lines("json")?
        .iter()
        // libtest's "test printer_child ... " may share the first line.
        .filter_map(|line| line.find('{').map(|start| &line[start..]))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let statuses: Vec<_> = lines
        .iter()
        .map(|l| l["attributes"]["http.response.status_code"].clone())
        .collect();
    assert_eq!(statuses, vec![200, 404, 500]);
    for line in &lines {
        assert_eq!(line["name"], "GET /users/*");
        assert_eq!(line["service.name"], "python3.12");
        assert_eq!(line["process.pid"], 4242);
        assert_eq!(line["duration_ns"], 5_000_000);
    }
    assert_eq!(lines[2]["status"], "error");
    let sampled: Vec<_> = lines.iter().map(|l| l["sampled"].clone()).collect();
    assert_eq!(sampled, vec![true, false, true]);

    let text: Vec<String> = printed_lines("text")?
        .into_iter()
        .filter(|line| line.contains(" SERVER GET /users/* [python3.12 pid=4242] "))
        .collect();
    assert_eq!(text.len(), 3, "{text:#?}");
    assert!(text[0].contains("(5.000ms)") && text[0].contains("http.response.status_code=200"));
    assert!(text[2].contains("status=error"));
    Ok(())
}

#[tokio::test]
async fn a_taken_prometheus_port_names_the_variable() -> TestResult {
    let taken = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let mut config = config(&[])?;
    config.prometheus_port = Some(taken.local_addr()?.port());
    let error = Telemetry::start(&config)
        .await
        .err()
        .ok_or("a second listener on the same port was accepted")?;
    assert!(
        error.to_string().contains("OTEL_EBPF_PROMETHEUS_PORT"),
        "{error}"
    );
    Ok(())
}
