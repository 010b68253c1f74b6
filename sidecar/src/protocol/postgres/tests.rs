use super::*;
use crate::capture::events::Role;
use crate::protocol::db::testing::{call, calls, replay, sweep};
use crate::protocol::{self as protocol_layer};

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3.to_be_bytes().to_vec();
    for (key, value) in params {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn cstrs(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part);
        out.push(0);
    }
    out
}

fn query(text: &str) -> Vec<u8> {
    msg(b'Q', &cstrs(&[text.as_bytes()]))
}

fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstrs(&[tag.as_bytes()]))
}

fn error(code: &str) -> Vec<u8> {
    let mut body = b"SERROR\0".to_vec();
    body.push(b'C');
    body.extend(cstrs(&[code.as_bytes()]));
    body.extend(b"Msecret detail\0\0");
    msg(b'E', &body)
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

fn parse(name: &str, text: &str) -> Vec<u8> {
    let mut body = cstrs(&[name.as_bytes(), text.as_bytes()]);
    body.extend([0, 0]);
    msg(b'P', &body)
}

fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut body = cstrs(&[portal.as_bytes(), statement.as_bytes()]);
    // No parameter formats, one parameter ("42"), no result formats.
    body.extend([0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2', 0, 0]);
    msg(b'B', &body)
}

fn execute(portal: &str) -> Vec<u8> {
    let mut body = cstrs(&[portal.as_bytes()]);
    body.extend([0, 0, 0, 0]);
    msg(b'E', &body)
}

fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// The handshake of a trust-authenticated connection to `shop`.
fn handshake() -> Vec<(bool, Vec<u8>)> {
    vec![
        (true, startup(&[("user", "app"), ("database", "shop")])),
        (
            false,
            cat(&[
                msg(b'R', &[0, 0, 0, 0]),
                msg(b'S', b"server_version\x0015.1\0"),
                msg(b'K', &[0; 8]),
                ready(),
            ]),
        ),
    ]
}

fn ok(text: &str) -> crate::protocol::db::testing::Call {
    call(Some(text), None, DbOutcome::Ok, Some("shop"))
}

#[test]
fn detection() {
    let yes = Detection::Yes(Side::Client);
    let table: &[(&[u8], Detection)] = &[
        (&startup(&[("user", "u")]), yes),
        (&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f], yes),
        (&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x30], yes),
        (&query("SELECT 1"), yes),
        (&parse("s1", "select * from t"), yes),
        (&cat(&[bind("", "s1"), execute(""), sync()]), yes),
        (&bind("", "s1"), Detection::No),
        (&query("hello"), Detection::No),
        (b"GET / HTTP/1.1\r\n", Detection::No),
        (&[0, 0, 0, 9, 0, 2, 0, 0, 0], Detection::No),
        (b"", Detection::No),
    ];
    for (bytes, expected) in table {
        assert_eq!(detect(bytes, None), *expected, "{bytes:?}");
        assert_eq!(detect(bytes, Some(Side::Server)), Detection::No);
    }
    // HTTP/1 keeps its traffic, PostgreSQL gets its own.
    let found = protocol_layer::detect(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", None);
    assert_eq!(found.map(|(p, _)| p.name), Some("http1"));
    let found = protocol_layer::detect(&query("SELECT 1"), None);
    assert_eq!(found.map(|(p, _)| p.name), Some("postgresql"));
}

#[test]
fn simple_queries_several_statements_and_errors() {
    let mut records = handshake();
    records.extend([
        (true, query("SELECT * FROM users WHERE id = 1")),
        (
            false,
            cat(&[
                msg(b'T', b"..."),
                msg(b'D', b"..."),
                complete("SELECT 1"),
                ready(),
            ]),
        ),
        (true, query("BEGIN; INSERT INTO t VALUES (1); COMMIT")),
        (
            false,
            cat(&[
                complete("BEGIN"),
                complete("INSERT 0 1"),
                complete("COMMIT"),
                ready(),
            ]),
        ),
        // The second statement fails: the third is never executed.
        (true, query("SELECT 1; SELECT * FROM missing; SELECT 3")),
        (false, cat(&[complete("SELECT 1"), error("42P01"), ready()])),
        (true, msg(b'X', b"")),
    ]);
    let txs = replay(&records, Role::Client, None);
    assert_eq!(
        calls(&txs),
        vec![
            ok("SELECT * FROM users WHERE id = 1"),
            ok("BEGIN"),
            ok("INSERT INTO t VALUES (1)"),
            ok("COMMIT"),
            ok("SELECT 1"),
            call(
                Some("SELECT * FROM missing"),
                None,
                DbOutcome::Error("42P01".to_owned()),
                Some("shop")
            ),
        ]
    );
    assert!(txs.iter().all(|tx| tx.start_ns < tx.end_ns));
    sweep(&records, Role::Client);
}

#[test]
fn extended_protocol_pipelined_named_and_unnamed() {
    let mut records = handshake();
    records.extend([
        // Prepared once, executed twice in one batch; an unnamed statement in the next batch.
        (
            true,
            cat(&[
                parse("s1", "SELECT v FROM kv WHERE k = $1"),
                bind("", "s1"),
                execute(""),
                bind("", "s1"),
                execute(""),
                sync(),
                parse("", "UPDATE kv SET v = $1"),
                bind("", ""),
                execute(""),
                sync(),
            ]),
        ),
        (
            false,
            cat(&[
                msg(b'1', b""),
                msg(b'2', b""),
                complete("SELECT 1"),
                msg(b'2', b""),
                complete("SELECT 0"),
                ready(),
                msg(b'1', b""),
                msg(b'2', b""),
                complete("UPDATE 3"),
                ready(),
            ]),
        ),
        // An error at Parse: the batch's Execute is skipped; the statement is still reported.
        (
            true,
            cat(&[
                parse("", "SELECT nope FROM t"),
                bind("", ""),
                execute(""),
                sync(),
            ]),
        ),
        (false, cat(&[error("42703"), ready()])),
        // Closing a statement forgets it: a later Bind of it has no text.
        (
            true,
            cat(&[
                msg(b'C', b"Ss1\0"),
                sync(),
                bind("", "s1"),
                execute(""),
                sync(),
            ]),
        ),
        (
            false,
            cat(&[msg(b'3', b""), ready(), error("26000"), ready()]),
        ),
    ]);
    let txs = replay(&records, Role::Client, None);
    let select = "SELECT v FROM kv WHERE k = $1";
    assert_eq!(
        calls(&txs),
        vec![
            ok(select),
            ok(select),
            ok("UPDATE kv SET v = $1"),
            call(
                Some("SELECT nope FROM t"),
                None,
                DbOutcome::Error("42703".to_owned()),
                Some("shop")
            ),
            call(
                None,
                None,
                DbOutcome::Error("26000".to_owned()),
                Some("shop")
            ),
        ]
    );
    // The bound parameter never shows up.
    assert!(!format!("{txs:?}").contains("42\""));
    sweep(&records, Role::Client);
}

#[test]
fn encryption_requests() {
    let ssl = vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f];
    // Refused: the startup follows in plaintext.
    let mut records = vec![(true, ssl.clone()), (false, b"N".to_vec())];
    records.extend(handshake());
    records.extend([
        (true, query("SELECT 1")),
        (false, cat(&[complete("SELECT 1"), ready()])),
    ]);
    assert_eq!(
        calls(&replay(&records, Role::Client, None)),
        vec![ok("SELECT 1")]
    );
    // Accepted: TLS from there on, the connection is left alone.
    let records = vec![
        (true, ssl),
        (false, b"S".to_vec()),
        (true, query("SELECT 1")),
        (false, cat(&[complete("SELECT 1"), ready()])),
    ];
    assert!(replay(&records, Role::Client, None).is_empty());
}

