//! The gRPC mapping: an HTTP/2 exchange with `content-type: application/grpc*` becomes an RPC
//! span and `rpc.{server,client}.call.duration`, instead of an HTTP one.
//!
//! Choices where the conventions leave room, and where they and OBI differ:
//! - Attributes are the ones OBI and most dashboards key on: `rpc.system` = `grpc`,
//!   `rpc.service` (`pkg.Service`), `rpc.method` (`Method`) and the integer
//!   `rpc.grpc.status_code`. Semantic conventions 1.38+ renamed them (`rpc.system.name`, a
//!   fully-qualified `rpc.method`, a string `rpc.response.status_code`); OBI puts the whole
//!   `:path` into `rpc.method` and the span name.
//! - The span name is `pkg.Service/Method`; a path that is unknown (an HPACK entry from before
//!   the sidecar joined the connection) or not of the form `/service/method` gives `grpc` and
//!   neither `rpc.service` nor `rpc.method`.
//! - Span status as OBI: a server span is an error for UNKNOWN, DEADLINE_EXCEEDED,
//!   UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS (the server's own faults), a client
//!   span for any status but OK.
//! - A call that ended without a `grpc-status` (a reset stream, a connection closed or refused
//!   by GOAWAY, a response without trailers) is an error on both sides: no
//!   `rpc.grpc.status_code`, `error.type` `_OTHER`, and the reason as the status description.
//!   OBI turns the HTTP status into a gRPC one there (below 400: OK) instead.
//! - `server.address` is the `:authority` host when sent, else the socket's address;
//!   `server.port` the socket's port (the server's), else the authority's.

use std::net::IpAddr;

use opentelemetry::trace::Status;
use opentelemetry_semantic_conventions::{attribute as semconv, metric as names};

use super::Semantics;
use super::attributes::Attributes;
use super::http::{Host, push_ip, split_host};
use super::metrics::{DURATION_BUCKETS, HistogramDef, MetricUnit};
use crate::protocol::http::{GrpcCall, HttpExchange};
use crate::transaction::{SpanKind, Transaction};

/// The attribute names OBI exports (deprecated in the conventions the crate follows, hence
/// spelt out).
pub const RPC_SYSTEM: &str = "rpc.system";
pub const RPC_SERVICE: &str = "rpc.service";
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";

/// The attributes of every gRPC metric series, with their Prometheus label names.
const LABELS: [(&str, &str); 4] = [
    (RPC_SYSTEM, "rpc_system"),
    (RPC_SERVICE, "rpc_service"),
    (semconv::RPC_METHOD, "rpc_method"),
    (RPC_GRPC_STATUS_CODE, "rpc_grpc_status_code"),
];

/// The gRPC histograms (OBI's duration buckets).
pub static SERVER_DURATION: HistogramDef = HistogramDef {
    name: names::RPC_SERVER_CALL_DURATION,
    prometheus_name: "rpc_server_call_duration",
    description: "Duration of RPC calls served",
    unit: MetricUnit::Seconds,
    buckets: &DURATION_BUCKETS,
    labels: &LABELS,
};
pub static CLIENT_DURATION: HistogramDef = HistogramDef {
    name: names::RPC_CLIENT_CALL_DURATION,
    prometheus_name: "rpc_client_call_duration",
    description: "Duration of RPC calls made",
    unit: MetricUnit::Seconds,
    buckets: &DURATION_BUCKETS,
    labels: &LABELS,
};

/// Every gRPC histogram, in the order they are registered.
pub static HISTOGRAMS: [&HistogramDef; 2] = [&SERVER_DURATION, &CLIENT_DURATION];

/// gRPC status codes a server span is an error for (OBI's list).
const SERVER_ERRORS: [u32; 6] = [
    2,  // UNKNOWN
    4,  // DEADLINE_EXCEEDED
    12, // UNIMPLEMENTED
    13, // INTERNAL
    14, // UNAVAILABLE
    15, // DATA_LOSS
];

/// Everything a gRPC call's span and metrics need, derived once, borrowing from the exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpcFacts<'a> {
    pub kind: SpanKind,
    /// `pkg.Service` and `Method` of `/pkg.Service/Method`, when the path is known.
    pub service: Option<&'a str>,
    pub method: Option<&'a str>,
    /// `grpc-status`, when the call ended with one.
    pub status: Option<u32>,
    /// Why the call ended without its response, when it did.
    pub aborted: Option<&'static str>,
    pub server_address: Option<Host<'a>>,
    pub server_port: Option<u16>,
    pub client_address: Option<IpAddr>,
    /// Seconds from the request's headers to the end of the response.
    pub duration_seconds: f64,
}

/// `pkg.Service` and `Method` out of a gRPC `:path`.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let valid = |part: &str| !part.is_empty() && !part.contains(['/', '?']);
    (valid(service) && valid(method)).then_some((service, method))
}

