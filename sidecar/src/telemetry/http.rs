//! The HTTP mapping: from an HTTP exchange (any version) to the facts both its span and its
//! metrics are made of, following the semantic conventions and OBI's choices.
//!
//! Attribute choices where the conventions leave room:
//! - `server.port` is the socket's port when known (the port the server listens on, or the port
//!   the client connected to), else the `Host` header's, else 80.
//! - `server.address` is the `Host` header's host when present, else the socket address.
//! - Query strings are never exported unless `OTEL_EBPF_HTTP_INCLUDE_QUERY` is set.
//! - Methods outside the HTTP standard become `_OTHER` (`http.request.method_original` keeps the
//!   original), which keeps span names and metric series bounded.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use opentelemetry::KeyValue;
use opentelemetry::trace::Status;
use opentelemetry_semantic_conventions::{attribute as semconv, metric as names};

use super::Semantics;
use super::metrics::{DURATION_BUCKETS, HistogramDef, MetricUnit, SIZE_BUCKETS};
use super::route::RouteMatcher;
use crate::protocol::http::HttpExchange;
use crate::transaction::{SpanKind, Transaction};

/// The attributes of every HTTP metric series, with their Prometheus label names.
const LABELS: [(&str, &str); 4] = [
    (semconv::HTTP_REQUEST_METHOD, "http_request_method"),
    (
        semconv::HTTP_RESPONSE_STATUS_CODE,
        "http_response_status_code",
    ),
    (semconv::HTTP_ROUTE, "http_route"),
    (semconv::SERVER_PORT, "server_port"),
];

/// The HTTP histograms (names, units and buckets as OBI's).
pub static SERVER_DURATION: HistogramDef = HistogramDef {
    name: names::HTTP_SERVER_REQUEST_DURATION,
    prometheus_name: "http_server_request_duration",
    description: "Duration of HTTP server requests",
    unit: MetricUnit::Seconds,
    buckets: &DURATION_BUCKETS,
    labels: &LABELS,
};
pub static SERVER_REQUEST_BODY_SIZE: HistogramDef = HistogramDef {
    name: names::HTTP_SERVER_REQUEST_BODY_SIZE,
    prometheus_name: "http_server_request_body_size",
    description: "Size of HTTP server request bodies",
    unit: MetricUnit::Bytes,
    buckets: &SIZE_BUCKETS,
    labels: &LABELS,
};
pub static SERVER_RESPONSE_BODY_SIZE: HistogramDef = HistogramDef {
    name: names::HTTP_SERVER_RESPONSE_BODY_SIZE,
    prometheus_name: "http_server_response_body_size",
    description: "Size of HTTP server response bodies",
    unit: MetricUnit::Bytes,
    buckets: &SIZE_BUCKETS,
    labels: &LABELS,
};
pub static CLIENT_DURATION: HistogramDef = HistogramDef {
    name: names::HTTP_CLIENT_REQUEST_DURATION,
    prometheus_name: "http_client_request_duration",
    description: "Duration of HTTP client requests",
    unit: MetricUnit::Seconds,
    buckets: &DURATION_BUCKETS,
    labels: &LABELS,
};
pub static CLIENT_REQUEST_BODY_SIZE: HistogramDef = HistogramDef {
    name: names::HTTP_CLIENT_REQUEST_BODY_SIZE,
    prometheus_name: "http_client_request_body_size",
    description: "Size of HTTP client request bodies",
    unit: MetricUnit::Bytes,
    buckets: &SIZE_BUCKETS,
    labels: &LABELS,
};
pub static CLIENT_RESPONSE_BODY_SIZE: HistogramDef = HistogramDef {
    name: names::HTTP_CLIENT_RESPONSE_BODY_SIZE,
    prometheus_name: "http_client_response_body_size",
    description: "Size of HTTP client response bodies",
    unit: MetricUnit::Bytes,
    buckets: &SIZE_BUCKETS,
    labels: &LABELS,
};

