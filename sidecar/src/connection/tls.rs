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
//! A connection's first plaintext replaces whatever its ciphertext looked like (the bytes the
//! capture saw before the tie: a peeked ClientHello, a handshake outside a hooked call): the
//! parser starts over on the plaintext, and spans say `https`.

use std::collections::VecDeque;

use super::{ConnKey, Connections, HashMap, State, Transaction};
use crate::capture::events::{Direction, Meta, Pieces, TlsPayload, TlsSession};
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

impl Connections {
    /// Plaintext of one `SSL_*` call.
    pub(super) fn tls_data(
        &mut self,
        meta: &Meta,
        session: TlsSession,
        direction: Direction,
        total_len: u32,
        data: TlsPayload<'_>,
        out: &mut Vec<Transaction>,
    ) {
        if meta.fd < 0 {
            let (piece_count, bytes) = match data {
                TlsPayload::Prefix(bytes) => (0, bytes),
                TlsPayload::Pieces(pieces) => (pieces.iter().count(), pieces.raw()),
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
        }
        let key = ConnKey::fd(meta.pid, meta.fd);
        self.mark_tls(key, meta.pid);
        match data {
            TlsPayload::Prefix(payload) => {
                let chunk =
                    Chunk::of_call(payload, u64::from(total_len), meta.timestamp_ns, meta.tid);
                self.chunk(key, meta.pid, direction, &chunk, out);
            }
            TlsPayload::Pieces(pieces) => self.pieces(key, meta, direction, total_len, pieces, out),
        }
    }

    /// A session's socket became known: the plaintext held for it goes to its connection.
    pub(super) fn tls_tie(&mut self, meta: &Meta, session: TlsSession, out: &mut Vec<Transaction>) {
        let calls = self.held.take((meta.pid, session.ssl));
        if meta.fd < 0 {
            // Only the pod-scoped capture ties by cookie alone; it has no descriptors.
            return;
        }
        let key = ConnKey::fd(meta.pid, meta.fd);
        self.mark_tls(key, meta.pid);
        for call in calls {
            let call_meta = Meta {
                fd: meta.fd,
                ..call.meta
            };
            let data = if call.piece_count == 0 {
                TlsPayload::Prefix(&call.bytes)
            } else {
                match Pieces::check(&call.bytes, call.piece_count, call.total_len) {
                    Ok(pieces) => TlsPayload::Pieces(pieces),
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
            self.insert(key, super::Conn::new(pid, super::Role::Unknown, None));
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.tls {
            return;
        }
        conn.tls = true;
        let before = conn.heap_bytes();
        let mut none = Vec::new();
        let mut shared = super::Shared {
            traces: &mut self.traces,
            stats: &mut self.stats,
            out: &mut none,
        };
        conn.discard(&mut shared);
        conn.state = State::Detecting { chunks: 0 };
        self.buffered = self.buffered.saturating_sub(before);
    }
}