impl<'a> GrpcFacts<'a> {
    pub fn new(tx: &Transaction, http: &'a HttpExchange, call: GrpcCall) -> Self {
        let (service, method) = split_path(&http.target).unzip();
        let authority = http
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(split_host);
        let (server, client) = match tx.kind {
            SpanKind::Server => (tx.local, tx.peer),
            SpanKind::Client => (tx.peer, None),
        };
        Self {
            kind: tx.kind,
            service,
            method,
            status: call.status,
            aborted: http.aborted,
            server_address: authority
                .map(|(name, _)| Host::Name(name))
                .or_else(|| server.map(|a| Host::Ip(a.ip()))),
            server_port: server
                .map(|a| a.port())
                .or_else(|| authority.and_then(|(_, port)| port)),
            client_address: client.map(|a| a.ip()),
            duration_seconds: tx.end_ns.saturating_sub(tx.start_ns) as f64 / 1e9,
        }
    }

    /// Whether the call failed, for its side.
    pub fn is_error(&self) -> bool {
        match (self.status, self.kind) {
            (None, _) => true,
            (Some(status), SpanKind::Server) => SERVER_ERRORS.contains(&status),
            (Some(status), SpanKind::Client) => status != 0,
        }
    }
}

impl Semantics for GrpcFacts<'_> {
    fn span_name(&self, name: &mut String) {
        match (self.service, self.method) {
            (Some(service), Some(method)) => {
                name.push_str(service);
                name.push('/');
                name.push_str(method);
            }
            _ => name.push_str("grpc"),
        }
    }

    /// The status code says it all when there is one (no description then, as the conventions
    /// ask); otherwise the reason the call ended without one.
    fn span_status(&self) -> Status {
        match (self.status, self.aborted) {
            (Some(_), _) if self.is_error() => Status::error(""),
            (Some(_), _) => Status::Unset,
            (None, Some(reason)) => Status::error(reason),
            (None, None) => Status::error("no grpc-status"),
        }
    }

    fn metric_attributes(&self, attributes: &mut dyn Attributes) {
        attributes.str(RPC_SYSTEM, "grpc");
        if let Some(service) = self.service {
            attributes.str(RPC_SERVICE, service);
        }
        if let Some(method) = self.method {
            attributes.str(semconv::RPC_METHOD, method);
        }
        if let Some(status) = self.status {
            attributes.i64(RPC_GRPC_STATUS_CODE, i64::from(status));
        }
    }

    fn measurements(&self, record: &mut dyn FnMut(&'static HistogramDef, f64)) {
        let duration = match self.kind {
            SpanKind::Server => &SERVER_DURATION,
            SpanKind::Client => &CLIENT_DURATION,
        };
        record(duration, self.duration_seconds);
    }

    fn span_attributes(&self, attributes: &mut dyn Attributes) {
        self.metric_attributes(attributes);
        match self.server_address {
            Some(Host::Name(name)) => attributes.str(semconv::SERVER_ADDRESS, name),
            Some(Host::Ip(ip)) => {
                attributes.add_written(semconv::SERVER_ADDRESS, &mut |text| push_ip(text, ip));
            }
            None => {}
        }
        if let Some(port) = self.server_port {
            attributes.i64(semconv::SERVER_PORT, i64::from(port));
        }
        if let Some(ip) = self.client_address {
            attributes.add_written(semconv::CLIENT_ADDRESS, &mut |text| push_ip(text, ip));
        }
        if self.status.is_none() {
            attributes.str(semconv::ERROR_TYPE, "_OTHER");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::connection::testing::http_mut;
    use crate::protocol::http::HttpVersion;
    use crate::telemetry::http::tests::{name_of, span_attributes_of, transaction};
    use opentelemetry::{KeyValue, Value};

    /// A gRPC call of `kind` to `path` that ended with `status` (or was aborted without one).
    pub(crate) fn grpc_transaction(
        kind: SpanKind,
        path: &str,
        status: Option<u32>,
        aborted: Option<&'static str>,
    ) -> Transaction {
        let mut tx = transaction(kind, "POST", path, 200);
        let http = http_mut(&mut tx);
        http.version = HttpVersion::Http2;
        http.host = Some("greeter.shop:50051".to_owned());
        http.aborted = aborted;
        http.grpc = Some(GrpcCall { status });
        tx
    }

    fn facts_of(tx: &Transaction) -> GrpcFacts<'_> {
        let crate::transaction::Facts::Http(http) = &tx.facts else {
            panic!("not HTTP");
        };
        GrpcFacts::new(tx, http, http.grpc.unwrap_or_default())
    }

    fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn paths_split_into_service_and_method() {
        let table = [
            (
                "/helloworld.Greeter/SayHello",
                Some(("helloworld.Greeter", "SayHello")),
            ),
            ("/Echo/Echo", Some(("Echo", "Echo"))),
            ("/a.b.c.D/E", Some(("a.b.c.D", "E"))),
            ("", None),
            ("/", None),
            ("/only", None),
            ("//Method", None),
            ("/Service/", None),
            ("/a/b/c", None),
            ("/a/b?x", None),
            ("Service/Method", None),
        ];
        for (path, want) in table {
            assert_eq!(split_path(path), want, "{path}");
        }
    }

    #[test]
    fn server_span_attributes() {
        let tx = grpc_transaction(
            SpanKind::Server,
            "/helloworld.Greeter/SayHello",
            Some(0),
            None,
        );
        let facts = facts_of(&tx);
        assert_eq!(name_of(&facts), "helloworld.Greeter/SayHello");
        assert_eq!(facts.span_status(), Status::Unset);
        let attributes = span_attributes_of(&facts);
        let expect: [(&str, Value); 7] = [
            ("rpc.system", "grpc".into()),
            ("rpc.service", "helloworld.Greeter".into()),
            ("rpc.method", "SayHello".into()),
            ("rpc.grpc.status_code", 0.into()),
            ("server.address", "greeter.shop".into()),
            ("server.port", 8080.into()),
            ("client.address", "10.0.0.2".into()),
        ];
        assert_eq!(
            attributes,
            expect
                .iter()
                .map(|(k, v)| KeyValue::new(*k, v.clone()))
                .collect::<Vec<_>>()
        );
        let mut measured = Vec::new();
        facts.measurements(&mut |def, value| measured.push((def.name, value)));
        assert_eq!(measured, [("rpc.server.call.duration", 0.25)]);
    }

    #[test]
    fn client_span_attributes() {
        let mut tx = grpc_transaction(SpanKind::Client, "/pkg.Svc/Get", Some(5), None);
        http_mut(&mut tx).host = None;
        let facts = facts_of(&tx);
        let attributes = span_attributes_of(&facts);
        assert_eq!(get(&attributes, "server.address"), Some(&"10.0.0.2".into()));
        assert_eq!(get(&attributes, "server.port"), Some(&51000.into()));
        assert_eq!(get(&attributes, "client.address"), None);
        assert_eq!(get(&attributes, "rpc.grpc.status_code"), Some(&5.into()));
        assert_eq!(get(&attributes, "error.type"), None);
        let mut measured = Vec::new();
        facts.measurements(&mut |def, _| measured.push(def.name));
        assert_eq!(measured, ["rpc.client.call.duration"]);
        // Without a socket address, the authority's port.
        tx.peer = None;
        http_mut(&mut tx).host = Some("[::1]:9000".to_owned());
        let facts = facts_of(&tx);
        assert_eq!(facts.server_address, Some(Host::Name("::1")));
        assert_eq!(facts.server_port, Some(9000));
    }

    /// Every status code on both sides: OBI's server error list, any non-OK on clients.
    #[test]
    fn status_table() {
        let server_errors = [2, 4, 12, 13, 14, 15];
        for code in 0..=16 {
            for kind in [SpanKind::Server, SpanKind::Client] {
                let tx = grpc_transaction(kind, "/s.S/M", Some(code), None);
                let facts = facts_of(&tx);
                let error = match kind {
                    SpanKind::Server => server_errors.contains(&code),
                    SpanKind::Client => code != 0,
                };
                let want = if error {
                    Status::error("")
                } else {
                    Status::Unset
                };
                assert_eq!(facts.span_status(), want, "{kind:?} {code}");
                let attributes = span_attributes_of(&facts);
                assert_eq!(
                    get(&attributes, "rpc.grpc.status_code"),
                    Some(&i64::from(code).into())
                );
                assert_eq!(get(&attributes, "error.type"), None);
            }
        }
    }

    #[test]
    fn calls_without_a_status_are_errors() {
        let table = [
            (Some("stream reset"), "stream reset"),
            (Some("connection closed"), "connection closed"),
            (None, "no grpc-status"),
        ];
        for (aborted, description) in table {
            for kind in [SpanKind::Server, SpanKind::Client] {
                let tx = grpc_transaction(kind, "/s.S/M", None, aborted);
                let facts = facts_of(&tx);
                assert_eq!(
                    facts.span_status(),
                    Status::error(description),
                    "{kind:?} {aborted:?}"
                );
                let attributes = span_attributes_of(&facts);
                assert_eq!(get(&attributes, "error.type"), Some(&"_OTHER".into()));
                assert_eq!(get(&attributes, "rpc.grpc.status_code"), None);
                let mut metric = Vec::new();
                facts.metric_attributes(&mut metric);
                assert_eq!(metric.len(), 3, "{metric:?}");
            }
        }
    }

    #[test]
    fn unknown_paths_name_the_system() {
        for path in ["", "/health"] {
            let tx = grpc_transaction(SpanKind::Server, path, Some(0), None);
            let facts = facts_of(&tx);
            assert_eq!(name_of(&facts), "grpc");
            let attributes = span_attributes_of(&facts);
            assert_eq!(get(&attributes, "rpc.service"), None);
            assert_eq!(get(&attributes, "rpc.method"), None);
            assert_eq!(get(&attributes, "rpc.system"), Some(&"grpc".into()));
        }
    }
}