/// Every HTTP histogram, in the order they are registered.
pub static HISTOGRAMS: [&HistogramDef; 6] = [
    &SERVER_DURATION,
    &SERVER_REQUEST_BODY_SIZE,
    &SERVER_RESPONSE_BODY_SIZE,
    &CLIENT_DURATION,
    &CLIENT_REQUEST_BODY_SIZE,
    &CLIENT_RESPONSE_BODY_SIZE,
];

/// Everything spans and metrics need from one transaction, derived once.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpFacts {
    pub kind: SpanKind,
    /// Normalized: a standard method, or `_OTHER`.
    pub method: Cow<'static, str>,
    /// The method as sent, when it is not standard.
    pub method_original: Option<String>,
    pub path: String,
    /// Only when query strings are exported.
    pub query: Option<String>,
    pub route: Option<String>,
    /// 0: no response.
    pub status: u16,
    /// `error.type`, set when the transaction is an error.
    pub error_type: Option<String>,
    /// Why the exchange ended before its response did (HTTP/2 resets and the like).
    pub aborted: Option<&'static str>,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    pub client_address: Option<String>,
    pub client_port: Option<u16>,
    /// Client spans only.
    pub url_full: Option<String>,
    pub protocol_version: &'static str,
    pub request_body_size: Option<u64>,
    pub response_body_size: Option<u64>,
    /// Seconds from the first request byte to the last response byte.
    pub duration_seconds: f64,
}

/// Most metric attributes there can be (method, status code, route, server port).
const METRIC_ATTRIBUTES: usize = 4;
/// Most span attributes there can be: the metric ones, three always present, six optional
/// strings, the client port and two body sizes.
const SPAN_ATTRIBUTES: usize = METRIC_ATTRIBUTES + 3 + 6 + 1 + 2;

const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The request target split into what the URL attributes need.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    /// From an absolute-form target (`GET http://host/path`), without user info.
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
}

fn split_target(target: &str) -> Target<'_> {
    let without_fragment = target.split_once('#').map_or(target, |(before, _)| before);
    let lower_prefix = |prefix: &str| {
        without_fragment
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let (authority, rest) = if let Some(scheme) = ["http://", "https://"]
        .into_iter()
        .find(|scheme| lower_prefix(scheme))
    {
        let after_scheme = &without_fragment[scheme.len()..];
        let end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
        let authority = &after_scheme[..end];
        // Credentials in the URL are never exported.
        let authority = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        (Some(authority), &after_scheme[end..])
    } else {
        (None, without_fragment)
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = if path.is_empty() && authority.is_some() {
        "/"
    } else {
        path
    };
    Target {
        authority,
        path,
        query,
    }
}

/// Splits `host[:port]` / `[v6][:port]` from a Host header or authority.
fn split_host(authority: &str) -> (String, Option<u16>) {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host.to_owned(), port);
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, port)) if !host.contains(':') => (host.to_owned(), port.parse().ok()),
        _ => (authority.to_owned(), None),
    }
}

/// An address as text. IPv4 (nearly every request's client address) is written digit by digit:
/// `Display` goes through the formatting machinery, which showed up in profiles at one or two
/// addresses per request.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

