//! One HTTP request/response exchange observed on a socket: what the connection tracker produces
//! and what spans and metrics are made from.

use std::net::SocketAddr;

/// Whether the instrumented process served the request or sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Server,
    Client,
}

/// W3C trace context assigned to a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent span: from an incoming or app-written `traceparent`, or the server request the
    /// same thread was serving when it sent this one.
    pub parent_span_id: Option<[u8; 8]>,
    /// The sampled flag of an incoming `traceparent` (true when the trace starts here).
    pub sampled: bool,
}

/// A complete HTTP/1.x exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTransaction {
    pub kind: SpanKind,
    /// Process and thread (sidecar PID namespace) that handled the request.
    pub pid: u32,
    pub tid: u32,
    /// Request method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Request target as sent: path and query (or absolute form for proxies).
    pub target: String,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// HTTP minor version of the request: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// Final (non-1xx) response status code; 0 when the connection ended without a response.
    pub status: u16,
    /// Request and response body sizes when known (Content-Length or counted chunked bytes).
    pub request_body_size: Option<u64>,
    pub response_body_size: Option<u64>,
    /// `CLOCK_MONOTONIC` ns of the first request byte and the last response byte.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Local and remote socket addresses when known.
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub trace: TraceContext,
}
