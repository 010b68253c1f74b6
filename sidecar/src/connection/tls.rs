//! TLS plaintext on the connection layer. The uprobes hand over what `SSL_read*` returned and
//! `SSL_write*` took; the kernel never captures the ciphertext of a socket it tied to a hooked
//! session, so the plaintext is the connection's byte stream from then on.
//!
//! How plaintext finds its connection (the "tie", made in the kernel, see
//! `sidecar-bpf/src/programs/tls.rs`): with the socket tracepoints, the read or write syscall
//! the same thread makes inside the `SSL_*` call names the socket, and a buffered `SSL_read`
//! that makes no syscall uses the session's socket known from an earlier call: the record
//! carries the descriptor. A library that moves ciphertext through memory buffers (Node.js)
//! writes its records right after the `SSL_*` call: the kernel ties the session at that write
//! and says so with a tie record; the plaintext it saw before is held here until then.
//!
//! With the pod-scoped hooks the tie is by socket cookie (the thread's egress inside the call,
//! or its record write for a memory-BIO session) and the plaintext goes to that socket's
//! connection; the cgroup programs record no ciphertext of a tied socket.
//!
//! A connection's first plaintext replaces whatever its ciphertext looked like (the bytes the
//! capture saw before the tie: a peeked ClientHello, a handshake outside a hooked call): the
//! parser starts over on the plaintext, and spans say `https`.

use std::collections::VecDeque;

use super::{Conn, ConnKey, Connections, HashMap, State, Transaction};
use crate::capture::events::{Direction, Meta, Payload, Pieces, TlsSession};
use crate::connection::stream::Chunk;

/// Held plaintext across all untied sessions; beyond it the oldest session's goes.
const MAX_HELD_BYTES: usize = 1 << 20;

/// One held call.
#[derive(Debug)]
struct HeldCall {
    meta: Meta,
    direction: Direction,
    total_len: u32,
    /// 0: `bytes` is a prefix; else this many pieces.
    piece_count: usize,
    bytes: Vec<u8>,
}

/// Plaintext of sessions whose socket is not known yet, by (pid, `SSL*`).
#[derive(Debug, Default)]
pub(super) struct Held {
    sessions: HashMap<(u32, u64), Vec<HeldCall>>,
    order: VecDeque<(u32, u64)>,
    bytes: usize,
}

impl Held {
    fn hold(&mut self, key: (u32, u64), call: HeldCall) {
        self.bytes += call.bytes.len();
        let calls = self.sessions.entry(key).or_default();
        if calls.is_empty() {
            self.order.push_back(key);
        }
        calls.push(call);
        while self.bytes > MAX_HELD_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.drop_session(oldest);
        }
    }

    fn take(&mut self, key: (u32, u64)) -> Vec<HeldCall> {
        let calls = self.sessions.remove(&key).unwrap_or_default();
        self.bytes = self
            .bytes
            .saturating_sub(calls.iter().map(|c| c.bytes.len()).sum());
        self.order.retain(|k| *k != key);
        calls
    }

    fn drop_session(&mut self, key: (u32, u64)) {
        if let Some(calls) = self.sessions.remove(&key) {
            self.bytes = self
                .bytes
                .saturating_sub(calls.iter().map(|c| c.bytes.len()).sum());
        }
    }

    /// The session ended before its socket was known: what it held is dropped.
    pub(super) fn forget(&mut self, pid: u32, ssl: u64) {
        self.take((pid, ssl));
    }
}

/// The connection of a session's plaintext: its descriptor when the socket tracepoints tied it,
/// else its socket's cookie when the pod-scoped programs did, else none yet (held).
fn session_key(meta: &Meta, session: TlsSession) -> Option<ConnKey> {
    if meta.fd >= 0 {
        Some(ConnKey::fd(meta.pid, meta.fd))
    } else if session.cookie != 0 {
        Some(ConnKey::Socket(session.cookie))
    } else {
        None
    }
}

