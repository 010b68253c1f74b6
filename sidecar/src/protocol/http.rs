//! What an HTTP exchange tells, whichever version carried it: the facts HTTP parsers produce and
//! the HTTP mapping turns into spans and metrics.

/// HTTP version of an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    Http10,
    Http11,
    Http2,
}

impl HttpVersion {
    /// `network.protocol.version`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "1.0",
            HttpVersion::Http11 => "1.1",
            HttpVersion::Http2 => "2",
        }
    }
}

/// One HTTP request and its response.
///
/// An HTTP/2 header field the capture could not decode (an HPACK table entry from before the
/// sidecar joined the connection) is never guessed: an unknown method or target is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpExchange {
    /// Request method as sent (`GET`, `POST`, ...); empty when unknown.
    pub method: String,
    /// Request target as sent: path and query (or absolute form for proxies); empty when unknown.
    pub target: String,
    /// The `Host` header (HTTP/2: `:authority`), if any.
    pub host: Option<String>,
    pub version: HttpVersion,
    /// Final (non-1xx) response status code; 0 when the exchange ended without a response.
    pub status: u16,
    /// Request and response body sizes when known (Content-Length or counted chunked bytes).
    pub request_body_size: Option<u64>,
    pub response_body_size: Option<u64>,
    /// Why the exchange ended before its response did, when it did (HTTP/2: a stream reset, the
    /// connection going away or closing mid-stream).
    pub aborted: Option<&'static str>,
    /// A gRPC call (`content-type: application/grpc*`), with its status when one was seen.
    pub grpc: Option<GrpcCall>,
}

/// The gRPC part of an HTTP/2 exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcCall {
    /// `grpc-status` of the trailers (or of a trailers-only response).
    pub status: Option<u32>,
}
