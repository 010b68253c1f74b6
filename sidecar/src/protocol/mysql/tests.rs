use super::*;
use crate::capture::events::Role;
use crate::connection::testing::capture;
use crate::protocol::db::testing::{Call, call, calls, replay, sweep};
use crate::transaction::Transaction;

fn packet_of(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

fn command(code: u8, body: &[u8]) -> Vec<u8> {
    let mut payload = vec![code];
    payload.extend_from_slice(body);
    packet_of(0, &payload)
}

fn ok_packet(seq: u8) -> Vec<u8> {
    packet_of(seq, &[0, 0, 0, 2, 0, 0, 0])
}

fn err_packet(seq: u8, code: u16) -> Vec<u8> {
    let mut payload = vec![0xff];
    payload.extend(code.to_le_bytes());
    payload.extend(b"#42S02Table 'shop.secret' doesn't exist");
    packet_of(seq, &payload)
}

/// A result set of one column and `rows` rows, the old way (with EOFs).
fn result_set(rows: usize) -> Vec<u8> {
    let mut out = packet_of(1, &[1]);
    out.extend(packet_of(
        2,
        b"\x03def\x04shop\x02kv\x02kv\x01v\x01v\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00",
    ));
    out.extend(packet_of(3, &[0xfe, 0, 0, 2, 0]));
    for i in 0..rows {
        out.extend(packet_of(4 + i as u8, b"\x011"));
    }
    out.extend(packet_of(4 + rows as u8, &[0xfe, 0, 0, 2, 0]));
    out
}

fn greeting(version: &str) -> Vec<u8> {
    let mut payload = vec![10];
    payload.extend(version.as_bytes());
    payload.push(0);
    payload.extend([1, 0, 0, 0]);
    payload.extend(b"abcdefgh\0");
    // Capabilities (low): PROTOCOL_41 | SECURE_CONNECTION | CONNECT_WITH_DB, charset, status,
    // capabilities (high), auth data length, reserved, the rest of the auth data and plugin.
    payload.extend(((1u16 << 9) | (1 << 15) | (1 << 3)).to_le_bytes());
    payload.extend([8, 2, 0, 0x0f, 0x80, 21]);
    payload.extend([0; 10]);
    payload.extend(b"ijklmnopqrst\0mysql_native_password\0");
    packet_of(0, &payload)
}

fn handshake_response(database: &str, caps: u32) -> Vec<u8> {
    let mut payload = caps.to_le_bytes().to_vec();
    payload.extend([0, 0, 0, 1, 33]);
    payload.extend([0; 23]);
    payload.extend(b"test\0");
    payload.push(20);
    payload.extend([7; 20]);
    payload.extend(database.as_bytes());
    payload.push(0);
    packet_of(1, &payload)
}

const CAPS: u32 = (1 << 9) | (1 << 15) | (1 << 3);

fn connected(version: &str) -> Vec<(bool, Vec<u8>)> {
    vec![
        (false, greeting(version)),
        (true, handshake_response("shop", CAPS)),
        (false, ok_packet(2)),
    ]
}

fn in_shop(text: &str, outcome: DbOutcome) -> Call {
    call(Some(text), None, outcome, Some("shop"))
}

fn only_calls(txs: &[Transaction]) -> Vec<Call> {
    calls(txs)
}

#[test]
fn detection() {
    let greeting = greeting("10.11.6-MariaDB");
    let query = command(COM_QUERY, b"SELECT 1");
    let table: &[(&[u8], Option<Side>, Detection)] = &[
        (&greeting, None, Detection::Yes(Side::Server)),
        (&greeting, Some(Side::Server), Detection::Yes(Side::Server)),
        (&greeting, Some(Side::Client), Detection::No),
        (&query, None, Detection::Yes(Side::Client)),
        (
            &command(COM_STMT_PREPARE, b"insert into t values (?)"),
            None,
            Detection::Yes(Side::Client),
        ),
        (&command(COM_QUERY, b"hello"), None, Detection::No),
        (&command(COM_PING, b""), None, Detection::No),
        (b"GET / HTTP/1.1\r\n", None, Detection::No),
        (&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f], None, Detection::No),
    ];
    for (bytes, side, expected) in table {
        assert_eq!(detect(bytes, *side), *expected, "{bytes:?} {side:?}");
    }
}

const COM_PING: u8 = 0x0e;

#[test]
fn queries_results_errors_and_init_db() {
    let mut records = connected("10.11.6-MariaDB-0+deb12u1");
    records.extend([
        (true, command(COM_QUERY, b"SELECT v FROM kv")),
        (false, result_set(2)),
        (true, command(COM_QUERY, b"SELECT * FROM secret")),
        (false, err_packet(1, 1146)),
        (true, command(COM_PING, b"")),
        (false, ok_packet(1)),
        (true, command(COM_INIT_DB, b"other")),
        (false, ok_packet(1)),
        (true, command(COM_QUERY, b"DELETE FROM kv")),
        (false, ok_packet(1)),
        (true, command(COM_QUIT, b"")),
    ]);
    let txs = replay(&records, Role::Client, None);
    assert_eq!(
        only_calls(&txs),
        vec![
            in_shop("SELECT v FROM kv", DbOutcome::Ok),
            in_shop("SELECT * FROM secret", DbOutcome::Error("1146".to_owned())),
            call(Some("DELETE FROM kv"), None, DbOutcome::Ok, Some("other")),
        ]
    );
    assert!(
        txs.iter()
            .all(|tx| { matches!(&tx.facts, Facts::Db(call) if call.system == DbSystem::Mariadb) })
    );
    sweep(&records, Role::Client);
}

