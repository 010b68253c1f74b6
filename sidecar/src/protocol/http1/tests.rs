//! The HTTP/1 parser through the connection layer: golden captures from real peers, split and
//! cut every way the capture can, and the exchanges HTTP/1.x allows.

use crate::capture::events::{Direction, Event, Role};
use crate::connection::context::parse_traceparent;
use crate::connection::testing::*;
use crate::protocol::http::HttpVersion;
use crate::transaction::{SpanKind, Transaction};

/// Golden captures (request stream, response stream) and the transactions they hold.
const GOLDEN: &[(&str, Expected)] = &[
    (
        "python_get_1_0",
        &[("GET", "/hello.txt", 200, Some(0), Some(13))],
    ),
    (
        "python_head",
        &[("HEAD", "/hello.txt", 200, Some(0), Some(0))],
    ),
    (
        "python_404",
        &[("GET", "/missing?q=1", 404, Some(0), Some(335))],
    ),
    (
        "python_post_501",
        &[("POST", "/form", 501, Some(7), Some(357))],
    ),
    (
        "nginx_keepalive",
        &[
            ("GET", "/hello.txt", 200, Some(0), Some(13)),
            ("GET", "/missing", 404, Some(0), Some(153)),
            ("HEAD", "/hello.txt", 200, Some(0), Some(0)),
            ("GET", "/fail", 500, Some(0), Some(5)),
            ("GET", "/old", 301, Some(0), Some(169)),
            ("GET", "/empty", 204, Some(0), Some(0)),
        ],
    ),
    (
        "nginx_gzip_chunked",
        &[("GET", "/big.txt", 200, Some(0), Some(3183))],
    ),
    ("nginx_304", &[("GET", "/hello.txt", 304, Some(0), Some(0))]),
    (
        "nginx_traceparent",
        &[("GET", "/hello.txt", 200, Some(0), Some(13))],
    ),
    (
        "custom_100_continue",
        &[("POST", "/echo", 201, Some(1500), Some(1500))],
    ),
    (
        "custom_chunked_request",
        &[("POST", "/echo", 201, Some(1500), Some(1500))],
    ),
    (
        "custom_http10_close",
        &[("GET", "/stream", 200, Some(0), Some(420))],
    ),
];

/// Plays a golden capture on one connection: the request stream split in two at
/// `req_split`, then the response stream at `resp_split`, then a close.
fn play(role: Role, name: &str, req_split: usize, resp_split: usize) -> Vec<Transaction> {
    let (req, resp) = (
        golden(&format!("{name}.req")),
        golden(&format!("{name}.resp")),
    );
    let mut sim = Sim::new();
    sim.connect(FD, role);
    let (to_server, to_client) = match role {
        Role::Client => (Direction::Egress, Direction::Ingress),
        _ => (Direction::Ingress, Direction::Egress),
    };
    // Syscalls of at most the capture size: every byte is seen (uncaptured bytes are
    // covered by the tests below).
    for part in [&req[..req_split], &req[req_split..]] {
        for syscall in part.chunks(CAPTURE) {
            sim.data(TID, FD, to_server, syscall);
        }
    }
    for part in [&resp[..resp_split], &resp[resp_split..]] {
        for syscall in part.chunks(CAPTURE) {
            sim.data(TID, FD, to_client, syscall);
        }
    }
    sim.close(FD);
    sim.take()
}
#[test]
fn golden_exchanges_as_server_and_client() {
    for &(name, rows) in GOLDEN {
        let len = golden(&format!("{name}.req")).len();
        for role in [Role::Server, Role::Client, Role::Unknown] {
            let txs = play(role, name, len, 0);
            assert_eq!(summary(&txs), expected(rows), "{name} as {role:?}");
            let kind = if role == Role::Client {
                SpanKind::Client
            } else {
                SpanKind::Server
            };
            assert!(txs.iter().all(|t| t.kind == kind), "{name} as {role:?}");
            assert!(
                txs.iter()
                    .all(|t| http(t).host.as_deref() == Some("127.0.0.1:19000"))
            );
        }
    }
}

/// Every split of the request stream (server side), and every split of the response stream
/// (client side), into two syscalls yields the same transactions.
#[test]
fn golden_exchanges_across_every_split() {
    for &(name, rows) in GOLDEN {
        let (req, resp) = (
            golden(&format!("{name}.req")),
            golden(&format!("{name}.resp")),
        );
        for split in 0..=req.len() {
            let txs = play(Role::Server, name, split, 0);
            assert_eq!(
                summary(&txs),
                expected(rows),
                "{name} request split at {split}"
            );
        }
        for split in 0..=resp.len() {
            let txs = play(Role::Client, name, req.len(), split);
            assert_eq!(
                summary(&txs),
                expected(rows),
                "{name} response split at {split}"
            );
        }
    }
}

