//! The connection layer with HTTP/1 traffic: detection, roles, lifetimes, bounds, eviction and
//! the trace context shared by the exchanges of a thread.

use std::net::SocketAddr;

use super::*;
use crate::connection::context::parse_traceparent;
use crate::connection::testing::*;

#[test]
fn process_exit_flushes_its_connections() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    sim.read(FD, b"GET /a HTTP/1.0\r\n\r\n");
    sim.write(FD, b"HTTP/1.0 200 OK\r\n\r\npartial");
    sim.connect(FD + 1, Role::Server);
    sim.read(FD + 1, b"GET /b HTTP/1.1\r\n\r\n");
    let mut out = Vec::new();
    sim.conns.forget_process(PID + 1, &mut out);
    assert!(out.is_empty());
    sim.conns.forget_process(PID, &mut out);
    out.sort_by(|a, b| http(a).target.cmp(&http(b).target));
    assert_eq!(
        summary(&out),
        expected(&[
            ("GET", "/a", 200, Some(0), Some(7)),
            ("GET", "/b", 0, Some(0), None)
        ])
    );
    assert_eq!(sim.conns.connections(), 0);
}

#[test]
fn fd_reuse_resets_the_connection() {
    let mut sim = Sim::new();
    sim.connect(FD, Role::Server);
    sim.read(FD, b"GET /abandoned HTTP/1.1\r\n\r\n");
    // The close was missed: a new accept on the same fd ends the old connection.
    sim.connect(FD, Role::Client);
    assert_eq!(
        summary(&sim.take()),
        expected(&[("GET", "/abandoned", 0, Some(0), None)])
    );
    sim.write(FD, b"GET /fresh HTTP/1.1\r\n\r\n");
    sim.read(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let txs = sim.take();
    assert_eq!(
        summary(&txs),
        expected(&[("GET", "/fresh", 200, Some(0), Some(0))])
    );
    assert_eq!(txs[0].kind, SpanKind::Client);
    // Closed and reused without a connect event: the role is inferred again.
    sim.close(FD);
    sim.read(FD, b"GET /inferred HTTP/1.1\r\n\r\n");
    sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let txs = sim.take();
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].kind, SpanKind::Server);
}

#[test]
fn unknown_role_is_inferred_from_the_first_request() {
    let mut sim = Sim::new();
    // A connection that predates the sidecar, caught in the middle of a response body.
    sim.conns.set_addresses(
        ConnKey::Fd { pid: PID, fd: FD },
        PID,
        Some("10.0.0.1:8080".parse().unwrap()),
        None,
    );
    sim.write(FD, b"tail of an earlier response body");
    sim.read(FD, b"GET /seen HTTP/1.1\r\n\r\n");
    sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let txs = sim.take();
    assert_eq!(
        summary(&txs),
        expected(&[("GET", "/seen", 200, Some(0), Some(0))])
    );
    assert_eq!(txs[0].kind, SpanKind::Server);
    assert_eq!(txs[0].local, Some("10.0.0.1:8080".parse().unwrap()));
    // A process that writes a request is the client.
    sim.write(FD + 1, b"DELETE /x HTTP/1.1\r\n\r\n");
    sim.read(FD + 1, b"HTTP/1.1 204 No Content\r\n\r\n");
    let txs = sim.take();
    assert_eq!(txs[0].kind, SpanKind::Client);
    assert_eq!(http(&txs[0]).status, 204);
}