#[test]
fn packets_split_and_joined() {
    let mut records = connected("8.0.36");
    // One result set split across three reads, and two answers' worth of packets in one.
    let answer = result_set(3);
    records.push((true, command(COM_QUERY, b"SELECT v FROM kv")));
    for part in [&answer[..3], &answer[3..20], &answer[20..]] {
        records.push((false, part.to_vec()));
    }
    records.push((true, command(COM_QUERY, b"SELECT 1")));
    records.push((false, result_set(1)));
    let txs = replay(&records, Role::Client, None);
    assert_eq!(
        only_calls(&txs),
        vec![
            in_shop("SELECT v FROM kv", DbOutcome::Ok),
            in_shop("SELECT 1", DbOutcome::Ok),
        ]
    );
    assert!(
        txs.iter()
            .all(|tx| { matches!(&tx.facts, Facts::Db(call) if call.system == DbSystem::Mysql) })
    );
}

#[test]
fn tls_upgrade_is_left_alone() {
    let records = vec![
        (false, greeting("8.0.36")),
        // An SSL request: 32 bytes of capabilities, then the TLS handshake.
        (
            true,
            packet_of(
                1,
                &[&(CAPS | CLIENT_SSL).to_le_bytes()[..], &[0; 28]].concat(),
            ),
        ),
        (true, b"\x16\x03\x01\x02\x00".to_vec()),
        (true, command(COM_QUERY, b"SELECT 1")),
        (false, ok_packet(1)),
    ];
    assert!(replay(&records, Role::Client, None).is_empty());
}

#[test]
fn joined_mid_stream() {
    // The answer in flight is ignored; a statement prepared before the join has no text.
    let records = vec![
        (false, result_set(1)),
        (true, command(COM_QUERY, b"SELECT 2")),
        (false, result_set(1)),
        (
            true,
            command(COM_STMT_EXECUTE, &[9, 0, 0, 0, 0, 1, 0, 0, 0]),
        ),
        (false, ok_packet(1)),
    ];
    assert_eq!(
        only_calls(&replay(&records, Role::Unknown, None)),
        vec![
            call(Some("SELECT 2"), None, DbOutcome::Ok, None),
            call(None, None, DbOutcome::Ok, None),
        ]
    );
}

#[test]
fn golden_captures() {
    let table: &[(&str, Vec<Call>)] = &[
        (
            "mariadb-client.cap",
            vec![
                in_shop(
                    "CREATE TABLE IF NOT EXISTS kv (k varchar(10) PRIMARY KEY, v int)",
                    DbOutcome::Ok,
                ),
                in_shop("REPLACE INTO kv VALUES ('a', 1)", DbOutcome::Ok),
                in_shop("SELECT * FROM kv", DbOutcome::Ok),
                // The client asks which database it is in before `USE` (COM_INIT_DB).
                in_shop("SELECT DATABASE()", DbOutcome::Ok),
                call(
                    Some("SELECT DATABASE()"),
                    None,
                    DbOutcome::Ok,
                    Some("other"),
                ),
                call(
                    Some("SELECT * FROM missing_table"),
                    None,
                    DbOutcome::Error("1146".to_owned()),
                    Some("other"),
                ),
            ],
        ),
        (
            "pymysql.cap",
            vec![
                in_shop("SET NAMES utf8mb4", DbOutcome::Ok),
                in_shop("SET AUTOCOMMIT = 0", DbOutcome::Ok),
                in_shop("SELECT v FROM kv WHERE k = 'a'", DbOutcome::Ok),
                in_shop("SELECT 1; SELECT 2", DbOutcome::Ok),
                in_shop("SELECT nope FROM kv", DbOutcome::Error("1054".to_owned())),
                call(
                    Some("SELECT DATABASE()"),
                    None,
                    DbOutcome::Ok,
                    Some("other"),
                ),
            ],
        ),
        (
            "connector-prepared.cap",
            vec![
                in_shop(
                    "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
                    DbOutcome::Ok,
                ),
                in_shop("SET @@session.autocommit = OFF", DbOutcome::Ok),
                in_shop("SELECT v FROM kv WHERE k = ?", DbOutcome::Ok),
                in_shop("SELECT v FROM kv WHERE k = ?", DbOutcome::Ok),
                in_shop(
                    "SELECT nope FROM kv WHERE k = ?",
                    DbOutcome::Error("1054".to_owned()),
                ),
            ],
        ),
    ];
    for (name, expected) in table {
        let records = capture("mysql", name);
        for role in [Role::Client, Role::Server] {
            let txs = replay(&records, role, None);
            assert_eq!(&only_calls(&txs), expected, "{name}");
            assert!(txs.iter().all(|tx| {
                matches!(&tx.facts, Facts::Db(call) if call.system == DbSystem::Mariadb)
            }));
        }
        sweep(&records, Role::Client);
    }
}

#[test]
fn odd_lengths_are_not_statements() {
    // Found by fuzzing: a zero length before a payload.
    assert_eq!(detect(b"\0\0\0\0\x03SELECT", None), Detection::No);
    assert_eq!(detect(b"\x01\0\0\0", None), Detection::No);
}