#[test]
fn keepalive_with_many_requests_and_exact_timestamps() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    for i in 0..200 {
        let start = sim.read(
            FD,
            format!("GET /items/{i} HTTP/1.1\r\nHost: svc\r\n\r\n").as_bytes(),
        );
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let end = sim.write(FD, b"hello");
        let txs = sim.take();
        assert_eq!(txs.len(), 1, "request {i}");
        assert_eq!(http(&txs[0]).target, format!("/items/{i}"));
        assert_eq!((txs[0].start_ns, txs[0].end_ns), (start, end));
        assert_eq!(txs[0].peer, Some("10.0.0.9:40000".parse().unwrap()));
    }
    sim.close(FD);
    assert!(sim.take().is_empty());
    assert_eq!(sim.conns.connections(), 0);
}

#[test]
fn client_timestamps_run_from_the_first_write_to_the_last_read() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Client);
    // Syscalls are stamped at exit: the request starts when its first write returns.
    let first = sim.write(FD, b"POST /up HTTP/1.1\r\nContent-Length: 4\r\n\r\n");
    sim.write(FD, b"body");
    sim.read(FD, b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n");
    let last = sim.read(FD, b"ok");
    let txs = sim.take();
    assert_eq!(
        summary(&txs),
        expected(&[("POST", "/up", 202, Some(4), Some(2))])
    );
    assert_eq!((txs[0].start_ns, txs[0].end_ns), (first, last));
    assert_eq!(txs[0].kind, SpanKind::Client);
}

#[test]
fn requests_split_across_reads_start_at_the_first_byte() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    let start = sim.read(FD, b"GE");
    sim.read(FD, b"T /split HTTP/1.1\r\nHo");
    sim.read(FD, b"st: a\r\n");
    sim.read(FD, b"\r\n");
    let end = sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let txs = sim.take();
    assert_eq!(
        summary(&txs),
        expected(&[("GET", "/split", 200, Some(0), Some(0))])
    );
    assert_eq!((txs[0].start_ns, txs[0].end_ns), (start, end));
}

#[test]
fn pipelined_requests_in_one_read() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    let req = golden("nginx_keepalive.req");
    let resp = golden("nginx_keepalive.resp");
    sim.read(FD, &req);
    for chunk in resp.chunks(100) {
        sim.write(FD, chunk);
    }
    let txs = sim.take();
    assert_eq!(summary(&txs), expected(GOLDEN[4].1));
    // Pipelined requests all started with the one read.
    assert!(txs.iter().all(|t| t.start_ns == txs[0].start_ns));
    assert!(txs.windows(2).all(|w| w[0].end_ns < w[1].end_ns));
}

#[test]
fn hundred_continue_is_interim() {
    let req = golden("custom_100_continue.req");
    let resp = golden("custom_100_continue.resp");
    let (req_head, req_body) = req.split_at(177);
    let (interim, last) = resp.split_at(25);
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    sim.read(FD, req_head);
    sim.write(FD, interim);
    sim.read(FD, req_body);
    assert!(sim.take().is_empty());
    let mut end = 0;
    for syscall in last.chunks(CAPTURE) {
        end = sim.write(FD, syscall);
    }
    let txs = sim.take();
    assert_eq!(
        summary(&txs),
        expected(&[("POST", "/echo", 201, Some(1500), Some(1500))])
    );
    assert_eq!(txs[0].end_ns, end);
}

#[test]
fn large_bodies_with_truncated_payloads_are_skipped_by_length() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Client);
    sim.write(FD, b"GET /download HTTP/1.1\r\nHost: files\r\n\r\n");
    // 1 MB response in 64 KiB reads; the body itself looks like HTTP to make sure it is
    // skipped by count and never parsed.
    let total = 1_000_000usize;
    let mut first = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    let head_len = first.len();
    let filler = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n";
    let mut body = filler.iter().copied().cycle();
    first.extend(body.by_ref().take(65536 - head_len));
    sim.read(FD, &first);
    let mut left = total - (65536 - head_len);
    let mut end = 0;
    while left > 0 {
        let n = left.min(65536);
        let chunk: Vec<u8> = body.by_ref().take(n).collect();
        end = sim.read(FD, &chunk);
        left -= n;
    }
    let txs = sim.take();
    assert_eq!(
        summary(&txs),
        expected(&[("GET", "/download", 200, Some(0), Some(1_000_000))])
    );
    assert_eq!(txs[0].end_ns, end);
    // The connection is still in step for the next exchange.
    sim.write(FD, b"GET /next HTTP/1.1\r\n\r\n");
    sim.read(FD, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        summary(&sim.take()),
        expected(&[("GET", "/next", 404, Some(0), Some(0))])
    );
}

#[test]
fn chunked_response_in_one_syscall_beyond_the_capture() {
    // nginx's gzip response written at once: only its head and first chunk-size line are
    // captured; the chunk data and the last chunk are counted from the syscall's length.
    let mut sim = Sim::new();
    sim.connect(FD, Role::Client);
    sim.write(FD, &golden("nginx_gzip_chunked.req"));
    let end = sim.read(FD, &golden("nginx_gzip_chunked.resp"));
    let txs = sim.take();
    assert_eq!(summary(&txs), expected(GOLDEN[5].1));
    assert_eq!(txs[0].end_ns, end);
}

