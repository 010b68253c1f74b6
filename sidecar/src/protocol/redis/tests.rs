use super::*;
use crate::capture::events::Role;
use crate::connection::testing::capture;
use crate::protocol::db::testing::{Call, call, calls, replay, sweep};

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n{arg}\r\n", arg.len()).into_bytes());
    }
    out
}

fn ok(op: &str, namespace: &str) -> Call {
    call(None, Some(op), DbOutcome::Ok, Some(namespace))
}

fn failed(op: &str, code: &str, namespace: &str) -> Call {
    call(
        None,
        Some(op),
        DbOutcome::Error(code.to_owned()),
        Some(namespace),
    )
}

#[test]
fn detection() {
    let yes = Detection::Yes(Side::Client);
    let table: &[(&[u8], Detection)] = &[
        (&cmd(&["SET", "k", "v"]), yes),
        (&cmd(&["client", "setinfo"]), yes),
        (b"PING\r\n", yes),
        (b"set k v\r\n", yes),
        (b"PING", Detection::No),
        (b"*1\r\n", Detection::No),
        (b"*1\n$4\nPING\n", Detection::No),
        (b"*2\r\n$3\r\n1\r\n", Detection::No),
        (b"+OK\r\n", Detection::No),
        (b"GET / HTTP/1.1\r\n", Detection::No),
        (b"FROB x\r\n", Detection::No),
        (b"", Detection::No),
    ];
    for (bytes, expected) in table {
        assert_eq!(
            detect(bytes, None),
            *expected,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(detect(bytes, Some(Side::Server)), Detection::No);
    }
}

#[test]
fn pipelining_errors_select_and_inline() {
    let records = vec![
        (
            true,
            [
                cmd(&["SET", "k", "v"]),
                cmd(&["GET", "k"]),
                cmd(&["LPUSH", "k", "x"]),
            ]
            .concat(),
        ),
        (
            false,
            b"+OK\r\n$1\r\nv\r\n-WRONGTYPE Operation against a key\r\n".to_vec(),
        ),
        (true, cmd(&["SELECT", "3"])),
        (false, b"+OK\r\n".to_vec()),
        (true, b"PING\r\n".to_vec()),
        // A reply split in the middle of a bulk string and of its length line.
        (false, b"+PONG\r\n".to_vec()),
        (true, cmd(&["GET", "big"])),
        (false, b"$1".to_vec()),
        (false, b"0\r\n0123".to_vec()),
        (false, b"456789\r\n".to_vec()),
    ];
    assert_eq!(
        calls(&replay(&records, Role::Client, None)),
        vec![
            ok("SET", "0"),
            ok("GET", "0"),
            failed("LPUSH", "WRONGTYPE", "0"),
            ok("SELECT", "3"),
            ok("PING", "3"),
            ok("GET", "3"),
        ]
    );
    sweep(&records, Role::Client);
}

#[test]
fn resp3_aggregates_attributes_and_pushes() {
    let records = vec![
        (true, cmd(&["HGETALL", "m"])),
        // A map of two entries, one holding a nested set, preceded by an attribute.
        (
            false,
            b"|1\r\n+ttl\r\n:5\r\n%2\r\n+a\r\n:1\r\n+b\r\n~2\r\n+x\r\n_\r\n".to_vec(),
        ),
        (true, cmd(&["SUBSCRIBE", "news", "sport"])),
        (
            false,
            b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n"
                .to_vec(),
        ),
        // Messages pushed: no command asked for them.
        (false, b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n".to_vec()),
        (true, cmd(&["PING"])),
        (
            false,
            b">3\r\n$7\r\nmessage\r\n$5\r\nsport\r\n$1\r\n!\r\n+PONG\r\n".to_vec(),
        ),
        (true, cmd(&["EVAL", "x", "0"])),
        (false, b"!21\r\nSYNTAX invalid syntax\r\n".to_vec()),
    ];
    assert_eq!(
        calls(&replay(&records, Role::Client, None)),
        vec![
            ok("HGETALL", "0"),
            ok("SUBSCRIBE", "0"),
            ok("PING", "0"),
            failed("EVAL", "SYNTAX", "0"),
        ]
    );
    sweep(&records, Role::Client);
}

#[test]
fn resp2_pubsub_messages_are_not_replies() {
    let records = vec![
        (true, cmd(&["SUBSCRIBE", "a"])),
        (
            false,
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n".to_vec(),
        ),
        (
            false,
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n".to_vec(),
        ),
        (true, cmd(&["UNSUBSCRIBE"])),
        (
            false,
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n".to_vec(),
        ),
    ];
    assert_eq!(
        calls(&replay(&records, Role::Client, None)),
        vec![ok("SUBSCRIBE", "0"), ok("UNSUBSCRIBE", "0")]
    );
}

#[test]
fn joined_mid_stream_and_lost_replies() {
    // Joined mid-stream: no namespace until a SELECT, the reply in flight ignored.
    let records = vec![
        (false, b"+OK\r\n".to_vec()),
        (true, cmd(&["GET", "a"])),
        (false, b"$-1\r\n".to_vec()),
        (true, cmd(&["SELECT", "1"])),
        (false, b"+OK\r\n".to_vec()),
        (true, cmd(&["DEL", "a"])),
        (false, b":0\r\n".to_vec()),
    ];
    assert_eq!(
        calls(&replay(&records, Role::Unknown, None)),
        vec![
            call(None, Some("GET"), DbOutcome::Ok, None),
            ok("SELECT", "1"),
            ok("DEL", "1"),
        ]
    );
}

#[test]
fn golden_captures() {
    let sets: Vec<Call> = (0..32).map(|_| ok("SET", "0")).collect();
    let client_setinfo = || failed("CLIENT", "ERR", "0");
    let table: &[(&str, Vec<Call>)] = &[
        (
            // redis-cli's COMMAND DOCS answer is larger than the capture: that command and the
            // one after it get no span, what follows does.
            "redis-cli.cap",
            vec![
                ok("GET", "0"),
                failed("LPUSH", "WRONGTYPE", "0"),
                ok("SELECT", "2"),
                ok("HSET", "2"),
                failed("NOSUCH", "ERR", "2"),
                ok("DEL", "2"),
            ],
        ),
        (
            "pipeline.cap",
            [
                vec![
                    ok("HELLO", "0"),
                    client_setinfo(),
                    client_setinfo(),
                    client_setinfo(),
                ],
                ["MULTI", "SET", "INCRBY", "GET", "EXEC"]
                    .iter()
                    .map(|op| ok(op, "0"))
                    .collect(),
                (0..10).map(|_| ok("SET", "0")).collect(),
            ]
            .concat(),
        ),
        (
            "resp3-pubsub.cap",
            [
                vec![
                    ok("HELLO", "0"),
                    client_setinfo(),
                    client_setinfo(),
                    client_setinfo(),
                ],
                [
                    "HSET",
                    "HGETALL",
                    "SADD",
                    "SMEMBERS",
                    "SUBSCRIBE",
                    "UNSUBSCRIBE",
                ]
                .iter()
                .map(|op| ok(op, "0"))
                .collect(),
            ]
            .concat(),
        ),
        ("benchmark.cap", sets),
    ];
    for (name, expected) in table {
        let records = capture("redis", name);
        for role in [Role::Client, Role::Server] {
            assert_eq!(&calls(&replay(&records, role, None)), expected, "{name}");
        }
        sweep(&records, Role::Client);
    }
}
