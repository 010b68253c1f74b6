//! Database spans end to end on a real kernel: the tests' own PostgreSQL, MariaDB and Redis
//! (Debian packages, own data directories and loopback ports), real clients (psql, pgbench,
//! psycopg, the mariadb client, PyMySQL, mysql-connector-python, redis-cli, redis-benchmark,
//! redis-py), the sidecar in a PID namespace standing in for the pod, spans exported over OTLP to
//! an in-test receiver. Client spans when the clients are in the pod, SERVER spans when the
//! database is. Each test runs in both capture modes (`tracepoints::` and `pod_scoped::`, see
//! `in_both_modes!`). Needs root; CI runs as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests (run through in_both_modes, so outside #[test] functions): failing loudly is \
              their job"
)]

#[path = "support/databases.rs"]
mod databases;
#[path = "support/otlp.rs"]
mod otlp;
#[path = "support/pod.rs"]
mod pod;

use std::time::Duration;

use databases::{Server, host, py_client, run_in_pod, start_in_pod};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use otlp::{OtlpReceiver, int_attribute, string_attribute};
use pod::{Mode, Pod, free_port, run};

/// Processes the client tests select: the clients, and the shell they are started from.
const CLIENTS: &str = "*/{bash,psql,pgbench,mariadb,redis-cli,redis-benchmark,python3*}";
const WAIT: Duration = Duration::from_secs(30);

fn attr(span: &Span, key: &str) -> Option<String> {
    string_attribute(&span.attributes, key).map(str::to_owned)
}

/// Starts `pod`'s sidecar, exporting to `receiver`, with `extra` env.
fn start_sidecar(pod: &mut Pod, receiver: &OtlpReceiver, extra: &[(&str, String)]) {
    let mut env: Vec<(&str, String)> = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", receiver.grpc_addr),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        // Benchmarks make thousands of spans a second: none may be dropped.
        ("OTEL_BSP_MAX_QUEUE_SIZE", "32768".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pod.start_sidecar(&env);
}

/// A pod whose sidecar traces the database clients run in it, with query text on.
fn client_pod(mode: Mode, receiver: &OtlpReceiver) -> Pod {
    let mut pod = Pod::with_mode(mode);
    start_sidecar(
        &mut pod,
        receiver,
        &[
            ("OTEL_EBPF_AUTO_TARGET_EXE", CLIENTS.to_owned()),
            ("OTEL_EBPF_DB_INCLUDE_QUERY_TEXT", "true".to_owned()),
        ],
    );
    pod
}

/// Waits until the receiver has spans matching `pred` at least `n` times, then a little longer
/// (so that extra spans would show), and returns those.
async fn spans_where(receiver: &OtlpReceiver, n: usize, pred: impl Fn(&Span) -> bool) -> Vec<Span> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found: Vec<Span> = receiver
            .spans()
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| pred(s))
            .collect();
        if found.len() >= n || tokio::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(700)).await;
            return receiver
                .spans()
                .into_iter()
                .map(|(_, s)| s)
                .filter(|s| pred(s))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn is_db(span: &Span, system: &str) -> bool {
    attr(span, "db.system.name").as_deref() == Some(system)
}

fn is_error(span: &Span) -> bool {
    span.status.as_ref().map(|s| s.code) == Some(StatusCode::Error as i32)
}

