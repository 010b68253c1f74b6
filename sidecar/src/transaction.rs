//! A transaction: one request and its response (or its end without one) as a protocol parser
//! saw it. A protocol-neutral envelope (who, when, which connection, which trace) around the
//! facts of the protocol itself; telemetry maps each protocol's facts to spans and metrics.

use std::net::SocketAddr;

pub use crate::connection::context::TraceContext;
use crate::protocol::db::DbCall;
use crate::protocol::http::HttpExchange;

/// Whether the instrumented process served the request or sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Server,
    Client,
}

/// A completed exchange on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub kind: SpanKind,
    /// Process and thread (sidecar PID namespace) that handled the request; the thread is the
    /// one that moved its first bytes, 0 when the capture did not know it.
    pub pid: u32,
    pub tid: u32,
    /// `CLOCK_MONOTONIC` ns of the first request byte and the last response byte.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Local and remote socket addresses when known.
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// Carried over TLS (its plaintext captured from the TLS library).
    pub tls: bool,
    pub trace: TraceContext,
    /// What the protocol says of the exchange.
    pub facts: Facts,
}

/// The protocol-specific part of a [`Transaction`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Facts {
    Http(HttpExchange),
    /// A database call (PostgreSQL, MySQL/MariaDB, Redis).
    Db(DbCall),
}