#[test]
fn copy_in_and_out_and_notices() {
    let mut records = handshake();
    records.extend([
        (true, query("COPY items FROM STDIN")),
        (false, msg(b'G', &[0, 0, 0])),
        (
            true,
            cat(&[
                msg(b'd', b"1\tone\n"),
                msg(b'd', b"2\ttwo\n"),
                msg(b'c', b""),
            ]),
        ),
        (
            false,
            cat(&[msg(b'N', b"SNOTICE\0\0"), complete("COPY 2"), ready()]),
        ),
        (true, query("COPY items TO STDOUT")),
        (
            false,
            cat(&[
                msg(b'H', &[0, 0, 0]),
                msg(b'd', b"1\tone\n"),
                msg(b'c', b""),
                complete("COPY 1"),
                ready(),
            ]),
        ),
    ]);
    assert_eq!(
        calls(&replay(&records, Role::Client, None)),
        vec![ok("COPY items FROM STDIN"), ok("COPY items TO STDOUT")]
    );
    sweep(&records, Role::Client);
}

#[test]
fn joined_mid_stream() {
    // No startup, an answer in flight, then statements prepared before the join: spans with what
    // the answers tell, never a text.
    let records = vec![
        (
            false,
            cat(&[msg(b'D', b"xx"), complete("SELECT 1"), ready()]),
        ),
        (true, cat(&[bind("", "s7"), execute(""), sync()])),
        (
            false,
            cat(&[msg(b'2', b""), complete("INSERT 0 1"), ready()]),
        ),
        (true, query("SELECT 2")),
        (false, cat(&[complete("SELECT 1"), ready()])),
    ];
    assert_eq!(
        calls(&replay(&records, Role::Unknown, None)),
        vec![
            call(None, Some("INSERT"), DbOutcome::Ok, None),
            call(Some("SELECT 2"), None, DbOutcome::Ok, None),
        ]
    );
}