async fn postgres_client_spans(mode: Mode) {
    let server = Server::start("postgres");
    let port = server.port;
    let psql = format!("psql -h 127.0.0.1 -p {port} -U test -d shop -X -q");
    assert!(host(&format!(
        "pgbench -i -q -h 127.0.0.1 -p {port} -U test shop"
    )));
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = client_pod(mode, &receiver);

    // psql: simple queries (after an SSLRequest the server refuses), an error with its SQLSTATE.
    let code = run_in_pod(
        &mut pod,
        "psql",
        &format!(
            "{psql} -c \"SELECT count(*) FROM pgbench_branches WHERE bid = 1; SELECT 'x'\" -c \"SELECT * FROM missing_table\""
        ),
    );
    assert_eq!(code, 1, "the second query fails");
    let spans = spans_where(&receiver, 3, |s| is_db(s, "postgresql")).await;
    let select = named(&spans, "SELECT pgbench_branches");
    assert_eq!(select.len(), 1, "{spans:#?}");
    let select = select[0];
    assert_eq!(select.kind, SpanKind::Client as i32);
    assert_eq!(attr(select, "db.namespace").as_deref(), Some("shop"));
    assert_eq!(attr(select, "db.operation.name").as_deref(), Some("SELECT"));
    assert_eq!(
        attr(select, "db.query.text").as_deref(),
        Some("SELECT count(*) FROM pgbench_branches WHERE bid = ?")
    );
    assert_eq!(attr(select, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        int_attribute(&select.attributes, "server.port"),
        Some(i64::from(port))
    );
    assert_eq!(named(&spans, "SELECT").len(), 1, "SELECT 'x'");
    let missing = named(&spans, "SELECT missing_table");
    assert_eq!(missing.len(), 1, "{spans:#?}");
    assert!(is_error(missing[0]));
    assert_eq!(
        attr(missing[0], "db.response.status_code").as_deref(),
        Some("42P01")
    );
    assert_eq!(attr(missing[0], "error.type").as_deref(), Some("42P01"));

    // pgbench in each query mode: exactly the statements it ran.
    let transactions = 25;
    for (i, mode) in ["simple", "extended", "prepared"].iter().enumerate() {
        let code = run_in_pod(
            &mut pod,
            &format!("pgbench-{mode}"),
            &format!(
                "pgbench -h 127.0.0.1 -p {port} -U test -n -S -M {mode} -t {transactions} -c 1 shop"
            ),
        );
        assert_eq!(code, 0, "pgbench -M {mode}");
        let expected = transactions * (i + 1);
        let spans = spans_where(&receiver, expected, |s| s.name == "SELECT pgbench_accounts").await;
        assert_eq!(spans.len(), expected, "after pgbench -M {mode}");
        assert!(spans.iter().all(|s| {
            attr(s, "db.query.text")
                .is_some_and(|t| t.starts_with("SELECT abalance FROM pgbench_accounts WHERE aid ="))
        }));
    }

    // psycopg: server-side parameters (never exported), prepared statements, pipeline mode.
    assert_eq!(
        run_in_pod(&mut pod, "psycopg", &py_client("pg-params", port, &[])),
        0
    );
    let spans = spans_where(&receiver, 6, |s| {
        is_db(s, "postgresql") && (s.name.ends_with(" items"))
    })
    .await;
    assert_eq!(named(&spans, "SELECT items").len(), 3, "{spans:#?}");
    assert_eq!(named(&spans, "UPDATE items").len(), 3, "{spans:#?}");
    assert_eq!(named(&spans, "INSERT items").len(), 1);
    let failed: Vec<&Span> = spans.iter().filter(|s| is_error(s)).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        attr(failed[0], "db.response.status_code").as_deref(),
        Some("42703")
    );
    assert_eq!(
        attr(failed[0], "db.query.text").as_deref(),
        Some("SELECT nope FROM items WHERE id = $1")
    );
    assert!(!format!("{spans:?}").contains("secret-name"));
}

async fn postgres_connection_opened_before_the_sidecar_and_server_side_spans(mode: Mode) {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");

    // A connection opened before the sidecar starts: its startup is never seen.
    let server = Server::start("postgres");
    let mut pod = Pod::with_mode(mode);
    let dir = pod.dir.path().to_string_lossy().into_owned();
    let held = py_client("pg-hold", server.port, &[&dir]);
    pod.spawn("held", &["bash", "-c", &held], &[]);
    databases::wait_for_path(&pod.path("ready"));
    start_sidecar(
        &mut pod,
        &receiver,
        &[
            ("OTEL_EBPF_AUTO_TARGET_EXE", CLIENTS.to_owned()),
            ("OTEL_EBPF_DB_INCLUDE_QUERY_TEXT", "true".to_owned()),
        ],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(pod.path("go"), "").expect("go");
    let spans = spans_where(&receiver, 1, |s| is_db(s, "postgresql")).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].name, "SELECT");
    assert_eq!(
        attr(&spans[0], "db.query.text").as_deref(),
        Some("SELECT ? AS held")
    );
    // Joined mid-stream: the database in use was never said.
    assert_eq!(attr(&spans[0], "db.namespace"), None);
    drop(pod);

    // The database is the instrumented process: SERVER spans from its backend.
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let port = start_in_pod(&mut pod, "postgres");
    // PostgreSQL's backends hold no listening socket: selected by executable.
    start_sidecar(
        &mut pod,
        &receiver,
        &[
            ("OTEL_EBPF_AUTO_TARGET_EXE", "*/postgres".to_owned()),
            ("OTEL_EBPF_DB_INCLUDE_QUERY_TEXT", "true".to_owned()),
        ],
    );
    // The client (outside the pod) holds its connection until the backend serving it is
    // instrumented.
    let dir = pod.dir.path().to_string_lossy().into_owned();
    let mut client = std::process::Command::new("bash")
        .args(["-c", &py_client("pg-server-side", port, &[&dir])])
        .spawn()
        .expect("client");
    databases::wait_for_path(&pod.path("ready"));
    let backend = std::fs::read_to_string(pod.path("ready")).expect("backend pid");
    pod.wait_for_log(
        "sidecar.err",
        &format!("instrumenting process pid={} ", backend.trim()),
        WAIT,
    );
    std::fs::write(pod.path("go"), "").expect("go");
    assert!(client.wait().expect("client").success());
    let spans = spans_where(&receiver, 1, |s| is_db(s, "postgresql")).await;
    let server_side: Vec<&Span> = spans
        .iter()
        .filter(|s| attr(s, "db.query.text").as_deref() == Some("SELECT ? AS server_side"))
        .collect();
    assert_eq!(server_side.len(), 1, "{spans:#?}");
    assert_eq!(server_side[0].kind, SpanKind::Server as i32);
    // The client carried its context in a comment: the SERVER span continues it.
    assert_eq!(
        hex::encode(&server_side[0].trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        hex::encode(&server_side[0].parent_span_id),
        "00f067aa0ba902b7"
    );
    assert_eq!(
        int_attribute(&server_side[0].attributes, "server.port"),
        Some(i64::from(port))
    );
}