impl Connections {
    /// Plaintext of one `SSL_*` call.
    pub(super) fn tls_data(
        &mut self,
        meta: &Meta,
        session: TlsSession,
        direction: Direction,
        total_len: u32,
        data: Payload<'_>,
        out: &mut Vec<Transaction>,
    ) {
        let Some(key) = session_key(meta, session) else {
            let (piece_count, bytes) = match data {
                Payload::Prefix(bytes) => (0, bytes),
                Payload::Pieces(pieces) => (pieces.iter().count(), pieces.raw()),
            };
            self.held.hold(
                (meta.pid, session.ssl),
                HeldCall {
                    meta: *meta,
                    direction,
                    total_len,
                    piece_count,
                    bytes: bytes.to_vec(),
                },
            );
            return;
        };
        // The session was tied in this very call (the pod-scoped hooks learn a socket from the
        // call's egress, which a read before it did not have): what it held goes first.
        if self.held.sessions.contains_key(&(meta.pid, session.ssl)) {
            self.tls_tie(meta, session, out);
        }
        self.mark_tls(key, meta.pid);
        match data {
            Payload::Prefix(payload) => {
                let chunk =
                    Chunk::of_call(payload, u64::from(total_len), meta.timestamp_ns, meta.tid);
                self.chunk(key, meta.pid, direction, &chunk, out);
            }
            Payload::Pieces(pieces) => self.pieces(key, meta, direction, total_len, pieces, out),
        }
    }

    /// A session's socket became known: the plaintext held for it goes to its connection.
    pub(super) fn tls_tie(&mut self, meta: &Meta, session: TlsSession, out: &mut Vec<Transaction>) {
        let calls = self.held.take((meta.pid, session.ssl));
        let Some(key) = session_key(meta, session) else {
            return;
        };
        self.mark_tls(key, meta.pid);
        for call in calls {
            let call_meta = Meta {
                fd: meta.fd,
                ..call.meta
            };
            let data = if call.piece_count == 0 {
                Payload::Prefix(&call.bytes)
            } else {
                match Pieces::check(&call.bytes, call.piece_count, call.total_len) {
                    Ok(pieces) => Payload::Pieces(pieces),
                    Err(_) => continue,
                }
            };
            self.tls_data(
                &call_meta,
                session,
                call.direction,
                call.total_len,
                data,
                out,
            );
        }
    }

    /// The connection under `key` carries TLS plaintext from now on: what its ciphertext set
    /// up is dropped and detection starts over.
    fn mark_tls(&mut self, key: ConnKey, pid: u32) {
        if !self.conns.contains_key(&key) {
            let conn = Conn::new(&mut self.next_serial, pid, super::Role::Unknown, None);
            self.insert(key, conn);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.tls {
            return;
        }
        conn.tls = true;
        let mut none = Vec::new();
        let mut shared = super::Shared {
            traces: &mut self.traces,
            stats: &mut self.stats,
            out: &mut none,
        };
        conn.discard(&mut shared);
        conn.state = State::Detecting { chunks: 0 };
        self.buffered = self.buffered.saturating_sub(conn.heap);
        conn.heap = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::events::{Event, Role};
    use crate::connection::testing::{FD, PID, Sim, TID, http};

    const SSL: u64 = 0x5555_0000;

    fn tls(sim: &mut Sim, fd: i32, direction: Direction, bytes: &[u8]) {
        let meta = sim.meta(PID, TID, fd);
        let event = Event::TlsData {
            meta,
            session: TlsSession {
                ssl: SSL,
                cookie: 0,
            },
            direction,
            total_len: bytes.len() as u32,
            data: Payload::Prefix(bytes),
        };
        sim.conns.on_event(&event, &mut sim.out);
    }

    const REQUEST: &[u8] = b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n";
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn plaintext_after_ciphertext_starts_the_connection_over_as_https() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        // A ClientHello read outside a hooked call: not a protocol, the connection is dropped...
        sim.read(FD, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]);
        // ...until its plaintext comes.
        tls(&mut sim, FD, Direction::Ingress, REQUEST);
        tls(&mut sim, FD, Direction::Egress, RESPONSE);
        let txs = sim.take();
        assert_eq!(txs.len(), 1, "{txs:?}");
        assert!(txs[0].tls);
        assert_eq!(http(&txs[0]).target, "/a");
        assert_eq!(http(&txs[0]).status, 200);
        // The peer the connect event named is kept.
        assert_eq!(txs[0].peer, Some("10.0.0.9:40000".parse().unwrap()));
    }