fn format_authority(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

impl HttpFacts {
    pub fn new(
        tx: &Transaction,
        http: &HttpExchange,
        routes: &RouteMatcher,
        include_query: bool,
    ) -> Self {
        let known = KNOWN_METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(&http.method));
        let (method, method_original) = match known {
            Some(known) if **known == http.method => (Cow::Borrowed(*known), None),
            Some(known) => (Cow::Borrowed(*known), Some(http.method.clone())),
            // An HTTP/2 method the capture could not decode stays unknown: `_OTHER`, without
            // an original to show.
            None => (
                Cow::Borrowed("_OTHER"),
                (!http.method.is_empty()).then(|| http.method.clone()),
            ),
        };
        let target = split_target(&http.target);
        // Authority-form (CONNECT host:port) has no path to route.
        let route = if target.path.starts_with('/') || target.path == "*" {
            routes.route(target.path)
        } else {
            None
        };
        let host = http.host.as_deref().or(target.authority);
        let (host_name, host_port) = match host {
            Some(host) if !host.trim().is_empty() => {
                let (name, port) = split_host(host);
                (Some(name), port)
            }
            _ => (None, None),
        };
        let status_is_error = match tx.kind {
            SpanKind::Server => http.status == 0 || http.status >= 500,
            SpanKind::Client => http.status == 0 || http.status >= 400,
        };
        let error_type = (status_is_error || http.aborted.is_some()).then(|| {
            if http.status == 0 || !status_is_error {
                "_OTHER".to_owned()
            } else {
                http.status.to_string()
            }
        });
        let query = target.query.filter(|_| include_query).map(str::to_owned);
        let (server_address, server_port, client_address, client_port, url_full) = match tx.kind {
            SpanKind::Server => (
                host_name.or_else(|| tx.local.map(|a| ip_text(a.ip()))),
                tx.local.map(|a| a.port()).or(host_port).or(Some(80)),
                tx.peer.map(|a| ip_text(a.ip())),
                tx.peer.map(|a| a.port()),
                None,
            ),
            SpanKind::Client => {
                let authority = host
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .or_else(|| tx.peer.map(|a| format_authority(a.ip(), a.port())));
                let url_full = authority.map(|authority| {
                    let mut url = format!("http://{authority}{}", target.path);
                    if let Some(query) = &query {
                        url.push('?');
                        url.push_str(query);
                    }
                    url
                });
                (
                    host_name.or_else(|| tx.peer.map(|a| ip_text(a.ip()))),
                    tx.peer.map(|a| a.port()).or(host_port).or(Some(80)),
                    None,
                    None,
                    url_full,
                )
            }
        };
        Self {
            kind: tx.kind,
            method,
            method_original,
            path: target.path.to_owned(),
            query,
            route,
            status: http.status,
            error_type,
            aborted: http.aborted,
            server_address,
            server_port,
            client_address,
            client_port,
            url_full,
            protocol_version: http.version.as_str(),
            request_body_size: http.request_body_size,
            response_body_size: http.response_body_size,
            duration_seconds: tx.end_ns.saturating_sub(tx.start_ns) as f64 / 1e9,
        }
    }

    fn push_metric_attributes(&self, attributes: &mut Vec<KeyValue>) {
        attributes.push(KeyValue::new(
            semconv::HTTP_REQUEST_METHOD,
            self.method.clone(),
        ));
        if self.status != 0 {
            attributes.push(KeyValue::new(
                semconv::HTTP_RESPONSE_STATUS_CODE,
                i64::from(self.status),
            ));
        }
        if let Some(route) = &self.route {
            attributes.push(KeyValue::new(semconv::HTTP_ROUTE, route.clone()));
        }
        if let Some(port) = self.server_port {
            attributes.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
        }
    }

    pub fn is_error(&self) -> bool {
        self.error_type.is_some()
    }
}

impl Semantics for HttpFacts {
    /// `METHOD route`, or just the method when there is no route (`HTTP` for `_OTHER`, as the
    /// conventions ask).
    fn span_name(&self) -> String {
        let method = if self.method == "_OTHER" {
            "HTTP"
        } else {
            &self.method
        };
        match &self.route {
            Some(route) => format!("{method} {route}"),
            None => method.to_owned(),
        }
    }

    /// Span status: an error for a missing response or an error status code, which says it all
    /// (the conventions ask for no description then).
    fn span_status(&self) -> Status {
        if let Some(reason) = self.aborted {
            Status::error(reason)
        } else if self.status == 0 {
            Status::error("no response")
        } else if self.is_error() {
            Status::error("")
        } else {
            Status::Unset
        }
    }