async fn mariadb_client_and_server_spans(mode: Mode) {
    let server = Server::start("mariadb");
    let port = server.port;
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = client_pod(mode, &receiver);
    let mariadb = format!("mariadb -h 127.0.0.1 -P {port} -utest -ptest --skip-ssl");

    // The mariadb client: statements, COM_INIT_DB (USE), an error with its number.
    let code = run_in_pod(
        &mut pod,
        "mariadb",
        &format!(
            "{mariadb} shop -e \"CREATE TABLE IF NOT EXISTS kv (k varchar(10) PRIMARY KEY, v int); REPLACE INTO kv VALUES ('a', 1); USE other; SELECT * FROM missing_table\""
        ),
    );
    assert_eq!(code, 1, "the last statement fails");
    let spans = spans_where(&receiver, 3, |s| is_db(s, "mariadb")).await;
    let replace = named(&spans, "REPLACE kv");
    assert_eq!(replace.len(), 1, "{spans:#?}");
    assert_eq!(attr(replace[0], "db.namespace").as_deref(), Some("shop"));
    assert_eq!(
        attr(replace[0], "db.query.text").as_deref(),
        Some("REPLACE INTO kv VALUES (?, ?)")
    );
    let missing = named(&spans, "SELECT missing_table");
    assert_eq!(missing.len(), 1, "{spans:#?}");
    assert!(is_error(missing[0]));
    assert_eq!(
        attr(missing[0], "db.response.status_code").as_deref(),
        Some("1146")
    );
    // After `USE other` (COM_INIT_DB).
    assert_eq!(attr(missing[0], "db.namespace").as_deref(), Some("other"));

    // PyMySQL (text protocol) and mysql-connector-python's server-side prepared statements.
    assert_eq!(
        run_in_pod(&mut pod, "pymysql", &py_client("pymysql", port, &[])),
        0
    );
    assert_eq!(
        run_in_pod(&mut pod, "connector", &py_client("connector", port, &[])),
        0
    );
    let spans = spans_where(&receiver, 4, |s| {
        attr(s, "db.query.text").is_some_and(|t| t.starts_with("SELECT v FROM kv WHERE k ="))
    })
    .await;
    let texts: Vec<String> = spans
        .iter()
        .filter_map(|s| attr(s, "db.query.text"))
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| *t == "SELECT v FROM kv WHERE k = ?")
            .count(),
        3,
        "one from PyMySQL (its literal sanitized), two prepared executions: {texts:?}"
    );
    let all = spans_where(&receiver, 1, |s| {
        attr(s, "db.response.status_code").as_deref() == Some("1054")
    })
    .await;
    assert_eq!(all.len(), 1, "the failed prepared statement");
    let other = spans_where(&receiver, 1, |s| {
        attr(s, "db.query.text").as_deref() == Some("SELECT DATABASE()")
    })
    .await;
    assert!(
        other
            .iter()
            .any(|s| attr(s, "db.namespace").as_deref() == Some("other")),
        "select_db (COM_INIT_DB) changes the namespace: {other:#?}"
    );
    drop(pod);

    // MariaDB as the pod's database: SERVER spans.
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let port = start_in_pod(&mut pod, "mariadb");
    start_sidecar(
        &mut pod,
        &receiver,
        &[("OTEL_EBPF_OPEN_PORT", port.to_string())],
    );
    assert!(host(&format!(
        "mariadb -h 127.0.0.1 -P {port} -utest -ptest --skip-ssl shop -e 'SELECT 1 FROM DUAL'"
    )));
    let spans = spans_where(&receiver, 1, |s| {
        is_db(s, "mariadb") && s.name == "SELECT DUAL"
    })
    .await;
    assert_eq!(spans.len(), 1, "{:#?}", receiver.spans());
    assert_eq!(spans[0].kind, SpanKind::Server as i32);
    assert_eq!(attr(&spans[0], "db.namespace").as_deref(), Some("shop"));
    // Query text is off by default.
    assert_eq!(attr(&spans[0], "db.query.text"), None);
}

