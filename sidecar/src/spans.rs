//! From an [`HttpTransaction`] to OpenTelemetry: the HTTP facts both spans and metrics are made
//! of (semantic conventions), the span itself, the sampling decision and the clock conversion.
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind as OtelSpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample, SpanData};
use opentelemetry_semantic_conventions::attribute as semconv;

use crate::config::TraceSampler;
use crate::route::RouteMatcher;
use crate::transaction::{HttpTransaction, SpanKind};

/// Converts `CLOCK_MONOTONIC` nanoseconds (kernel timestamps) to wall-clock time with an offset
/// measured once, so that durations stay exact and spans of one process never go back in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, in nanoseconds.
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own; both clocks exist on every Linux,
    // so it cannot fail with valid arguments.
    unsafe { libc::clock_gettime(clock, &mut now) };
    i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec)
}

impl WallClock {
    /// Measures the offset now; the monotonic read sits between two realtime reads and the
    /// midpoint is used, so the error is half the (sub-microsecond) gap.
    pub fn measure() -> Self {
        let before = clock_ns(libc::CLOCK_REALTIME);
        let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
        let after = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: before + (after - before) / 2 - monotonic,
        }
    }

    /// A clock with a known offset (tests, replays).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The current `CLOCK_MONOTONIC` reading, in the kernel's units.
    pub fn monotonic_now_ns() -> u64 {
        u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }

    pub fn to_system_time(&self, monotonic_ns: u64) -> SystemTime {
        let wall = i128::from(monotonic_ns) + self.offset_ns;
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall).unwrap_or(0))
    }
}

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
    pub fn new(tx: &HttpTransaction, routes: &RouteMatcher, include_query: bool) -> Self {
        let known = KNOWN_METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(&tx.method));
        let (method, method_original) = match known {
            Some(known) if **known == tx.method => (Cow::Borrowed(*known), None),
            Some(known) => (Cow::Borrowed(*known), Some(tx.method.clone())),
            None => (Cow::Borrowed("_OTHER"), Some(tx.method.clone())),
        };
        let target = split_target(&tx.target);
        // Authority-form (CONNECT host:port) has no path to route.
        let route = if target.path.starts_with('/') || target.path == "*" {
            routes.route(target.path)
        } else {
            None
        };
        let host = tx.host.as_deref().or(target.authority);
        let (host_name, host_port) = match host {
            Some(host) if !host.trim().is_empty() => {
                let (name, port) = split_host(host);
                (Some(name), port)
            }
            _ => (None, None),
        };
        let is_error = match tx.kind {
            SpanKind::Server => tx.status == 0 || tx.status >= 500,
            SpanKind::Client => tx.status == 0 || tx.status >= 400,
        };
        let error_type = is_error.then(|| {
            if tx.status == 0 {
                "_OTHER".to_owned()
            } else {
                tx.status.to_string()
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
            status: tx.status,
            error_type,
            server_address,
            server_port,
            client_address,
            client_port,
            url_full,
            protocol_version: if tx.minor_version == 0 { "1.0" } else { "1.1" },
            request_body_size: tx.request_body_size,
            response_body_size: tx.response_body_size,
            duration_seconds: tx.end_ns.saturating_sub(tx.start_ns) as f64 / 1e9,
        }
    }

    /// `METHOD route`, or just the method when there is no route (`HTTP` for `_OTHER`, as the
    /// conventions ask).
    pub fn span_name(&self) -> String {
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

    /// Metric attributes: bounded-cardinality ones only.
    pub fn metric_attributes(&self) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(METRIC_ATTRIBUTES);
        self.push_metric_attributes(&mut attributes);
        attributes
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

    /// Span attributes. Consumes the facts: their strings move into the attributes (spans are
    /// built once the metrics are recorded), and the vector is allocated once at its final size.
    pub fn into_span_attributes(self) -> Vec<KeyValue> {
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

    pub fn is_error(&self) -> bool {
        self.error_type.is_some()
    }
}

/// The SDK sampler for a configured [`TraceSampler`].
pub fn sampler(config: TraceSampler) -> Sampler {
    match config {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TraceSampler::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TraceSampler::ParentBasedTraceIdRatio(ratio) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

fn otel_kind(kind: SpanKind) -> OtelSpanKind {
    match kind {
        SpanKind::Server => OtelSpanKind::Server,
        SpanKind::Client => OtelSpanKind::Client,
    }
}

/// Whether the span is kept: the sampler sees the transaction's parent (with its sampled flag)
/// as a remote parent, so `parentbased_*` samplers follow the caller's decision.
pub fn is_sampled(sampler: &Sampler, tx: &HttpTransaction, name: &str) -> bool {
    let trace_id = TraceId::from_bytes(tx.trace.trace_id);
    let parent = tx.trace.parent_span_id.map(|parent| {
        let flags = if tx.trace.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            SpanId::from_bytes(parent),
            flags,
            true,
            TraceState::default(),
        ))
    });
    let result = sampler.should_sample(
        parent.as_ref(),
        trace_id,
        name,
        &otel_kind(tx.kind),
        &[],
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

/// The scope every span and metric of the sidecar is reported under.
pub fn instrumentation_scope() -> InstrumentationScope {
    InstrumentationScope::builder("obi-sidecar")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(opentelemetry_semantic_conventions::SCHEMA_URL)
        .build()
}

/// The span of a transaction, with ids and parent exactly as the tracker assigned them. `name`
/// is the facts' [`HttpFacts::span_name`], which the caller has already made for the sampler.
pub fn span_data(
    tx: &HttpTransaction,
    name: String,
    facts: HttpFacts,
    clock: &WallClock,
    scope: &InstrumentationScope,
) -> SpanData {
    let status = if facts.status == 0 {
        Status::error("no response")
    } else if facts.is_error() {
        // The status code says it all; the conventions ask for no description.
        Status::error("")
    } else {
        Status::Unset
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(tx.trace.trace_id),
            SpanId::from_bytes(tx.trace.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: tx
            .trace
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes),
        // A server span's parent is the caller's span, in another process; a client span's
        // is the server span it was sent for, or a span of the app itself.
        parent_span_is_remote: tx.kind == SpanKind::Server && tx.trace.parent_span_id.is_some(),
        span_kind: otel_kind(tx.kind),
        name: name.into(),
        start_time: clock.to_system_time(tx.start_ns),
        end_time: clock.to_system_time(tx.end_ns.max(tx.start_ns)),
        attributes: facts.into_span_attributes(),
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::route::{RouteMatcher, Unmatched};
    use crate::transaction::TraceContext;
    use opentelemetry::Value;

    pub(crate) fn transaction(
        kind: SpanKind,
        method: &str,
        target: &str,
        status: u16,
    ) -> HttpTransaction {
        HttpTransaction {
            kind,
            pid: 42,
            tid: 43,
            method: method.to_owned(),
            target: target.to_owned(),
            host: Some("shop.example:8080".to_owned()),
            minor_version: 1,
            status,
            request_body_size: Some(12),
            response_body_size: None,
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
        }
    }

    /// The span of `facts` (made from `tx`), as the exporter builds it.
    pub(crate) fn span_of(tx: &HttpTransaction, facts: HttpFacts, clock: &WallClock) -> SpanData {
        span_data(
            tx,
            facts.span_name(),
            facts,
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

    fn routes() -> RouteMatcher {
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
        let facts = HttpFacts::new(&tx, &routes(), false);
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
        tx.minor_version = 0;
        let facts = HttpFacts::new(&tx, &routes(), true);
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

        tx.host = None;
        tx.peer = Some(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9000)));
        let facts = HttpFacts::new(&tx, &routes(), false);
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
            tx.response_body_size = Some(7);
            let attributes = HttpFacts::new(&tx, &routes(), true).into_span_attributes();
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
            let facts = HttpFacts::new(&tx, &routes(), false);
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
        let facts = HttpFacts::new(&tx, &RouteMatcher::default(), false);
        assert_eq!(facts.method, "_OTHER");
        assert_eq!(facts.span_name(), "HTTP /x");
        let facts = HttpFacts::new(&tx, &RouteMatcher::new(Vec::new(), Unmatched::Unset), false);
        assert_eq!(facts.span_name(), "HTTP");
        let connect = transaction(SpanKind::Client, "CONNECT", "db:5432", 200);
        let facts = HttpFacts::new(&connect, &RouteMatcher::default(), false);
        assert_eq!(facts.span_name(), "CONNECT");
        assert_eq!(facts.route, None);
    }

    #[test]
    fn span_ids_and_times_come_from_the_transaction() {
        let tx = transaction(SpanKind::Server, "GET", "/", 200);
        let facts = HttpFacts::new(&tx, &routes(), false);
        assert!((facts.duration_seconds - 0.25).abs() < 1e-12);
        let clock = WallClock::with_offset(1_700_000_000_000_000_000);
        let span = span_of(&tx, facts, &clock);
        assert_eq!(span.span_context.trace_id().to_bytes(), [0x11; 16]);
        assert_eq!(span.span_context.span_id().to_bytes(), [0x22; 8]);
        assert_eq!(span.parent_span_id.to_bytes(), [0x33; 8]);
        assert_eq!(span.span_kind, OtelSpanKind::Server);
        assert_eq!(
            span.start_time,
            UNIX_EPOCH + Duration::from_nanos(1_700_000_001_000_000_000)
        );
        assert_eq!(
            span.end_time.duration_since(span.start_time).ok(),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn only_a_server_span_has_a_remote_parent() {
        let clock = WallClock::with_offset(0);
        let table = [
            (SpanKind::Server, true, true),
            (SpanKind::Server, false, false),
            (SpanKind::Client, true, false),
            (SpanKind::Client, false, false),
        ];
        for (kind, parent, remote) in table {
            let mut tx = transaction(kind, "GET", "/", 200);
            if !parent {
                tx.trace.parent_span_id = None;
            }
            let facts = HttpFacts::new(&tx, &routes(), false);
            let span = span_of(&tx, facts, &clock);
            assert_eq!(
                span.parent_span_is_remote, remote,
                "{kind:?} parent {parent}"
            );
        }
    }

    #[test]
    fn measured_clock_is_close_to_now() {
        let clock = WallClock::measure();
        let converted = clock.to_system_time(WallClock::monotonic_now_ns());
        let now = SystemTime::now();
        let skew = now
            .duration_since(converted)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap_or_default();
        assert!(skew < Duration::from_millis(50), "{skew:?}");
    }

    #[test]
    fn sampling_table() {
        let mut root = transaction(SpanKind::Server, "GET", "/", 200);
        root.trace.parent_span_id = None;
        let mut sampled_child = root.clone();
        sampled_child.trace.parent_span_id = Some([1; 8]);
        let mut unsampled_child = sampled_child.clone();
        unsampled_child.trace.sampled = false;
        let table = [
            (TraceSampler::AlwaysOn, [true, true, true]),
            (TraceSampler::AlwaysOff, [false, false, false]),
            (TraceSampler::ParentBasedAlwaysOn, [true, true, false]),
            (TraceSampler::ParentBasedAlwaysOff, [false, true, false]),
            (
                TraceSampler::ParentBasedTraceIdRatio(0.0),
                [false, true, false],
            ),
            (TraceSampler::TraceIdRatio(1.0), [true, true, true]),
            (TraceSampler::TraceIdRatio(0.0), [false, false, false]),
        ];
        for (config, want) in table {
            let sampler = sampler(config);
            let got =
                [&root, &sampled_child, &unsampled_child].map(|tx| is_sampled(&sampler, tx, "GET"));
            assert_eq!(got, want, "{config:?}");
        }
    }
}