    /// Metric attributes: bounded-cardinality ones only.
    fn metric_attributes(&self) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(METRIC_ATTRIBUTES);
        self.push_metric_attributes(&mut attributes);
        attributes
    }

    /// The histograms of this exchange: its duration and the body sizes that are known.
    fn measurements(&self, record: &mut dyn FnMut(&'static HistogramDef, f64)) {
        let (duration, request_size, response_size) = match self.kind {
            SpanKind::Server => (
                &SERVER_DURATION,
                &SERVER_REQUEST_BODY_SIZE,
                &SERVER_RESPONSE_BODY_SIZE,
            ),
            SpanKind::Client => (
                &CLIENT_DURATION,
                &CLIENT_REQUEST_BODY_SIZE,
                &CLIENT_RESPONSE_BODY_SIZE,
            ),
        };
        record(duration, self.duration_seconds);
        if let Some(size) = self.request_body_size {
            record(request_size, size as f64);
        }
        if let Some(size) = self.response_body_size {
            record(response_size, size as f64);
        }
    }

    /// Span attributes. Consumes the facts: their strings move into the attributes (spans are
    /// built once the metrics are recorded), and the vector is allocated once at its final size.
    fn into_span_attributes(self) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(SPAN_ATTRIBUTES);
        self.push_metric_attributes(&mut attributes);
        attributes.push(KeyValue::new(semconv::URL_PATH, self.path));
        attributes.push(KeyValue::new(semconv::URL_SCHEME, "http"));
        attributes.push(KeyValue::new(
            semconv::NETWORK_PROTOCOL_VERSION,
            self.protocol_version,
        ));
        let optional_strings = [
            (semconv::HTTP_REQUEST_METHOD_ORIGINAL, self.method_original),
            (semconv::URL_QUERY, self.query),
            (semconv::SERVER_ADDRESS, self.server_address),
            (semconv::CLIENT_ADDRESS, self.client_address),
            (semconv::URL_FULL, self.url_full),
            (semconv::ERROR_TYPE, self.error_type),
        ];
        for (key, value) in optional_strings {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value));
            }
        }
        if let Some(port) = self.client_port {
            attributes.push(KeyValue::new(semconv::CLIENT_PORT, i64::from(port)));
        }
        let sizes = [
            (semconv::HTTP_REQUEST_BODY_SIZE, self.request_body_size),
            (semconv::HTTP_RESPONSE_BODY_SIZE, self.response_body_size),
        ];
        for (key, size) in sizes {
            if let Some(size) = size {
                attributes.push(KeyValue::new(key, i64::try_from(size).unwrap_or(i64::MAX)));
            }
        }
        attributes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::connection::testing::{http, http_mut};
    use crate::protocol::http::HttpVersion;
    use crate::telemetry::Semantics;
    use crate::telemetry::route::Unmatched;
    use crate::telemetry::spans::{WallClock, instrumentation_scope, span_data};
    use crate::transaction::{Facts, TraceContext};
    use opentelemetry::Value;
    use opentelemetry::trace::Status;
    use opentelemetry_sdk::trace::SpanData;

    pub(crate) fn transaction(
        kind: SpanKind,
        method: &str,
        target: &str,
        status: u16,
    ) -> Transaction {
        Transaction {
            kind,
            pid: 42,
            tid: 43,
            start_ns: 1_000_000_000,
            end_ns: 1_250_000_000,
            local: Some(SocketAddr::from(([10, 0, 0, 1], 8080))),
            peer: Some(SocketAddr::from(([10, 0, 0, 2], 51000))),
            trace: TraceContext {
                trace_id: [0x11; 16],
                span_id: [0x22; 8],
                parent_span_id: Some([0x33; 8]),
                sampled: true,
            },
            facts: Facts::Http(HttpExchange {
                method: method.to_owned(),
                target: target.to_owned(),
                host: Some("shop.example:8080".to_owned()),
                version: HttpVersion::Http11,
                status,
                request_body_size: Some(12),
                response_body_size: None,
                aborted: None,
                grpc: None,
            }),
        }
    }

    pub(crate) fn facts_of(
        tx: &Transaction,
        routes: &RouteMatcher,
        include_query: bool,
    ) -> HttpFacts {
        HttpFacts::new(tx, http(tx), routes, include_query)
    }

    /// The span of `facts` (made from `tx`), as the exporter builds it.
    pub(crate) fn span_of(tx: &Transaction, facts: HttpFacts, clock: &WallClock) -> SpanData {
        let name = facts.span_name();
        let status = facts.span_status();
        span_data(
            tx,
            name,
            status,
            facts.into_span_attributes(),
            clock,
            &instrumentation_scope(),
        )
    }

    fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    pub(crate) fn routes() -> RouteMatcher {
        let patterns = RouteMatcher::parse_patterns("V", "/users/{id}").unwrap_or_default();
        RouteMatcher::new(patterns, Unmatched::Heuristic)
    }

    #[test]
    fn ip_text_matches_display() {
        let addresses = [
            "0.0.0.0",
            "127.0.0.1",
            "10.244.1.9",
            "100.64.0.255",
            "255.255.255.255",
            "::1",
            "fd00::a:1",
            "::ffff:10.0.0.1",
        ];
        for text in addresses {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string(), "{text}");
        }
    }

    #[test]
    fn target_splitting() {
        let table = [
            ("/a/b?x=1#frag", None, "/a/b", Some("x=1")),
            ("/a", None, "/a", None),
            ("*", None, "*", None),
            ("http://h:81/p?q", Some("h:81"), "/p", Some("q")),
            ("HTTP://user:pw@h/p", Some("h"), "/p", None),
            ("http://h", Some("h"), "/", None),
            ("http://h?q", Some("h"), "/", Some("q")),
            ("example.com:443", None, "example.com:443", None),
        ];
        for (target, authority, path, query) in table {
            assert_eq!(
                split_target(target),
                Target {
                    authority,
                    path,
                    query
                },
                "{target}"
            );
        }
        let hosts = [
            ("h", ("h", None)),
            ("h:8080", ("h", Some(8080))),
            ("[::1]:9", ("::1", Some(9))),
            ("[::1]", ("::1", None)),
            ("::1", ("::1", None)),
            ("h:bad", ("h", None)),
        ];
        for (authority, (host, port)) in hosts {
            assert_eq!(
                split_host(authority),
                (host.to_owned(), port),
                "{authority}"
            );
        }
    }

    #[test]
    fn server_span_facts_and_attributes() {
        let tx = transaction(SpanKind::Server, "GET", "/users/42?token=secret", 200);
        let facts = facts_of(&tx, &routes(), false);
        assert_eq!(facts.span_name(), "GET /users/{id}");
        assert!(!facts.is_error());
        let metric = facts.metric_attributes();
        assert_eq!(metric.len(), 4);
        let attributes = facts.into_span_attributes();
        let expect: [(&str, Value); 11] = [
            ("http.request.method", "GET".into()),
            ("http.response.status_code", 200.into()),
            ("http.route", "/users/{id}".into()),
            ("server.port", 8080.into()),
            ("url.path", "/users/42".into()),
            ("url.scheme", "http".into()),
            ("network.protocol.version", "1.1".into()),
            ("server.address", "shop.example".into()),
            ("client.address", "10.0.0.2".into()),
            ("client.port", 51000.into()),
            ("http.request.body.size", 12.into()),
        ];
        for (key, value) in &expect {
            assert_eq!(attribute(&attributes, key), Some(value), "{key}");
        }
        assert_eq!(attributes.len(), expect.len(), "{attributes:?}");
        for absent in [
            "url.query",
            "url.full",
            "error.type",
            "http.response.body.size",
        ] {
            assert_eq!(attribute(&attributes, absent), None, "{absent}");
        }
        assert!(!format!("{attributes:?}").contains("secret"));
    }

    #[test]
    fn client_span_facts() {
        let mut tx = transaction(SpanKind::Client, "post", "/v1/items/9?q=1", 404);
        http_mut(&mut tx).version = HttpVersion::Http10;
        let facts = facts_of(&tx, &routes(), true);
        assert_eq!(facts.method, "POST");
        assert_eq!(facts.method_original.as_deref(), Some("post"));
        assert_eq!(facts.span_name(), "POST /v1/items/*");
        assert_eq!(facts.error_type.as_deref(), Some("404"));
        assert_eq!(
            facts.url_full.as_deref(),
            Some("http://shop.example:8080/v1/items/9?q=1")
        );
        assert_eq!(facts.query.as_deref(), Some("q=1"));
        assert_eq!(facts.server_address.as_deref(), Some("shop.example"));
        assert_eq!(facts.server_port, Some(51000));
        assert_eq!(facts.client_address, None);
        assert_eq!(facts.protocol_version, "1.0");

        http_mut(&mut tx).host = None;
        tx.peer = Some(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9000)));
        let facts = facts_of(&tx, &routes(), false);
        assert_eq!(
            facts.url_full.as_deref(),
            Some("http://[::1]:9000/v1/items/9")
        );
        assert_eq!(facts.server_address.as_deref(), Some("::1"));
    }

    #[test]
    fn span_attributes_fit_the_space_reserved_for_them() {
        for kind in [SpanKind::Server, SpanKind::Client] {
            let mut tx = transaction(kind, "post", "/v1/items/9?q=1", 503);
            http_mut(&mut tx).response_body_size = Some(7);
            let attributes = facts_of(&tx, &routes(), true).into_span_attributes();
            // Every optional attribute of this kind is present, and none needed a reallocation.
            let expected = match kind {
                SpanKind::Server => 15,
                SpanKind::Client => 14,
            };
            assert_eq!(attributes.len(), expected, "{kind:?}: {attributes:?}");
            assert_eq!(attributes.capacity(), SPAN_ATTRIBUTES, "{kind:?}");
        }
    }

    #[test]
    fn error_status_table() {
        let table = [
            (SpanKind::Server, 200, None),
            (SpanKind::Server, 404, None),
            (SpanKind::Server, 500, Some("500")),
            (SpanKind::Server, 0, Some("_OTHER")),
            (SpanKind::Client, 302, None),
            (SpanKind::Client, 404, Some("404")),
            (SpanKind::Client, 503, Some("503")),
            (SpanKind::Client, 0, Some("_OTHER")),
        ];
        let clock = WallClock::with_offset(0);
        for (kind, status, error) in table {
            let tx = transaction(kind, "GET", "/", status);
            let facts = facts_of(&tx, &routes(), false);
            assert_eq!(facts.error_type.as_deref(), error, "{kind:?} {status}");
            let span = span_of(&tx, facts, &clock);
            let is_error = matches!(span.status, Status::Error { .. });
            assert_eq!(is_error, error.is_some(), "{kind:?} {status}");
            assert_eq!(
                attribute(&span.attributes, "http.response.status_code").is_some(),
                status != 0
            );
        }
    }

    #[test]
    fn unknown_methods_are_bounded() {
        let tx = transaction(SpanKind::Server, "PURGE", "/x", 200);
        let facts = facts_of(&tx, &RouteMatcher::default(), false);
        assert_eq!(facts.method, "_OTHER");
        assert_eq!(facts.span_name(), "HTTP /x");
        let facts = facts_of(&tx, &RouteMatcher::new(Vec::new(), Unmatched::Unset), false);
        assert_eq!(facts.span_name(), "HTTP");
        let connect = transaction(SpanKind::Client, "CONNECT", "db:5432", 200);
        let facts = facts_of(&connect, &RouteMatcher::default(), false);
        assert_eq!(facts.span_name(), "CONNECT");
        assert_eq!(facts.route, None);
    }
}