async fn redis_client_and_server_spans(mode: Mode) {
    let server = Server::start("redis");
    let port = server.port;
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = client_pod(mode, &receiver);

    // redis-benchmark with pipelining: exactly the commands it sent.
    let requests = 2000;
    let code = run_in_pod(
        &mut pod,
        "redis-benchmark",
        &format!("redis-benchmark -p {port} -P 16 -n {requests} -c 2 -t set,get -q"),
    );
    assert_eq!(code, 0);
    for command in ["SET", "GET"] {
        let spans = spans_where(&receiver, requests, |s| {
            is_db(s, "redis") && s.name == command
        })
        .await;
        assert_eq!(spans.len(), requests, "{command}; {}", receiver.losses());
    }

    // redis-py: MULTI/EXEC, SELECT 2 (the namespace), an error.
    assert_eq!(
        run_in_pod(&mut pod, "redis-py", &py_client("redis-py", port, &[])),
        0
    );
    let spans = spans_where(&receiver, 1, |s| is_db(s, "redis") && s.name == "LPUSH").await;
    assert_eq!(spans.len(), 1);
    assert!(is_error(&spans[0]));
    assert_eq!(
        attr(&spans[0], "db.response.status_code").as_deref(),
        Some("WRONGTYPE")
    );
    assert_eq!(attr(&spans[0], "db.namespace").as_deref(), Some("2"));
    assert_eq!(
        attr(&spans[0], "db.query.text").as_deref(),
        Some("LPUSH ? ?")
    );
    for command in ["MULTI", "EXEC", "INCRBY"] {
        let found = spans_where(&receiver, 1, |s| is_db(s, "redis") && s.name == command).await;
        assert_eq!(found.len(), 1, "{command}");
        // Before the SELECT: database 0 if the connect was seen, unknown if it completed
        // asynchronously (a non-blocking connect's socket is found by its first bytes).
        let namespace = attr(&found[0], "db.namespace");
        assert!(
            matches!(namespace.as_deref(), None | Some("0")),
            "{namespace:?}"
        );
    }

    // redis-cli: a command repeated on one connection.
    let code = run_in_pod(
        &mut pod,
        "redis-cli",
        &format!("redis-cli -p {port} -r 3 INCR cli"),
    );
    assert_eq!(code, 0);
    let spans = spans_where(&receiver, 3, |s| is_db(s, "redis") && s.name == "INCR").await;
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|s| !is_error(s)));
    drop(pod);

    // Redis as the pod's database: SERVER spans.
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let port = start_in_pod(&mut pod, "redis");
    start_sidecar(
        &mut pod,
        &receiver,
        &[("OTEL_EBPF_OPEN_PORT", port.to_string())],
    );
    run(&[
        "redis-benchmark",
        "-p",
        &port.to_string(),
        "-P",
        "16",
        "-n",
        "320",
        "-c",
        "1",
        "-t",
        "incr",
        "-q",
    ]);
    let spans = spans_where(&receiver, 320, |s| is_db(s, "redis") && s.name == "INCR").await;
    let names: Vec<String> = receiver.spans().into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(spans.len(), 320, "{names:?} {}", pod.log("sidecar.err"));
    assert!(spans.iter().all(|s| s.kind == SpanKind::Server as i32));
}

async fn http_handler_queries_join_the_request_trace(mode: Mode) {
    let postgres = Server::start("postgres");
    let redis = Server::start("redis");
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let mut pod = Pod::with_mode(mode);
    let app = free_port();
    pod.start_app("app", app);
    start_sidecar(
        &mut pod,
        &receiver,
        &[("OTEL_EBPF_OPEN_PORT", app.to_string())],
    );
    let status = run(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{app}/db/{}/{}", postgres.port, redis.port),
    ]);
    assert_eq!(status.trim(), "200");
    let spans = spans_where(&receiver, 3, |_| true).await;
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    for system in ["postgresql", "redis"] {
        let calls: Vec<&Span> = spans.iter().filter(|s| is_db(s, system)).collect();
        assert!(!calls.is_empty(), "{system}: {spans:#?}");
        for call in calls {
            assert_eq!(call.kind, SpanKind::Client as i32);
            assert_eq!(
                call.trace_id, server.trace_id,
                "{system} call joins the trace"
            );
            assert_eq!(
                call.parent_span_id, server.span_id,
                "{system} call is a child"
            );
        }
    }
    assert_eq!(
        named(&spans, "SELECT pg_database").len(),
        1,
        "the handler's query: {spans:#?}"
    );
}

in_both_modes!(
    postgres_client_spans,
    postgres_connection_opened_before_the_sidecar_and_server_side_spans,
    mariadb_client_and_server_spans,
    redis_client_and_server_spans,
    http_handler_queries_join_the_request_trace,
);