    #[test]
    fn untied_plaintext_is_held_until_the_tie_and_dropped_at_the_sessions_end() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Client);
        tls(&mut sim, -1, Direction::Egress, RESPONSE);
        // Another session's plaintext, which ends before it is tied.
        let meta = sim.meta(PID, TID, -1);
        let other = TlsSession { ssl: 7, cookie: 0 };
        sim.conns.on_event(
            &Event::TlsData {
                meta,
                session: other,
                direction: Direction::Egress,
                total_len: REQUEST.len() as u32,
                data: Payload::Prefix(REQUEST),
            },
            &mut sim.out,
        );
        sim.conns.on_event(
            &Event::TlsClose {
                meta,
                session: other,
            },
            &mut sim.out,
        );
        assert!(!sim.conns.held.sessions.contains_key(&(PID, 7)));
        // The first session: a request held, tied, then its response.
        let mut sim = Sim::new();
        sim.connect(FD, Role::Client);
        tls(&mut sim, -1, Direction::Egress, REQUEST);
        assert_eq!(sim.conns.held.bytes, REQUEST.len());
        let meta = sim.meta(PID, TID, FD);
        sim.conns.on_event(
            &Event::TlsTie {
                meta,
                session: TlsSession {
                    ssl: SSL,
                    cookie: 0,
                },
            },
            &mut sim.out,
        );
        assert_eq!(sim.conns.held.bytes, 0);
        tls(&mut sim, FD, Direction::Ingress, RESPONSE);
        let txs = sim.take();
        assert_eq!(txs.len(), 1, "{txs:?}");
        assert!(txs[0].tls);
        assert_eq!(http(&txs[0]).method, "GET");
    }

    #[test]
    fn held_plaintext_goes_first_when_a_later_call_of_the_session_is_tied() {
        let mut sim = Sim::new();
        let cookie = 99;
        sim.conns.open(
            ConnKey::Socket(cookie),
            PID,
            crate::connection::Opened {
                role: Role::Server,
                local: Some("10.0.0.1:5432".parse().unwrap()),
                peer: None,
            },
            1,
            &mut sim.out,
        );
        // A read before the session's socket was known (its ciphertext came in softirq)...
        tls(&mut sim, -1, Direction::Ingress, REQUEST);
        // ...then the response, whose egress tied the session inside the call.
        let meta = sim.meta(PID, TID, -1);
        sim.conns.on_event(
            &Event::TlsData {
                meta,
                session: TlsSession { ssl: SSL, cookie },
                direction: Direction::Egress,
                total_len: RESPONSE.len() as u32,
                data: Payload::Prefix(RESPONSE),
            },
            &mut sim.out,
        );
        let txs = sim.take();
        assert_eq!(txs.len(), 1, "{txs:?}");
        assert!(txs[0].tls);
        assert_eq!(http(&txs[0]).target, "/a");
        assert_eq!(sim.conns.held.bytes, 0);
    }

    #[test]
    fn held_plaintext_is_bounded() {
        let mut held = Held::default();
        let call = |n: usize| HeldCall {
            meta: Meta {
                pid: PID,
                tid: TID,
                fd: -1,
                timestamp_ns: 0,
            },
            direction: Direction::Egress,
            total_len: n as u32,
            piece_count: 0,
            bytes: vec![0; n],
        };
        for ssl in 0..2000u64 {
            held.hold((PID, ssl), call(1024));
        }
        assert!(held.bytes <= MAX_HELD_BYTES);
        assert_eq!(held.sessions.len(), MAX_HELD_BYTES / 1024);
        // The oldest went first.
        assert!(held.sessions.contains_key(&(PID, 1999)));
        assert!(!held.sessions.contains_key(&(PID, 0)));
    }
}