#[test]
fn traffic_of_no_known_protocol_is_abandoned_cheaply() {
    let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n";
    let cases: [(Role, Direction, &[u8]); 5] = [
        (Role::Server, Direction::Ingress, tls_hello),
        // AMQP's protocol header (Redis, PostgreSQL and MySQL are parsed now).
        (Role::Client, Direction::Egress, b"AMQP\x00\x00\x09\x01"),
        // A MySQL-like server greeting cut before its auth data: not enough to be one.
        (
            Role::Client,
            Direction::Ingress,
            b"J\x00\x00\x00\n8.0.36\x00",
        ),
        (Role::Server, Direction::Ingress, b"SSH-2.0-OpenSSH_9.2\r\n"),
        (Role::Server, Direction::Ingress, &[0u8; 64]),
    ];
    for (role, direction, bytes) in cases {
        let mut sim = Sim::new();
        sim.connect(FD, role);
        sim.data(TID, FD, direction, bytes);
        assert_eq!(sim.conns.stats().abandoned_connections, 1, "{bytes:?}");
        // Whatever follows is ignored, HTTP-looking or not.
        sim.read(FD, b"GET / HTTP/1.1\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        sim.close(FD);
        assert!(sim.take().is_empty(), "{bytes:?}");
    }
    // Unknown-role binary traffic is given up on after a few events.
    let mut sim = Sim::new();
    for _ in 0..MAX_UNRECOGNIZED_CHUNKS {
        sim.read(FD, b"\x00\x01binary");
    }
    assert_eq!(sim.conns.stats().abandoned_connections, 1);
}

#[test]
fn random_bytes_never_panic() {
    for seed in 0..300u32 {
        let mut sim = Sim::with_limits(Limits {
            max_connections: 4,
            max_buffered_bytes: 8192,
        });
        for i in 0..40u32 {
            let len = (rand::random::<u32>() % 1500) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rand::random()).collect();
            // Mix in HTTP so the parsers get past the first byte.
            if i % 3 == 0 {
                bytes.splice(
                    0..0,
                    b"GET / HTTP/1.1\r\nContent-Length: 40\r\n".iter().copied(),
                );
            }
            if i % 5 == 1 {
                bytes.splice(
                    0..0,
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1"
                        .iter()
                        .copied(),
                );
            }
            let fd = (seed + i) as i32 % 6;
            match rand::random::<u8>() % 8 {
                0 => sim.connect(fd, Role::Server),
                1 => sim.close(fd),
                2..=4 => {
                    sim.read(fd, &bytes);
                }
                _ => {
                    sim.write(fd, &bytes);
                }
            }
        }
        assert!(sim.conns.connections() <= 4);
        assert!(sim.conns.buffered() <= 8192);
    }
}

