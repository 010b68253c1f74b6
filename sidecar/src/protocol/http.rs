//! What an HTTP exchange tells, whichever version carried it: the facts HTTP parsers produce and
//! the HTTP mapping turns into spans and metrics.

/// HTTP version of an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    Http10,
    Http11,
}

impl HttpVersion {
    /// `network.protocol.version`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "1.0",
            HttpVersion::Http11 => "1.1",
        }
    }
}

/// One HTTP request and its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpExchange {
    /// Request method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Request target as sent: path and query (or absolute form for proxies).
    pub target: String,
    /// The `Host` header, if any.
    pub host: Option<String>,
    pub version: HttpVersion,
    /// Final (non-1xx) response status code; 0 when the exchange ended without a response.
    pub status: u16,
    /// Request and response body sizes when known (Content-Length or counted chunked bytes).
    pub request_body_size: Option<u64>,
    pub response_body_size: Option<u64>,
}
