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

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use opentelemetry::trace::Status;
use opentelemetry_semantic_conventions::{attribute as semconv, metric as names};

use super::Semantics;
use super::attributes::Attributes;
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

/// A server address: the `Host` header's host, or a socket's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    Name(&'a str),
    Ip(IpAddr),
}

/// The authority of a client span's `url.full`: the `Host` header as sent, or the peer's
/// socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority<'a> {
    Header(&'a str),
    Socket(SocketAddr),
}

/// Everything spans and metrics need from one transaction, derived once. It borrows from the
/// transaction (and the route from the matcher or the caller's scratch buffer): deriving it
/// allocates nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpFacts<'a> {
    pub kind: SpanKind,
    /// Normalized: a standard method, or `_OTHER`.
    pub method: &'static str,
    /// The method as sent, when it is not standard.
    pub method_original: Option<&'a str>,
    pub path: &'a str,
    /// Only when query strings are exported.
    pub query: Option<&'a str>,
    pub route: Option<&'a str>,
    /// 0: no response.
    pub status: u16,
    /// Why the exchange ended before its response did (HTTP/2 resets and the like).
    pub aborted: Option<&'static str>,
    pub server_address: Option<Host<'a>>,
    pub server_port: Option<u16>,
    pub client_address: Option<IpAddr>,
    pub client_port: Option<u16>,
    /// Client spans only: the authority `url.full` is made with.
    pub url_authority: Option<Authority<'a>>,
    pub protocol_version: &'static str,
    pub request_body_size: Option<u64>,
    pub response_body_size: Option<u64>,
    /// Seconds from the first request byte to the last response byte.
    pub duration_seconds: f64,
}

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
pub(crate) fn split_host(authority: &str) -> (&str, Option<u16>) {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host, port);
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (authority, None),
    }
}

/// Appends a number in decimal.
pub(crate) fn push_decimal(text: &mut String, value: u16) {
    let mut digits = [0u8; 5];
    let mut n = value;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        text.push(char::from(digit));
    }
}

/// Appends an address as text. IPv4 (nearly every request's client address) is written digit
/// by digit: `Display` goes through the formatting machinery, which showed up in profiles at
/// one or two addresses per request.
pub(crate) fn push_ip(text: &mut String, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        // Writing into a String cannot fail.
        let _ = write!(text, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(text, u16::from(octet));
    }
}

/// Appends `ip:port`, with an IPv6 address in brackets.
fn push_socket_address(text: &mut String, address: SocketAddr) {
    let bracketed = address.is_ipv6();
    if bracketed {
        text.push('[');
    }
    push_ip(text, address.ip());
    if bracketed {
        text.push(']');
    }
    text.push(':');
    push_decimal(text, address.port());
}

impl<'a> HttpFacts<'a> {
    /// The facts of `http`, the exchange of `tx`; a heuristic route is written into
    /// `route_scratch`, which the caller reuses from one transaction to the next.
    pub fn new(
        tx: &Transaction,
        http: &'a HttpExchange,
        routes: &'a RouteMatcher,
        include_query: bool,
        route_scratch: &'a mut String,
    ) -> Self {
        let known = KNOWN_METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(&http.method));
        let (method, method_original) = match known {
            Some(known) if **known == http.method => (*known, None),
            Some(known) => (*known, Some(http.method.as_str())),
            // An HTTP/2 method the capture could not decode stays unknown: `_OTHER`, without
            // an original to show.
            None => (
                "_OTHER",
                (!http.method.is_empty()).then_some(http.method.as_str()),
            ),
        };
        let target = split_target(&http.target);
        // Authority-form (CONNECT host:port) has no path to route.
        let route = if target.path.starts_with('/') || target.path == "*" {
            routes.route(target.path, route_scratch)
        } else {
            None
        };
        let host = http.host.as_deref().or(target.authority);
        let (host_name, host_port) = match host {
            Some(host) if !host.trim().is_empty() => {
                let (name, port) = split_host(host);
                (Some(Host::Name(name)), port)
            }
            _ => (None, None),
        };
        let query = target.query.filter(|_| include_query);
        let (server_address, server_port, client_address, client_port, url_authority) =
            match tx.kind {
                SpanKind::Server => (
                    host_name.or_else(|| tx.local.map(|a| Host::Ip(a.ip()))),
                    tx.local.map(|a| a.port()).or(host_port).or(Some(80)),
                    tx.peer.map(|a| a.ip()),
                    tx.peer.map(|a| a.port()),
                    None,
                ),
                SpanKind::Client => (
                    host_name.or_else(|| tx.peer.map(|a| Host::Ip(a.ip()))),
                    tx.peer.map(|a| a.port()).or(host_port).or(Some(80)),
                    None,
                    None,
                    host.map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(Authority::Header)
                        .or_else(|| tx.peer.map(Authority::Socket)),
                ),
            };
        Self {
            kind: tx.kind,
            method,
            method_original,
            path: target.path,
            query,
            route,
            status: http.status,
            aborted: http.aborted,
            server_address,
            server_port,
            client_address,
            client_port,
            url_authority,
            protocol_version: http.version.as_str(),
            request_body_size: http.request_body_size,
            response_body_size: http.response_body_size,
            duration_seconds: tx.end_ns.saturating_sub(tx.start_ns) as f64 / 1e9,
        }
    }

    /// Whether the exchange is an error: no response, or an error status for its side.
    pub fn is_error(&self) -> bool {
        self.status_is_error() || self.aborted.is_some()
    }

    /// The status code makes the exchange an error (none at all included).
    fn status_is_error(&self) -> bool {
        match self.kind {
            SpanKind::Server => self.status == 0 || self.status >= 500,
            SpanKind::Client => self.status == 0 || self.status >= 400,
        }
    }

    /// `url.full` of a client span: `http://authority/path[?query]`.
    fn write_url_full(&self, authority: Authority<'_>, text: &mut String) {
        text.push_str("http://");
        match authority {
            Authority::Header(header) => text.push_str(header),
            Authority::Socket(address) => push_socket_address(text, address),
        }
        text.push_str(self.path);
        if let Some(query) = self.query {
            text.push('?');
            text.push_str(query);
        }
    }
}