#[test]
fn client_requests_while_serving_join_the_server_trace() {
    const SERVER_FD: i32 = 5;
    const CLIENT_FD: i32 = 6;
    const OTHER_TID: u32 = 202;
    let mut sim = Sim::new();
    sim.connect(SERVER_FD, Role::Server);
    sim.read(SERVER_FD, b"GET /call HTTP/1.1\r\n\r\n");
    // The serving thread calls a downstream service...
    sim.connect(CLIENT_FD, Role::Client);
    sim.write(CLIENT_FD, b"GET /downstream HTTP/1.1\r\n\r\n");
    sim.read(CLIENT_FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    // ...another thread makes an unrelated call...
    sim.data(
        OTHER_TID,
        CLIENT_FD + 1,
        Direction::Egress,
        b"GET /unrelated HTTP/1.1\r\n\r\n",
    );
    sim.data(
        OTHER_TID,
        CLIENT_FD + 1,
        Direction::Ingress,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    // ...and the app writes its own traceparent on a call from the serving thread.
    sim.write(
        CLIENT_FD,
        b"GET /propagated HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
    );
    sim.read(CLIENT_FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    sim.write(SERVER_FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    // After the response the thread is no longer serving.
    sim.write(CLIENT_FD, b"GET /after HTTP/1.1\r\n\r\n");
    sim.read(CLIENT_FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");

    let txs = sim.take();
    let by_target = |target: &str| txs.iter().find(|t| http(t).target == target).unwrap().trace;
    let server = by_target("/call");
    let downstream = by_target("/downstream");
    assert_eq!(downstream.trace_id, server.trace_id);
    assert_eq!(downstream.parent_span_id, Some(server.span_id));
    assert_ne!(downstream.span_id, server.span_id);
    let unrelated = by_target("/unrelated");
    assert_ne!(unrelated.trace_id, server.trace_id);
    assert_eq!(unrelated.parent_span_id, None);
    let propagated = by_target("/propagated");
    let header =
        parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    assert_eq!(propagated.trace_id, header.trace_id);
    assert_eq!(propagated.parent_span_id, Some(header.parent_id));
    let after = by_target("/after");
    assert_ne!(after.trace_id, server.trace_id);
    assert_eq!(after.parent_span_id, None);
    assert!(sim.conns.serving_threads() == 0);
}

#[test]
fn addresses_resolved_before_the_connect_event_are_kept() {
    let mut sim = Sim::new();
    let local: SocketAddr = "10.0.0.1:8080".parse().unwrap();
    sim.conns
        .set_addresses(ConnKey::Fd { pid: PID, fd: FD }, PID, Some(local), None);
    sim.connect(FD, Role::Server);
    sim.read(FD, b"GET / HTTP/1.1\r\n\r\n");
    sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let txs = sim.take();
    assert_eq!(txs[0].local, Some(local));
    assert_eq!(txs[0].peer, Some("10.0.0.9:40000".parse().unwrap()));
    // A reused fd does not inherit the previous socket's addresses.
    sim.close(FD);
    sim.connect(FD, Role::Server);
    sim.read(FD, b"GET / HTTP/1.1\r\n\r\n");
    sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(sim.take()[0].local, None);
}

#[test]
fn connection_limit_evicts_the_least_recently_active() {
    let mut sim = Sim::with_limits(Limits {
        max_connections: 4,
        max_buffered_bytes: 1 << 20,
    });
    for fd in 0..10 {
        sim.connect(fd, Role::Server);
        sim.read(fd, format!("GET /{fd} HTTP/1.1\r\n\r\n").as_bytes());
    }
    assert_eq!(sim.conns.connections(), 4);
    assert_eq!(sim.conns.stats().evicted_connections, 6);
    assert_eq!(sim.conns.stats().discarded_requests, 6);
    // The oldest were dropped: their responses make no spans; the newest still do.
    sim.write(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    sim.write(9, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        summary(&sim.take()),
        expected(&[("GET", "/9", 200, Some(0), Some(0))])
    );
}

#[test]
fn recent_activity_protects_an_old_connection() {
    let mut sim = Sim::with_limits(Limits {
        max_connections: 4,
        max_buffered_bytes: 1 << 20,
    });
    for fd in 0..4 {
        sim.connect(fd, Role::Server);
    }
    // fd 0 is the oldest connection but the most recently active one.
    for _ in 0..1000 {
        sim.read(0, b"GET /busy HTTP/1.1\r\n\r\n");
        sim.write(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
    assert_eq!(sim.take().len(), 1000);
    sim.connect(4, Role::Server);
    sim.connect(5, Role::Server);
    assert_eq!(sim.conns.stats().evicted_connections, 2);
    for (fd, kept) in [
        (0, true),
        (1, false),
        (2, false),
        (3, true),
        (4, true),
        (5, true),
    ] {
        assert_eq!(
            sim.conns.conns.contains_key(&ConnKey::Fd { pid: PID, fd }),
            kept,
            "fd {fd}"
        );
    }
}

#[test]
fn buffered_bytes_stay_within_the_limit() {
    let limit = 16 * 1024;
    let mut sim = Sim::with_limits(Limits {
        max_connections: 1000,
        max_buffered_bytes: limit,
    });
    // Many connections each holding half a head.
    let partial = format!("GET /slow HTTP/1.1\r\nX-Pad: {}", "p".repeat(900));
    for fd in 0..100 {
        sim.connect(fd, Role::Server);
        sim.read(fd, partial.as_bytes());
        assert!(sim.conns.buffered() <= limit);
    }
    assert!(sim.conns.stats().evicted_connections > 50);
    assert!(sim.conns.connections() < 20);
    // The most recent one is intact and completes normally.
    sim.read(99, b"\r\n\r\n");
    sim.write(99, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        summary(&sim.take()),
        expected(&[("GET", "/slow", 200, Some(0), Some(0))])
    );
    // Accounting returns to zero when everything is closed.
    for fd in 0..100 {
        sim.close(fd);
    }
    assert_eq!(sim.conns.buffered(), 0);
}
