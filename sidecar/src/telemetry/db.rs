//! The database mapping: from a database call (PostgreSQL, MySQL/MariaDB, Redis) to the facts its
//! span and its metrics are made of, following the semantic conventions and OBI's choices.
//!
//! Choices where the conventions leave room:
//! - The span name is `{db.operation.name} {db.collection.name}`, else the operation, else the
//!   system's name; operations come from a fixed list of SQL keywords (or the Redis command), so
//!   span names and metric series stay bounded.
//! - `db.query.text` only with `OTEL_EBPF_DB_INCLUDE_QUERY_TEXT`, and then with its literals
//!   replaced by `?` (Redis: the command, then a `?` per argument).
//! - A call is an error when the server answered with one (`error.type` is its code, also in
//!   `db.response.status_code`), or when no answer came (`error.type` `_OTHER`).
//! - `db.server.operation.duration` is the server-side counterpart of
//!   `db.client.operation.duration`, for SERVER spans of an instrumented database.

use std::borrow::Cow;

use opentelemetry::trace::Status;
use opentelemetry_semantic_conventions::{attribute as semconv, metric as names};

use super::Semantics;
use super::attributes::Attributes;
use super::metrics::{DURATION_BUCKETS, HistogramDef, MetricUnit};
use crate::protocol::db::{DbCall, DbOutcome, DbSystem};
use crate::protocol::sql;
use crate::transaction::{SpanKind, Transaction};

/// The attributes of every database metric series, with their Prometheus label names.
const LABELS: [(&str, &str); 5] = [
    (semconv::DB_SYSTEM_NAME, "db_system_name"),
    (semconv::DB_OPERATION_NAME, "db_operation_name"),
    (semconv::DB_COLLECTION_NAME, "db_collection_name"),
    (semconv::DB_NAMESPACE, "db_namespace"),
    (semconv::ERROR_TYPE, "error_type"),
];

/// The database histograms (same buckets as the HTTP durations).
pub static CLIENT_DURATION: HistogramDef = HistogramDef {
    name: names::DB_CLIENT_OPERATION_DURATION,
    prometheus_name: "db_client_operation_duration",
    description: "Duration of database client operations",
    unit: MetricUnit::Seconds,
    buckets: &DURATION_BUCKETS,
    labels: &LABELS,
};
pub static SERVER_DURATION: HistogramDef = HistogramDef {
    name: "db.server.operation.duration",
    prometheus_name: "db_server_operation_duration",
    description: "Duration of database operations, as the database server handled them",
    unit: MetricUnit::Seconds,
    buckets: &DURATION_BUCKETS,
    labels: &LABELS,
};

/// Every database histogram, in the order they are registered.
pub static HISTOGRAMS: [&HistogramDef; 2] = [&CLIENT_DURATION, &SERVER_DURATION];

/// Everything spans and metrics need from one database call, derived once.
#[derive(Clone, Debug, PartialEq)]
pub struct DbFacts {
    pub kind: SpanKind,
    pub system: DbSystem,
    pub operation: Option<Cow<'static, str>>,
    pub collection: Option<String>,
    pub namespace: Option<String>,
    /// Sanitized; only when query text is exported.
    pub query_text: Option<String>,
    /// The server's error code, when it answered with an error.
    pub status_code: Option<String>,
    /// `error.type`, set when the call failed.
    pub error_type: Option<String>,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    pub duration_seconds: f64,
}

impl DbFacts {
    pub fn new(tx: &Transaction, call: &DbCall, include_query_text: bool) -> Self {
        let dialect = call.system.dialect();
        let summary = match (&call.statement, dialect) {
            (Some(text), Some(dialect)) => sql::summarize(text, dialect, call.truncated),
            _ => sql::Summary::default(),
        };
        let operation = summary
            .operation
            .map(Cow::Borrowed)
            .or_else(|| call.operation.clone().map(Cow::Owned));
        let query_text = include_query_text
            .then(|| match (&call.statement, dialect) {
                (Some(text), Some(dialect)) => Some(sql::sanitize(text, dialect)),
                (None, None) => call.operation.as_ref().map(|command| {
                    let mut text =
                        String::with_capacity(command.len() + 2 * call.arguments as usize);
                    text.push_str(command);
                    for _ in 0..call.arguments.min(64) {
                        text.push_str(" ?");
                    }
                    text
                }),
                _ => None,
            })
            .flatten();
        let (status_code, error_type) = match &call.outcome {
            DbOutcome::Ok => (None, None),
            DbOutcome::Error(code) if code.is_empty() => (None, Some("_OTHER".to_owned())),
            DbOutcome::Error(code) => (Some(code.clone()), Some(code.clone())),
            DbOutcome::NoResponse => (None, Some("_OTHER".to_owned())),
        };
        // The server is the peer of a client, and the instrumented process itself otherwise.
        let server = match tx.kind {
            SpanKind::Client => tx.peer,
            SpanKind::Server => tx.local,
        };
        Self {
            kind: tx.kind,
            system: call.system,
            operation,
            collection: summary.collection,
            namespace: call.namespace.as_deref().map(str::to_owned),
            query_text,
            status_code,
            error_type,
            server_address: server.map(|a| a.ip().to_string()),
            server_port: server.map(|a| a.port()),
            duration_seconds: tx.end_ns.saturating_sub(tx.start_ns) as f64 / 1e9,
        }
    }