#[test]
fn unseen_bytes_are_skipped_by_count() {
    // A long statement: only its prefix is captured, the rest skipped by the message length; the
    // next exchange reads in place.
    let long = format!("SELECT '{}' FROM wide", "x".repeat(3000));
    let mut records = handshake();
    records.extend([
        (true, query(&long)),
        (false, cat(&[complete("SELECT 1"), ready()])),
        (true, query("SELECT 1")),
        (false, cat(&[complete("SELECT 1"), ready()])),
    ]);
    let txs = replay(&records, Role::Client, None);
    let found = calls(&txs);
    assert_eq!(found.len(), 2);
    let text = found[0].0.as_deref().unwrap_or_default();
    assert!(long.starts_with(text) && text.len() < long.len(), "{text}");
    assert_eq!(found[1], ok("SELECT 1"));
    let Facts::Db(first) = &txs[0].facts else {
        unreachable!("database facts")
    };
    assert!(first.truncated);
}

#[test]
fn server_side_spans_and_unanswered_calls() {
    let mut records = handshake();
    records.push((true, query("SELECT pg_sleep(10)")));
    let txs = replay(&records, Role::Server, None);
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].kind, crate::transaction::SpanKind::Server);
    assert_eq!(
        calls(&txs),
        vec![call(
            Some("SELECT pg_sleep(10)"),
            None,
            DbOutcome::NoResponse,
            Some("shop")
        )]
    );
}

#[test]
fn bounded_statements() {
    let mut parser = Postgres::default();
    for i in 0..(MAX_STATEMENTS * 3) {
        parser
            .conn
            .on_parse(&parse(&format!("s{i}"), "SELECT 1")[5..], true);
    }
    assert_eq!(parser.conn.statements.len(), MAX_STATEMENTS);
    let long_name = "n".repeat(MAX_NAME + 1);
    parser
        .conn
        .on_parse(&parse(&long_name, "SELECT 1")[5..], true);
    assert_eq!(parser.conn.statements.len(), MAX_STATEMENTS);
    assert!(parser.conn.statement(long_name.as_bytes()).is_none());
}

/// The golden captures (recorded from a real PostgreSQL, see `testdata/README.md`): what each
/// gives, whole and under every truncation.
#[test]
fn golden_captures() {
    let error = |text: &str, code: &str| {
        call(
            Some(text),
            None,
            DbOutcome::Error(code.to_owned()),
            Some("shop"),
        )
    };
    let select = "SELECT v FROM kv WHERE k = $1";
    let update = "UPDATE kv SET v = v + $1 WHERE k = $2";
    let bench = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
    let table: &[(&str, Vec<crate::protocol::db::testing::Call>)] = &[
        (
            "simple.cap",
            vec![
                ok("INSERT INTO kv VALUES ('a', 1) ON CONFLICT DO NOTHING"),
                ok("SELECT * FROM kv WHERE k = 'a'"),
                error("SELECT * FROM missing_table", "42P01"),
            ],
        ),
        (
            "extended.cap",
            vec![
                ok("BEGIN"),
                ok(select),
                ok(select),
                ok(select),
                ok(update),
                ok(update),
                ok(update),
                error("SELECT nope FROM kv WHERE k = $1", "42703"),
                ok("ROLLBACK"),
                ok("DEALLOCATE ALL"),
                ok("BEGIN"),
                ok("COPY kv (k, v) FROM STDIN"),
                ok("COMMIT"),
                ok("BEGIN"),
                ok("COPY kv TO STDOUT"),
                ok("COMMIT"),
            ],
        ),
        (
            "pgbench-prepared.cap",
            vec![ok(bench), ok(bench), ok(bench)],
        ),
    ];
    for (name, expected) in table {
        let records = crate::connection::testing::capture("postgres", name);
        for role in [Role::Client, Role::Server] {
            assert_eq!(&calls(&replay(&records, role, None)), expected, "{name}");
        }
        sweep(&records, Role::Client);
    }
}

#[test]
fn context_carried_in_a_comment_is_continued() {
    let mut records = handshake();
    records.extend([
        (
            true,
            query("SELECT 1 /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/"),
        ),
        (false, cat(&[complete("SELECT 1"), ready()])),
        (true, query("SELECT 2")),
        (false, cat(&[complete("SELECT 1"), ready()])),
    ]);
    let txs = replay(&records, Role::Server, None);
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[0].trace.trace_id[..2], [0x4b, 0xf9]);
    assert_eq!(
        txs[0].trace.parent_span_id,
        Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
    );
    assert_eq!(txs[1].trace.parent_span_id, None);
}

#[test]
fn lengths_shorter_than_their_own_field_are_refused() {
    // Found by the fuzzer: the length was subtracted from before it was checked.
    for len in 0u32..8 {
        assert_eq!((super::UNTAGGED.decode)(&len.to_be_bytes()), None, "{len}");
    }
    for len in 0u32..4 {
        let mut head = vec![b'Q'];
        head.extend_from_slice(&len.to_be_bytes());
        assert_eq!((super::TAGGED.decode)(&head), None, "{len}");
    }
}
