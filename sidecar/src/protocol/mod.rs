//! Application protocols: recognizing which one a connection speaks, then one sans-IO parser per
//! protocol that turns the connection's byte streams into transactions.
//!
//! A parser is fed [`Chunk`]s of either side of one connection in the order they happened, and
//! knows nothing of sockets, processes or capture modes. What it may do beyond reading bytes goes
//! through [`Context`]: take trace context for an exchange that starts, and hand over exchanges
//! that are complete. A new protocol is a module here with a [`Protocol`] entry in [`PROTOCOLS`],
//! plus its mapping in `telemetry`.

use std::net::SocketAddr;

use crate::connection::{
    context::{TraceBook, TraceContext, TraceParent},
    stream::Chunk,
};
use crate::transaction::{Facts, SpanKind, Transaction};

pub mod db;
#[cfg(test)]
mod detection_tests;
pub(crate) mod frames;
pub mod http;
pub mod http1;
pub mod http2;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sql;

/// Which end of the connection sent the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client: requests, commands, queries.
    Client,
    /// The server: responses, results.
    Server,
}

/// What reading a chunk decided about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// The bytes are not (or no longer) this protocol: ignore the connection from now on.
    Abandon,
}

/// A parser's view of the rest of the data path while it reads one connection.
#[derive(Debug)]
pub struct Context<'a> {
    pub(crate) kind: SpanKind,
    pub(crate) pid: u32,
    /// The connection's id in the trace book.
    pub(crate) conn: u64,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
    /// The connection was seen from its start (accepted or connected), not joined mid-stream.
    pub(crate) from_start: bool,
    /// The bytes are the plaintext of a TLS session.
    pub(crate) tls: bool,
    pub(crate) traces: &'a mut TraceBook,
    pub(crate) out: &'a mut Vec<Transaction>,
    /// Requests dropped without a transaction (beyond a parser's bounds).
    pub(crate) discarded: &'a mut u64,
}

/// A complete exchange, as a parser hands it over.
#[derive(Debug)]
pub struct Exchange {
    /// The thread that moved the request's first bytes, when known.
    pub tid: Option<u32>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub trace: TraceContext,
    pub facts: Facts,
}

impl Context<'_> {
    /// Whether the instrumented process is the server of this connection.
    pub fn kind(&self) -> SpanKind {
        self.kind
    }

    /// Whether the connection was seen from its start: what its first bytes set up (a database
    /// selected, a handshake) is known then, and unknown for a connection joined mid-stream.
    pub fn from_start(&self) -> bool {
        self.from_start
    }

    /// Trace context for an exchange whose request starts now on thread `tid`, continuing
    /// `propagated` when the request carried one (see [`TraceBook::start`]).
    pub fn start_trace(
        &mut self,
        tid: Option<u32>,
        propagated: Option<TraceParent>,
    ) -> TraceContext {
        self.traces
            .start(self.kind, self.pid, tid, self.conn, propagated)
    }

    /// An exchange started with [`Context::start_trace`] ends without a transaction.
    pub fn drop_exchange(&mut self, tid: Option<u32>, trace: &TraceContext) {
        self.traces
            .end(self.kind, self.pid, tid, self.conn, trace, self.out);
        *self.discarded += 1;
    }

    /// An exchange is complete: its thread no longer serves it, and its transaction goes out
    /// (a client call possibly after the request it was made for, see [`TraceBook`]).
    pub fn complete(&mut self, exchange: Exchange) {
        let transaction = Transaction {
            kind: self.kind,
            pid: self.pid,
            tid: exchange.tid.unwrap_or(0),
            start_ns: exchange.start_ns,
            end_ns: exchange.end_ns.max(exchange.start_ns),
            local: self.local,
            peer: self.peer,
            tls: self.tls,
            trace: exchange.trace,
            facts: exchange.facts,
        };
        self.traces
            .complete(transaction, exchange.tid, self.conn, self.out);
    }
}

/// A protocol parser for one connection. Sans-IO: bytes in, transactions out through the
/// [`Context`]; it must never panic and must bound what it holds.
pub trait Parser: std::fmt::Debug {
    /// The next chunk of one side, in the order the bytes moved.
    fn feed(&mut self, side: Side, chunk: &Chunk<'_>, cx: &mut Context<'_>) -> Verdict;
    /// The connection ended at `end_ns` (closed, replaced, or its process exited): exchanges a
    /// close completes are handed over, the others end without a response.
    fn finish(&mut self, end_ns: u64, cx: &mut Context<'_>);
    /// The connection is dropped (evicted, abandoned): exchanges in flight end without
    /// transactions, through [`Context::drop_exchange`].
    fn discard(&mut self, cx: &mut Context<'_>);
    /// Heap bytes held, for the connection layer's memory bound.
    fn heap_bytes(&self) -> usize;
}

/// How a protocol recognizes its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// Not this protocol (or not at this point of the stream).
    No,
    /// This protocol, sent by this side.
    Yes(Side),
}

/// A protocol the sidecar understands.
#[derive(Debug)]
pub struct Protocol {
    /// Name for logs and counters.
    pub name: &'static str,
    /// Recognizes the protocol from the visible bytes of a chunk that starts at a boundary:
    /// the first bytes of a connection, or of a later write when the connection was joined
    /// mid-stream. `side` is who sent them, when the connection's role is known.
    pub detect: fn(bytes: &[u8], side: Option<Side>) -> Detection,
    /// A parser for a connection recognized as this protocol.
    pub parser: fn() -> Box<dyn Parser>,
}

/// Every protocol, in the order detection tries them.
pub static PROTOCOLS: &[&Protocol] = &[
    &http1::PROTOCOL,
    &http2::PROTOCOL,
    &postgres::PROTOCOL,
    &mysql::PROTOCOL,
    &redis::PROTOCOL,
];

/// The first protocol that recognizes `bytes`, and who sent them.
pub fn detect(bytes: &[u8], side: Option<Side>) -> Option<(&'static Protocol, Side)> {
    if bytes.is_empty() {
        return None;
    }
    PROTOCOLS
        .iter()
        .find_map(|protocol| match (protocol.detect)(bytes, side) {
            Detection::Yes(sender) => Some((*protocol, sender)),
            Detection::No => None,
        })
}