    fn add_metric_attributes(&self, attributes: &mut dyn Attributes) {
        attributes.str(semconv::DB_SYSTEM_NAME, self.system.as_str());
        let optional = [
            (semconv::DB_OPERATION_NAME, self.operation.as_deref()),
            (semconv::DB_COLLECTION_NAME, self.collection.as_deref()),
            (semconv::DB_NAMESPACE, self.namespace.as_deref()),
            (semconv::ERROR_TYPE, self.error_type.as_deref()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.str(key, value);
            }
        }
    }

    pub fn is_error(&self) -> bool {
        self.error_type.is_some()
    }
}

impl Semantics for DbFacts {
    fn span_name(&self, name: &mut String) {
        match (&self.operation, &self.collection) {
            (Some(operation), Some(collection)) => {
                name.push_str(operation);
                name.push(' ');
                name.push_str(collection);
            }
            (Some(operation), None) => name.push_str(operation),
            (None, _) => name.push_str(self.system.as_str()),
        }
    }

    fn span_status(&self) -> Status {
        match (&self.error_type, &self.status_code) {
            (None, _) => Status::Unset,
            (Some(_), Some(_)) => Status::error(""),
            (Some(_), None) => Status::error("no response"),
        }
    }

    fn metric_attributes(&self, attributes: &mut dyn Attributes) {
        self.add_metric_attributes(attributes);
    }