#[test]
fn head_responses_have_no_body_whatever_the_headers_say() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    sim.read(FD, b"HEAD /big HTTP/1.1\r\n\r\n");
    sim.write(
        FD,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    sim.read(FD, b"GET /small HTTP/1.1\r\n\r\n");
    sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(
        summary(&sim.take()),
        expected(&[
            ("HEAD", "/big", 200, Some(0), Some(0)),
            ("GET", "/small", 200, Some(0), Some(1))
        ])
    );
}

#[test]
fn close_delimited_response_ends_at_its_last_byte() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Client);
    sim.write(FD, b"GET /legacy HTTP/1.0\r\n\r\n");
    sim.read(
        FD,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nabc",
    );
    let last = sim.read(FD, &[b'z'; 3000]);
    assert!(sim.take().is_empty());
    sim.close(FD);
    let txs = sim.take();
    assert_eq!(
        summary(&txs),
        expected(&[("GET", "/legacy", 200, Some(0), Some(3003))])
    );
    assert_eq!(http(&txs[0]).version, HttpVersion::Http10);
    assert_eq!(txs[0].end_ns, last);
}

#[test]
fn incoming_traceparent_makes_the_server_span_a_child() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    sim.read(FD, &golden("nginx_traceparent.req"));
    sim.write(FD, &golden("nginx_traceparent.resp"));
    let txs = sim.take();
    let header =
        parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let trace = txs[0].trace;
    assert_eq!(trace.trace_id, header.trace_id);
    assert_eq!(trace.parent_span_id, Some(header.parent_id));
    assert!(trace.sampled);
    assert_ne!(trace.span_id, header.parent_id);

    // Unsampled upstream decision is kept.
    sim.read(
        FD,
        b"GET / HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\r\n\r\n",
    );
    sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let txs = sim.take();
    assert!(!txs[0].trace.sampled);
    assert_eq!(
        txs[0].trace.parent_span_id,
        Some([0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31])
    );

    // No (or an invalid) traceparent: a new trace.
    sim.read(FD, b"GET / HTTP/1.1\r\ntraceparent: garbage\r\n\r\n");
    sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let txs = sim.take();
    assert_eq!(txs[0].trace.parent_span_id, None);
    assert_ne!(txs[0].trace.trace_id, [0; 16]);
    assert_ne!(txs[0].trace.span_id, [0; 8]);
    assert!(txs[0].trace.sampled);
}

#[test]
fn protocol_switch_ends_tracking_after_its_transaction() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    sim.read(
        FD,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    sim.write(
        FD,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(
        summary(&sim.take()),
        expected(&[("GET", "/ws", 101, Some(0), None)])
    );
    sim.read(FD, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    sim.read(FD, b"GET /not-http-anymore HTTP/1.1\r\n\r\n");
    sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    sim.close(FD);
    assert!(sim.take().is_empty());
}

#[test]
fn heads_beyond_the_capture_still_make_one_span_each() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    let mut ends = Vec::new();
    let mut txs = Vec::new();
    for i in 0..3 {
        let req = format!(
            "GET /cookie/{i} HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
            "c".repeat(3000)
        );
        sim.read(FD, req.as_bytes());
        // The response's end is unknown (its head is cut off): it is over when the next
        // request arrives, or the connection closes.
        let resp = format!(
            "HTTP/1.1 200 OK\r\nSet-Cookie: {}\r\nContent-Length: 2\r\n\r\nok",
            "s".repeat(2000)
        );
        ends.push(sim.write(FD, resp.as_bytes()));
        txs.extend(sim.take());
        assert_eq!(txs.len(), i, "after exchange {i}");
    }
    sim.close(FD);
    txs.extend(sim.take());
    assert_eq!(
        summary(&txs),
        expected(&[
            ("GET", "/cookie/0", 200, None, None),
            ("GET", "/cookie/1", 200, None, None),
            ("GET", "/cookie/2", 200, None, None),
        ])
    );
    let got: Vec<u64> = txs.iter().map(|t| t.end_ns).collect();
    assert_eq!(got, ends);
}

#[test]
fn a_response_lost_whole_ends_with_status_zero_instead_of_shifting_later_ones() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    sim.read(FD, b"GET /first HTTP/1.1\r\n\r\n");
    // Only the body of a previous write was captured; the response head is not visible.
    let meta = sim.meta(PID, TID, FD);
    let sendfile = Event::Data {
        meta,
        direction: Direction::Egress,
        total_len: 4000,
        payload: &[],
    };
    sim.conns.on_event(&sendfile, &mut sim.out);
    sim.read(FD, b"GET /second HTTP/1.1\r\n\r\n");
    sim.write(FD, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        summary(&sim.take()),
        expected(&[
            ("GET", "/first", 0, Some(0), None),
            ("GET", "/second", 404, Some(0), Some(0))
        ])
    );
}
