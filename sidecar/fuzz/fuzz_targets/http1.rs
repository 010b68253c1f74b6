//! Fuzzes the HTTP/1.x parsers, the chunked decoder, and the connection layer fed HTTP-like
//! traffic: no input may panic, and the connection layer must stay within its limits.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use obi_sidecar::capture::events::{Direction, Event, Meta, Role};
use obi_sidecar::connection::context::parse_traceparent;
use obi_sidecar::connection::{ConnKey, Connections, Limits};
use obi_sidecar::protocol::http1::chunked::ChunkedDecoder;
use obi_sidecar::protocol::http1::head::{self as http1, Parsed};

/// Fragments that steer generated data towards HTTP so the fuzzer gets past the first byte.
const FRAGMENTS: &[&[u8]] = &[
    b"",
    b"GET / HTTP/1.1\r\n",
    b"HEAD /h HTTP/1.1\r\n",
    b"POST /p HTTP/1.0\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"Content-Length: 3\r\n\r\n",
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"\r\n",
];

#[derive(Arbitrary, Debug)]
enum Op {
    Connect {
        fd: u8,
        client: bool,
    },
    Close {
        fd: u8,
    },
    Data {
        fd: u8,
        tid: u8,
        egress: bool,
        fragment: u8,
        /// Bytes moved beyond the captured ones.
        uncaptured: u16,
        bytes: Vec<u8>,
    },
    Addresses {
        fd: u8,
    },
    Exit,
}

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    split: u16,
    unseen: u16,
    ops: Vec<Op>,
}

const MAX_CONNECTIONS: usize = 4;
const MAX_BUFFERED: usize = 8192;

fuzz_target!(|input: Input| {
    parsers(&input.raw);
    chunked(
        &input.raw,
        usize::from(input.split),
        u64::from(input.unseen),
    );
    tracker(&input.ops);
});

fn parsers(raw: &[u8]) {
    if let Ok(Parsed::Complete(req)) = http1::parse_request(raw) {
        assert!(req.header_len <= raw.len());
        // The head alone parses to the same head.
        assert_eq!(
            http1::parse_request(&raw[..req.header_len]).ok(),
            Some(Parsed::Complete(req.clone()))
        );
        let _ = req.framing();
    }
    if let Ok(Parsed::Complete(resp)) = http1::parse_response(raw) {
        assert!(resp.header_len <= raw.len());
        let _ = (
            resp.framing("GET"),
            resp.framing("HEAD"),
            resp.ends_http("CONNECT"),
        );
    }
    let _ = http1::parse_request_line(raw);
    let _ = http1::parse_status_line(raw);
    let _ = parse_traceparent(raw);
}

fn chunked(raw: &[u8], split: usize, unseen: u64) {
    let split = split.min(raw.len());
    let mut decoder = ChunkedDecoder::default();
    let Ok(first) = decoder.feed(&raw[..split], 0) else {
        return;
    };
    assert!(first.consumed <= split as u64);
    if let Ok(second) = decoder.feed(&raw[split..], unseen) {
        assert!(second.consumed <= (raw.len() - split) as u64 + unseen);
    }
}

fn tracker(ops: &[Op]) {
    let mut tracker = Connections::new(Limits {
        max_connections: MAX_CONNECTIONS,
        max_buffered_bytes: MAX_BUFFERED,
    });
    let mut out = Vec::new();
    let mut now = 1_000u64;
    let meta = |fd: u8, tid: u8, now: u64| Meta {
        pid: 7,
        tid: u32::from(tid % 3),
        fd: i32::from(fd % 8),
        timestamp_ns: now,
    };
    for op in ops {
        now += 10;
        match op {
            Op::Connect { fd, client } => {
                let role = if *client { Role::Client } else { Role::Server };
                let event = Event::Connect {
                    meta: meta(*fd, 0, now),
                    role,
                    peer: None,
                    local: None,
                };
                tracker.on_event(&event, &mut out);
            }
            Op::Close { fd } => tracker.on_event(
                &Event::Close {
                    meta: meta(*fd, 0, now),
                },
                &mut out,
            ),
            Op::Data {
                fd,
                tid,
                egress,
                fragment,
                uncaptured,
                bytes,
            } => {
                let mut payload = FRAGMENTS[usize::from(*fragment) % FRAGMENTS.len()].to_vec();
                payload.extend_from_slice(bytes);
                payload.truncate(1024);
                let event = Event::Data {
                    meta: meta(*fd, *tid, now),
                    direction: if *egress {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    },
                    total_len: payload.len() as u32 + u32::from(*uncaptured),
                    payload: &payload,
                };
                tracker.on_event(&event, &mut out);
            }
            Op::Addresses { fd } => {
                let key = ConnKey::Fd {
                    pid: 7,
                    fd: i32::from(fd % 8),
                };
                tracker.set_addresses(key, 7, None, None);
            }
            Op::Exit => tracker.forget_process(7, &mut out),
        }
        assert!(tracker.connections() <= MAX_CONNECTIONS);
    }
    for tx in &out {
        assert!(tx.start_ns <= tx.end_ns);
        assert_ne!(tx.trace.trace_id, [0; 16]);
        assert_ne!(tx.trace.span_id, [0; 8]);
    }
}