    fn measurements(&self, record: &mut dyn FnMut(&'static HistogramDef, f64)) {
        let duration = match self.kind {
            SpanKind::Client => &CLIENT_DURATION,
            SpanKind::Server => &SERVER_DURATION,
        };
        record(duration, self.duration_seconds);
    }

    fn span_attributes(&self, attributes: &mut dyn Attributes) {
        self.add_metric_attributes(attributes);
        if let Some(address) = &self.server_address {
            attributes.str(semconv::SERVER_ADDRESS, address);
        }
        if let Some(port) = self.server_port {
            attributes.i64(semconv::SERVER_PORT, i64::from(port));
        }
        if let Some(code) = &self.status_code {
            attributes.str(semconv::DB_RESPONSE_STATUS_CODE, code);
        }
        if let Some(text) = &self.query_text {
            attributes.str(semconv::DB_QUERY_TEXT, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::transaction::{Facts, TraceContext};
    use opentelemetry::{KeyValue, Value};

    fn transaction(kind: SpanKind, call: DbCall) -> Transaction {
        Transaction {
            kind,
            pid: 42,
            tid: 43,
            start_ns: 1_000_000_000,
            end_ns: 1_002_000_000,
            local: Some(SocketAddr::from(([10, 0, 0, 1], 5432))),
            peer: Some(SocketAddr::from(([10, 0, 0, 2], 41000))),
            tls: false,
            trace: TraceContext {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent_span_id: None,
                sampled: true,
            },
            facts: Facts::Db(call),
        }
    }

    fn sql_call(system: DbSystem, text: &str, outcome: DbOutcome) -> DbCall {
        let mut call = DbCall::new(system, outcome);
        call.statement = Some(Arc::from(text));
        call.namespace = Some(Arc::from("shop"));
        call
    }

    fn facts(kind: SpanKind, call: DbCall, include: bool) -> DbFacts {
        let tx = transaction(kind, call);
        let Facts::Db(call) = &tx.facts else {
            unreachable!("built as a database call")
        };
        DbFacts::new(&tx, call, include)
    }

    impl DbFacts {
        fn name(&self) -> String {
            let mut name = String::new();
            self.span_name(&mut name);
            name
        }

        fn metric_kv(&self) -> Vec<KeyValue> {
            let mut attributes = Vec::new();
            self.metric_attributes(&mut attributes);
            attributes
        }

        fn span_kv(&self) -> Vec<KeyValue> {
            let mut attributes = Vec::new();
            self.span_attributes(&mut attributes);
            attributes
        }
    }

    fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn client_sql_span() {
        let call = sql_call(
            DbSystem::Postgresql,
            "SELECT name FROM users WHERE id = 42",
            DbOutcome::Ok,
        );
        let client = facts(SpanKind::Client, call, false);
        assert_eq!(client.name(), "SELECT users");
        assert_eq!(client.span_status(), Status::Unset);
        assert_eq!(client.metric_kv().len(), 4);
        let mut recorded = Vec::new();
        client.measurements(&mut |def, value| recorded.push((def.name, value)));
        assert_eq!(recorded, vec![("db.client.operation.duration", 0.002)]);
        let attributes = client.span_kv();
        let expect: [(&str, Value); 6] = [
            ("db.system.name", "postgresql".into()),
            ("db.operation.name", "SELECT".into()),
            ("db.collection.name", "users".into()),
            ("db.namespace", "shop".into()),
            ("server.address", "10.0.0.2".into()),
            ("server.port", 41000.into()),
        ];
        for (key, value) in &expect {
            assert_eq!(attribute(&attributes, key), Some(value), "{key}");
        }
        assert_eq!(attributes.len(), expect.len(), "{attributes:?}");
    }

    #[test]
    fn query_text_only_when_enabled_and_sanitized() {
        let text = "UPDATE accounts SET balance = 100 WHERE owner = 'bob'";
        let call = sql_call(DbSystem::Mariadb, text, DbOutcome::Ok);
        let server = facts(SpanKind::Server, call.clone(), true);
        assert_eq!(server.name(), "UPDATE accounts");
        assert_eq!(server.server_port, Some(5432));
        let mut recorded = Vec::new();
        server.measurements(&mut |def, _| recorded.push(def.prometheus_name));
        assert_eq!(recorded, vec!["db_server_operation_duration"]);
        let attributes = server.span_kv();
        assert_eq!(
            attribute(&attributes, "db.query.text"),
            Some(&"UPDATE accounts SET balance = ? WHERE owner = ?".into())
        );
        assert!(!format!("{attributes:?}").contains("bob"));
        let attributes = facts(SpanKind::Server, call, false).span_kv();
        assert_eq!(attribute(&attributes, "db.query.text"), None);
    }

    #[test]
    fn errors_and_names_without_text() {
        let call = sql_call(
            DbSystem::Postgresql,
            "SELECT * FROM missing",
            DbOutcome::Error("42P01".to_owned()),
        );
        let failed = facts(SpanKind::Client, call, false);
        assert!(failed.is_error());
        assert_eq!(failed.span_status(), Status::error(""));
        let attributes = failed.span_kv();
        assert_eq!(attribute(&attributes, "error.type"), Some(&"42P01".into()));
        assert_eq!(
            attribute(&attributes, "db.response.status_code"),
            Some(&"42P01".into())
        );

        // A PostgreSQL statement whose text was not seen: the command tag's operation.
        let mut call = DbCall::new(DbSystem::Postgresql, DbOutcome::Ok);
        call.operation = Some("INSERT".to_owned());
        assert_eq!(facts_name(call), "INSERT");
        // Nothing known but the system.
        let call = DbCall::new(DbSystem::Mysql, DbOutcome::NoResponse);
        let unanswered = facts(SpanKind::Client, call, true);
        assert_eq!(unanswered.name(), "mysql");
        assert_eq!(unanswered.error_type.as_deref(), Some("_OTHER"));
        assert_eq!(unanswered.span_status(), Status::error("no response"));
    }

    fn facts_name(call: DbCall) -> String {
        facts(SpanKind::Client, call, false).name()
    }

    #[test]
    fn redis_commands() {
        let mut call = DbCall::new(DbSystem::Redis, DbOutcome::Error("WRONGTYPE".to_owned()));
        call.operation = Some("HSET".to_owned());
        call.arguments = 3;
        call.namespace = Some(Arc::from("2"));
        let redis = facts(SpanKind::Client, call, true);
        assert_eq!(redis.name(), "HSET");
        let attributes = redis.span_kv();
        assert_eq!(
            attribute(&attributes, "db.query.text"),
            Some(&"HSET ? ? ?".into())
        );
        assert_eq!(attribute(&attributes, "db.namespace"), Some(&"2".into()));
        assert_eq!(
            attribute(&attributes, "error.type"),
            Some(&"WRONGTYPE".into())
        );
        assert_eq!(attribute(&attributes, "db.collection.name"), None);
    }

    #[test]
    fn metric_attributes_are_the_series_labels_in_order() {
        let call = sql_call(
            DbSystem::Postgresql,
            "SELECT * FROM users",
            DbOutcome::Error("42P01".to_owned()),
        );
        let keys: Vec<String> = facts(SpanKind::Client, call, false)
            .metric_kv()
            .iter()
            .map(|kv| kv.key.as_str().to_owned())
            .collect();
        let labels: Vec<&str> = LABELS.iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, labels);
    }
}
