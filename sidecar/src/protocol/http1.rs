//! HTTP/1.x message heads (request line or status line plus header fields), parsed with
//! `httparse` into the few facts the tracker needs: what was asked, what was answered, and how
//! the body that follows is delimited.
//!
//! Everything here is a pure function of the bytes it is given.

use crate::{Error, Result};

/// Header fields parsed per head. More than this is treated as invalid input: real clients and
/// servers stay far below it, and the bound keeps parsing allocation-free.
const MAX_HEADERS: usize = 128;

/// Outcome of parsing a message head from the start of a buffer. Invalid input is an `Err`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The whole head is in the buffer.
    Complete(T),
    /// Everything so far is a valid prefix of a head; more bytes are needed.
    Partial,
}

/// How the body after a head is delimited (RFC 9112, section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the request line and header fields, including the empty line.
    pub header_len: usize,
    pub method: String,
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    pub host: Option<String>,
    pub content_length: Option<u64>,
    /// The last transfer coding is `chunked`.
    pub chunked: bool,
    /// A valid W3C `traceparent` header.
    pub traceparent: Option<TraceParent>,
}

/// A parsed response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Bytes of the status line and header fields, including the empty line.
    pub header_len: usize,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    pub status: u16,
    pub content_length: Option<u64>,
    /// The last transfer coding is `chunked`.
    pub chunked: bool,
    /// A `Transfer-Encoding` header is present (chunked or not).
    pub transfer_encoded: bool,
}

/// The request line of a head whose header fields could not be read in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub target: String,
    pub minor_version: u8,
}

/// A W3C trace context `traceparent` header (version `00` layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub sampled: bool,
}

impl Request {
    /// How the request body is delimited: a request without length information has no body.
    pub fn framing(&self) -> Framing {
        if self.chunked {
            Framing::Chunked
        } else {
            match self.content_length {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            }
        }
    }
}

impl Response {
    /// 1xx responses other than 101 are interim: the final response follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// How the response body is delimited, given the method of the request it answers.
    pub fn framing(&self, request_method: &str) -> Framing {
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Framing::Empty;
        }
        if self.transfer_encoded {
            // A response whose last coding is not chunked runs until the connection closes.
            return if self.chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            };
        }
        match self.content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    }

    /// After this response the connection no longer carries HTTP/1.x: a protocol switch, or a
    /// tunnel opened by `CONNECT`.
    pub fn ends_http(&self, request_method: &str) -> bool {
        self.status == 101
            || (request_method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&self.status))
    }
}

/// Parses a request head at the start of `bytes` (leading empty lines are skipped).
pub fn parse_request(bytes: &[u8]) -> Result<Parsed<Request>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let header_len = match req.parse(bytes)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(Parsed::Partial),
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(Error::HttpFraming("incomplete request line"));
    };
    let fields = Fields::collect(req.headers)?;
    if fields.transfer_encoded && !fields.chunked {
        // RFC 9112 6.3: the length of such a request cannot be determined.
        return Err(Error::HttpFraming("request transfer coding is not chunked"));
    }
    Ok(Parsed::Complete(Request {
        header_len,
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        host: fields.host,
        content_length: fields.content_length,
        chunked: fields.chunked,
        traceparent: fields.traceparent,
    }))
}

/// Parses a response head at the start of `bytes`.
pub fn parse_response(bytes: &[u8]) -> Result<Parsed<Response>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let header_len = match resp.parse(bytes)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(Parsed::Partial),
    };
    let (Some(minor_version), Some(status)) = (resp.version, resp.code) else {
        return Err(Error::HttpFraming("incomplete status line"));
    };
    let fields = Fields::collect(resp.headers)?;
    Ok(Parsed::Complete(Response {
        header_len,
        minor_version,
        status,
        content_length: fields.content_length,
        chunked: fields.chunked,
        transfer_encoded: fields.transfer_encoded,
    }))
}

/// The request line at the start of `bytes`, when it is complete and valid even though the
/// header fields after it are not (cut off, or beyond what was captured).
pub fn parse_request_line(bytes: &[u8]) -> Option<RequestLine> {
    let mut headers = [httparse::EMPTY_HEADER; 0];
    let mut req = httparse::Request::new(&mut headers);
    // httparse fills the request line fields as it goes, so they are set even when the header
    // fields are partial or exceed the (empty) header array.
    match req.parse(bytes) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {}
        Err(_) => return None,
    }
    // A request line cannot hold a line feed, so any line feed means the line was seen whole.
    if !bytes.contains(&b'\n') {
        return None;
    }
    Some(RequestLine {
        method: req.method?.to_owned(),
        target: req.path?.to_owned(),
        minor_version: req.version?,
    })
}

/// The status code and minor version of a status line at the start of `bytes`, when that line
/// is complete and valid even though the header fields after it are not.
pub fn parse_status_line(bytes: &[u8]) -> Option<(u16, u8)> {
    let mut headers = [httparse::EMPTY_HEADER; 0];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {}
        Err(_) => return None,
    }
    if !bytes.contains(&b'\n') {
        return None;
    }
    Some((resp.code?, resp.version?))
}

/// Parses a `traceparent` value; `None` unless it is valid per W3C Trace Context.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    let value = value.trim_ascii();
    // version "-" trace-id "-" parent-id "-" flags; later versions may append "-" fields.
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    decode_hex(&value[3..35], &mut trace_id)?;
    let mut parent_id = [0u8; 8];
    decode_hex(&value[36..52], &mut parent_id)?;
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        sampled: flags & 1 == 1,
    })
}

/// Lowercase hex only, as the specification requires.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [hi, lo] => Some((hex_digit(*hi)? << 4) | hex_digit(*lo)?),
        _ => None,
    }
}

fn decode_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

/// The header fields the tracker cares about.
#[derive(Default)]
struct Fields {
    host: Option<String>,
    content_length: Option<u64>,
    transfer_encoded: bool,
    chunked: bool,
    traceparent: Option<TraceParent>,
}

impl Fields {
    fn collect(headers: &[httparse::Header<'_>]) -> Result<Self> {
        let mut fields = Fields::default();
        let mut traceparents = 0;
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let length = parse_content_length(header.value)?;
                match fields.content_length {
                    Some(seen) if seen != length => {
                        return Err(Error::HttpFraming("conflicting Content-Length values"));
                    }
                    _ => fields.content_length = Some(length),
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                fields.transfer_encoded = true;
                // Codings accumulate across fields; only the last one decides the framing.
                if let Some(last) = header.value.rsplit(|&b| b == b',').next() {
                    fields.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                }
            } else if name.eq_ignore_ascii_case("host") && fields.host.is_none() {
                fields.host = Some(String::from_utf8_lossy(header.value.trim_ascii()).into_owned());
            } else if name.eq_ignore_ascii_case("traceparent") {
                traceparents += 1;
                fields.traceparent = parse_traceparent(header.value);
            }
        }
        // W3C: several traceparent fields make the context invalid.
        if traceparents > 1 {
            fields.traceparent = None;
        }
        Ok(fields)
    }
}

/// A Content-Length value: digits, or a list of identical digit strings (RFC 9110 8.6).
fn parse_content_length(value: &[u8]) -> Result<u64> {
    let mut length = None;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(Error::HttpFraming("invalid Content-Length"));
        }
        let n = item
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match length {
            Some(seen) if seen != n => {
                return Err(Error::HttpFraming("conflicting Content-Length values"));
            }
            _ => length = Some(n),
        }
    }
    length.ok_or(Error::HttpFraming("invalid Content-Length"))
}
