//! Test support: synthetic capture events fed to the connection layer, and the facts of the
//! HTTP transactions that come out.

use crate::capture::events::{Direction, Event, Meta, Role};
use crate::connection::{Connections, Limits};
use crate::protocol::db::DbCall;
use crate::protocol::http::HttpExchange;
use crate::transaction::{Facts, Transaction};

/// The HTTP facts of a transaction.
pub(crate) fn http(tx: &Transaction) -> &HttpExchange {
    match &tx.facts {
        Facts::Http(exchange) => exchange,
        other => panic!("not HTTP: {other:?}"),
    }
}

/// The database facts of a transaction.
pub(crate) fn db(tx: &Transaction) -> &DbCall {
    match &tx.facts {
        Facts::Db(call) => call,
        other => panic!("not a database call: {other:?}"),
    }
}

/// A recorded capture: each record one syscall's bytes, `C` from the client or `S` from the
/// server, as `sidecar/testdata/README.md` describes.
pub(crate) fn capture(protocol: &str, name: &str) -> Vec<(bool, Vec<u8>)> {
    let path = format!("{}/testdata/{protocol}/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut records = Vec::new();
    let mut rest = &bytes[..];
    while let [side, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        assert!(
            matches!(side, b'C' | b'S') && tail.len() >= len,
            "{path}: bad record"
        );
        records.push((*side == b'C', tail[..len].to_vec()));
        rest = &tail[len..];
    }
    assert!(rest.is_empty(), "{path}: trailing bytes");
    records
}

pub(crate) fn http_mut(tx: &mut Transaction) -> &mut HttpExchange {
    match &mut tx.facts {
        Facts::Http(exchange) => exchange,
        other => panic!("not HTTP: {other:?}"),
    }
}

pub(crate) const PID: u32 = 100;
pub(crate) const TID: u32 = 101;
pub(crate) const FD: i32 = 5;
/// What the kernel side copies of each syscall's data.
pub(crate) const CAPTURE: usize = sidecar_bpf::MAX_PAYLOAD;

pub(crate) fn golden(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/http1/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Feeds synthetic kernel events with a clock that advances 1000 ns per event.
pub(crate) struct Sim {
    pub(crate) conns: Connections,
    pub(crate) out: Vec<Transaction>,
    pub(crate) now: u64,
}

impl Sim {
    pub(crate) fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub(crate) fn with_limits(limits: Limits) -> Self {
        Self {
            conns: Connections::new(limits),
            out: Vec::new(),
            now: 1_000_000,
        }
    }

    pub(crate) fn meta(&mut self, pid: u32, tid: u32, fd: i32) -> Meta {
        self.now += 1000;
        Meta {
            pid,
            tid,
            fd,
            timestamp_ns: self.now,
        }
    }

    pub(crate) fn connect(&mut self, fd: i32, role: Role) {
        let meta = self.meta(PID, TID, fd);
        let peer = Some("10.0.0.9:40000".parse().unwrap());
        self.conns.on_event(
            &Event::Connect {
                meta,
                role,
                peer,
                local: None,
            },
            &mut self.out,
        );
    }

    pub(crate) fn close(&mut self, fd: i32) {
        let meta = self.meta(PID, TID, fd);
        self.conns.on_event(&Event::Close { meta }, &mut self.out);
    }

    /// One syscall moving `bytes`, of which the kernel captures the first 1024.
    pub(crate) fn data(&mut self, tid: u32, fd: i32, direction: Direction, bytes: &[u8]) -> u64 {
        let meta = self.meta(PID, tid, fd);
        let event = Event::Data {
            meta,
            direction,
            total_len: bytes.len() as u32,
            payload: &bytes[..bytes.len().min(CAPTURE)],
        };
        self.conns.on_event(&event, &mut self.out);
        meta.timestamp_ns
    }

    /// One syscall moving `bytes`, of which the kernel captures the first `captured`.
    pub(crate) fn cut(
        &mut self,
        tid: u32,
        fd: i32,
        direction: Direction,
        bytes: &[u8],
        captured: usize,
    ) -> u64 {
        let meta = self.meta(PID, tid, fd);
        let event = Event::Data {
            meta,
            direction,
            total_len: bytes.len() as u32,
            payload: &bytes[..bytes.len().min(captured)],
        };
        self.conns.on_event(&event, &mut self.out);
        meta.timestamp_ns
    }

    pub(crate) fn read(&mut self, fd: i32, bytes: &[u8]) -> u64 {
        self.data(TID, fd, Direction::Ingress, bytes)
    }

    pub(crate) fn write(&mut self, fd: i32, bytes: &[u8]) -> u64 {
        self.data(TID, fd, Direction::Egress, bytes)
    }

    pub(crate) fn take(&mut self) -> Vec<Transaction> {
        std::mem::take(&mut self.out)
    }
}

/// The facts a test checks: method, target, status, request and response body sizes.
pub(crate) type Summary = (String, String, u16, Option<u64>, Option<u64>);

pub(crate) fn summary(txs: &[Transaction]) -> Vec<Summary> {
    txs.iter()
        .map(|t| {
            let h = http(t);
            (
                h.method.clone(),
                h.target.clone(),
                h.status,
                h.request_body_size,
                h.response_body_size,
            )
        })
        .collect()
}

pub(crate) type Expected = &'static [(&'static str, &'static str, u16, Option<u64>, Option<u64>)];

pub(crate) fn expected(rows: Expected) -> Vec<Summary> {
    rows.iter()
        .map(|&(m, t, s, q, r)| (m.into(), t.into(), s, q, r))
        .collect()
}