impl Semantics for HttpFacts<'_> {
    /// `METHOD route`, or just the method when there is no route (`HTTP` for `_OTHER`, as the
    /// conventions ask).
    fn span_name(&self, name: &mut String) {
        name.push_str(if self.method == "_OTHER" {
            "HTTP"
        } else {
            self.method
        });
        if let Some(route) = self.route {
            name.push(' ');
            name.push_str(route);
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
    fn metric_attributes(&self, attributes: &mut dyn Attributes) {
        attributes.str(semconv::HTTP_REQUEST_METHOD, self.method);
        if self.status != 0 {
            attributes.i64(semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(self.status));
        }
        if let Some(route) = self.route {
            attributes.str(semconv::HTTP_ROUTE, route);
        }
        if let Some(port) = self.server_port {
            attributes.i64(semconv::SERVER_PORT, i64::from(port));
        }
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

    /// Span attributes: the metric ones first, then the rest in a fixed order.
    fn span_attributes(&self, attributes: &mut dyn Attributes) {
        self.metric_attributes(attributes);
        // Empty: an HTTP/2 `:path` the capture could not decode, which is never guessed.
        if !self.path.is_empty() {
            attributes.str(semconv::URL_PATH, self.path);
        }
        attributes.str(semconv::URL_SCHEME, "http");
        attributes.str(semconv::NETWORK_PROTOCOL_VERSION, self.protocol_version);
        if let Some(method) = self.method_original {
            attributes.str(semconv::HTTP_REQUEST_METHOD_ORIGINAL, method);
        }
        if let Some(query) = self.query {
            attributes.str(semconv::URL_QUERY, query);
        }
        match self.server_address {
            Some(Host::Name(name)) => attributes.str(semconv::SERVER_ADDRESS, name),
            Some(Host::Ip(ip)) => {
                attributes.add_written(semconv::SERVER_ADDRESS, &mut |text| push_ip(text, ip));
            }
            None => {}
        }
        if let Some(ip) = self.client_address {
            attributes.add_written(semconv::CLIENT_ADDRESS, &mut |text| push_ip(text, ip));
        }
        if let Some(authority) = self.url_authority {
            attributes.add_written(semconv::URL_FULL, &mut |text| {
                self.write_url_full(authority, text);
            });
        }
        if self.is_error() {
            attributes.add_written(semconv::ERROR_TYPE, &mut |text| match self.status {
                status if status != 0 && self.status_is_error() => push_decimal(text, status),
                _ => text.push_str("_OTHER"),
            });
        }
        if let Some(port) = self.client_port {
            attributes.i64(semconv::CLIENT_PORT, i64::from(port));
        }
        let sizes = [
            (semconv::HTTP_REQUEST_BODY_SIZE, self.request_body_size),
            (semconv::HTTP_RESPONSE_BODY_SIZE, self.response_body_size),
        ];
        for (key, size) in sizes {
            if let Some(size) = size {
                attributes.i64(key, i64::try_from(size).unwrap_or(i64::MAX));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::connection::testing::{http, http_mut};
    use crate::protocol::http::HttpVersion;
    use crate::telemetry::Semantics;
    use crate::telemetry::route::Unmatched;
    use crate::transaction::{Facts, TraceContext};
    use opentelemetry::trace::Status;
    use opentelemetry::{KeyValue, Value};

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

    pub(crate) fn facts_of<'a>(
        tx: &'a Transaction,
        routes: &'a RouteMatcher,
        include_query: bool,
        scratch: &'a mut String,
    ) -> HttpFacts<'a> {
        HttpFacts::new(tx, http(tx), routes, include_query, scratch)
    }

    pub(crate) fn name_of(facts: &impl Semantics) -> String {
        let mut name = String::new();
        facts.span_name(&mut name);
        name
    }

    pub(crate) fn span_attributes_of(facts: &impl Semantics) -> Vec<KeyValue> {
        let mut attributes = Vec::new();
        facts.span_attributes(&mut attributes);
        attributes
    }

    fn metric_attributes_of(facts: &impl Semantics) -> Vec<KeyValue> {
        let mut attributes = Vec::new();
        facts.metric_attributes(&mut attributes);
        attributes
    }

    fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
        attribute(attributes, key).map(|v| v.as_str().into_owned())
    }

    pub(crate) fn routes() -> RouteMatcher {
        let patterns = RouteMatcher::parse_patterns("V", "/users/{id}").unwrap_or_default();
        RouteMatcher::new(patterns, Unmatched::Heuristic)
    }

    #[test]
    fn addresses_and_numbers_as_display_writes_them() {
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
            let mut written = String::new();
            push_ip(&mut written, ip);
            assert_eq!(written, ip.to_string(), "{text}");
            for port in [0, 9, 80, 65535] {
                let address = SocketAddr::new(ip, port);
                let mut written = String::new();
                push_socket_address(&mut written, address);
                assert_eq!(written, address.to_string(), "{address}");
            }
        }
        for n in [0, 7, 10, 404, 9999, 10000, 65535] {
            let mut written = String::new();
            push_decimal(&mut written, n);
            assert_eq!(written, n.to_string());
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
        for (authority, want) in hosts {
            assert_eq!(split_host(authority), want, "{authority}");
        }
    }

    #[test]
    fn server_span_facts_and_attributes() {
        let tx = transaction(SpanKind::Server, "GET", "/users/42?token=secret", 200);
        let (routes, mut scratch) = (routes(), String::new());
        let facts = facts_of(&tx, &routes, false, &mut scratch);
        assert_eq!(name_of(&facts), "GET /users/{id}");
        assert!(!facts.is_error());
        assert_eq!(metric_attributes_of(&facts).len(), 4);
        let attributes = span_attributes_of(&facts);
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
        let (routes, mut scratch) = (routes(), String::new());
        let facts = facts_of(&tx, &routes, true, &mut scratch);
        assert_eq!(facts.method, "POST");
        assert_eq!(facts.method_original, Some("post"));
        assert_eq!(name_of(&facts), "POST /v1/items/*");
        let attributes = span_attributes_of(&facts);
        let get = |key| string(&attributes, key);
        assert_eq!(get("error.type").as_deref(), Some("404"));
        assert_eq!(
            get("url.full").as_deref(),
            Some("http://shop.example:8080/v1/items/9?q=1")
        );
        assert_eq!(get("url.query").as_deref(), Some("q=1"));
        assert_eq!(get("server.address").as_deref(), Some("shop.example"));
        assert_eq!(facts.server_port, Some(51000));
        assert_eq!(get("client.address"), None);
        assert_eq!(facts.protocol_version, "1.0");

        http_mut(&mut tx).host = None;
        tx.peer = Some(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9000)));
        let facts = facts_of(&tx, &routes, false, &mut scratch);
        let attributes = span_attributes_of(&facts);
        assert_eq!(
            string(&attributes, "url.full").as_deref(),
            Some("http://[::1]:9000/v1/items/9")
        );
        assert_eq!(
            string(&attributes, "server.address").as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn every_optional_attribute() {
        for kind in [SpanKind::Server, SpanKind::Client] {
            let mut tx = transaction(kind, "post", "/v1/items/9?q=1", 503);
            http_mut(&mut tx).response_body_size = Some(7);
            let (routes, mut scratch) = (routes(), String::new());
            let attributes = span_attributes_of(&facts_of(&tx, &routes, true, &mut scratch));
            let expected = match kind {
                SpanKind::Server => 15,
                SpanKind::Client => 14,
            };
            assert_eq!(attributes.len(), expected, "{kind:?}: {attributes:?}");
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
        let (routes, mut scratch) = (routes(), String::new());
        for (kind, status, error) in table {
            let tx = transaction(kind, "GET", "/", status);
            let facts = facts_of(&tx, &routes, false, &mut scratch);
            let attributes = span_attributes_of(&facts);
            assert_eq!(
                string(&attributes, "error.type").as_deref(),
                error,
                "{kind:?} {status}"
            );
            let is_error = matches!(facts.span_status(), Status::Error { .. });
            assert_eq!(is_error, error.is_some(), "{kind:?} {status}");
            assert_eq!(
                attribute(&attributes, "http.response.status_code").is_some(),
                status != 0
            );
        }
    }

    #[test]
    fn unknown_methods_are_bounded() {
        let mut scratch = String::new();
        let tx = transaction(SpanKind::Server, "PURGE", "/x", 200);
        let default_routes = RouteMatcher::default();
        let facts = facts_of(&tx, &default_routes, false, &mut scratch);
        assert_eq!(facts.method, "_OTHER");
        assert_eq!(name_of(&facts), "HTTP /x");
        let unset = RouteMatcher::new(Vec::new(), Unmatched::Unset);
        let facts = facts_of(&tx, &unset, false, &mut scratch);
        assert_eq!(name_of(&facts), "HTTP");
        let connect = transaction(SpanKind::Client, "CONNECT", "db:5432", 200);
        let facts = facts_of(&connect, &default_routes, false, &mut scratch);
        assert_eq!(name_of(&facts), "CONNECT");
        assert_eq!(facts.route, None);
    }
}
