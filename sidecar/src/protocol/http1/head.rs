//! HTTP/1.x message heads (request line or status line plus header fields), parsed with
//! `httparse` into the few facts the HTTP/1 parser needs: what was asked, what was answered, and how
//! the body that follows is delimited.
//!
//! Everything here is a pure function of the bytes it is given.

use std::mem::MaybeUninit;

use crate::connection::context::{TraceParent, parse_traceparent};
use crate::{Error, Result};

/// Header fields parsed per head. More than this is treated as invalid input: real clients and
/// servers stay far below it, and the bound keeps parsing allocation-free.
const MAX_HEADERS: usize = 128;

/// Space for the header fields of one head, left uninitialized: zeroing 128 entries (4 KiB) on
/// every parse showed up in profiles, and httparse writes an entry before exposing it.
fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

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
    /// An `Upgrade` header offers `h2c` (cleartext HTTP/2).
    pub upgrade_h2c: bool,
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
    /// An `Upgrade` header names `h2c`: with status 101, the connection switches to HTTP/2.
    pub upgrade_h2c: bool,
}

/// The request line of a head whose header fields could not be read in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub target: String,
    pub minor_version: u8,
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
    let mut headers = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let header_len = match req.parse_with_uninit_headers(bytes, &mut headers)? {
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
        upgrade_h2c: fields.upgrade_h2c,
    }))
}

/// Parses a response head at the start of `bytes`.
pub fn parse_response(bytes: &[u8]) -> Result<Parsed<Response>> {
    let mut headers = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let header_len =
        match config.parse_response_with_uninit_headers(&mut resp, bytes, &mut headers)? {
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
        upgrade_h2c: fields.upgrade_h2c,
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

/// The header fields the HTTP/1 parser cares about.
#[derive(Default)]
struct Fields {
    host: Option<String>,
    content_length: Option<u64>,
    transfer_encoded: bool,
    chunked: bool,
    traceparent: Option<TraceParent>,
    upgrade_h2c: bool,
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
            } else if name.eq_ignore_ascii_case("upgrade") {
                fields.upgrade_h2c |= header
                    .value
                    .split(|&b| b == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"h2c"));
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
        let n = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match length {
            Some(seen) if seen != n => {
                return Err(Error::HttpFraming("conflicting Content-Length values"));
            }
            _ => length = Some(n),
        }
    }
    length.ok_or(Error::HttpFraming("invalid Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/http1/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn request(bytes: &[u8]) -> Request {
        match parse_request(bytes) {
            Ok(Parsed::Complete(req)) => req,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn response(bytes: &[u8]) -> Response {
        match parse_response(bytes) {
            Ok(Parsed::Complete(resp)) => resp,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    const LOCAL: &str = "127.0.0.1:19000";
    const TRACEPARENT: TraceParent = TraceParent {
        trace_id: [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ],
        parent_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        sampled: true,
    };

    /// Golden request captures: file, head length, method, target, minor version,
    /// Content-Length, chunked, traceparent.
    #[allow(clippy::type_complexity)]
    const GOLDEN_REQUESTS: &[(&str, usize, &str, &str, u8, Option<u64>, bool, bool)] = &[
        (
            "python_get_1_0.req",
            88,
            "GET",
            "/hello.txt",
            1,
            None,
            false,
            false,
        ),
        (
            "python_head.req",
            89,
            "HEAD",
            "/hello.txt",
            1,
            None,
            false,
            false,
        ),
        (
            "python_404.req",
            90,
            "GET",
            "/missing?q=1",
            1,
            None,
            false,
            false,
        ),
        (
            "python_post_501.req",
            152,
            "POST",
            "/form",
            1,
            Some(7),
            false,
            false,
        ),
        (
            "nginx_keepalive.req",
            88,
            "GET",
            "/hello.txt",
            1,
            None,
            false,
            false,
        ),
        (
            "nginx_gzip_chunked.req",
            109,
            "GET",
            "/big.txt",
            1,
            None,
            false,
            false,
        ),
        (
            "nginx_304.req",
            138,
            "GET",
            "/hello.txt",
            1,
            None,
            false,
            false,
        ),
        (
            "nginx_traceparent.req",
            158,
            "GET",
            "/hello.txt",
            1,
            None,
            false,
            true,
        ),
        (
            "custom_100_continue.req",
            177,
            "POST",
            "/echo",
            1,
            Some(1500),
            false,
            false,
        ),
        (
            "custom_chunked_request.req",
            161,
            "POST",
            "/echo",
            1,
            None,
            true,
            false,
        ),
        (
            "custom_http10_close.req",
            85,
            "GET",
            "/stream",
            0,
            None,
            false,
            false,
        ),
    ];

    /// Golden response captures: file, head length, minor version, status, framing after GET.
    const GOLDEN_RESPONSES: &[(&str, usize, u8, u16, Framing)] = &[
        ("python_get_1_0.resp", 186, 0, 200, Framing::Length(13)),
        ("python_head.resp", 186, 0, 200, Framing::Length(13)),
        ("python_404.resp", 185, 0, 404, Framing::Length(335)),
        ("python_post_501.resp", 198, 0, 501, Framing::Length(357)),
        ("nginx_keepalive.resp", 236, 1, 200, Framing::Length(13)),
        ("nginx_gzip_chunked.resp", 251, 1, 200, Framing::Chunked),
        ("nginx_304.resp", 178, 1, 304, Framing::Empty),
        ("nginx_traceparent.resp", 236, 1, 200, Framing::Length(13)),
        ("custom_100_continue.resp", 25, 1, 100, Framing::Empty),
        ("custom_chunked_request.resp", 151, 1, 201, Framing::Chunked),
        ("custom_http10_close.resp", 118, 0, 200, Framing::UntilClose),
    ];

    #[test]
    fn golden_requests_parse_to_their_heads() {
        for &(file, header_len, method, target, minor, length, chunked, traced) in GOLDEN_REQUESTS {
            let req = request(&golden(file));
            assert_eq!(
                req,
                Request {
                    header_len,
                    method: method.into(),
                    target: target.into(),
                    minor_version: minor,
                    host: Some(LOCAL.into()),
                    content_length: length,
                    chunked,
                    traceparent: traced.then_some(TRACEPARENT),
                    upgrade_h2c: false,
                },
                "{file}"
            );
        }
    }

    #[test]
    fn golden_responses_parse_to_their_heads() {
        for &(file, header_len, minor, status, framing) in GOLDEN_RESPONSES {
            let resp = response(&golden(file));
            assert_eq!(resp.header_len, header_len, "{file}");
            assert_eq!(resp.minor_version, minor, "{file}");
            assert_eq!(resp.status, status, "{file}");
            assert_eq!(resp.framing("GET"), framing, "{file}");
            assert_eq!(resp.framing("HEAD"), Framing::Empty, "{file}");
        }
    }

    /// Every prefix of every golden file is a partial head or the same head as the whole file:
    /// never an error, never a different result.
    #[test]
    fn every_prefix_of_golden_files_is_partial_or_the_same_head() {
        for &(file, ..) in GOLDEN_REQUESTS {
            let bytes = golden(file);
            let whole = parse_request(&bytes).unwrap();
            for end in 0..=bytes.len() {
                match parse_request(&bytes[..end]) {
                    Ok(Parsed::Partial) => {}
                    Ok(parsed) => assert_eq!(parsed, whole, "{file}[..{end}]"),
                    Err(e) => panic!("{file}[..{end}]: {e}"),
                }
            }
        }
        for &(file, ..) in GOLDEN_RESPONSES {
            let bytes = golden(file);
            let whole = parse_response(&bytes).unwrap();
            for end in 0..=bytes.len() {
                match parse_response(&bytes[..end]) {
                    Ok(Parsed::Partial) => {}
                    Ok(parsed) => assert_eq!(parsed, whole, "{file}[..{end}]"),
                    Err(e) => panic!("{file}[..{end}]: {e}"),
                }
            }
        }
    }

    #[test]
    fn request_table() {
        struct Case {
            input: &'static str,
            method: &'static str,
            target: &'static str,
            minor: u8,
            framing: Framing,
        }
        let cases = [
            Case {
                input: "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                method: "GET",
                target: "/",
                minor: 1,
                framing: Framing::Empty,
            },
            Case {
                input: "\r\nPOST /x HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
                method: "POST",
                target: "/x",
                minor: 0,
                framing: Framing::Length(5),
            },
            Case {
                input: "PUT /a?b=c HTTP/1.1\r\ncontent-length: 3, 3\r\n\r\n",
                method: "PUT",
                target: "/a?b=c",
                minor: 1,
                framing: Framing::Length(3),
            },
            Case {
                input: "POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
                method: "POST",
                target: "/c",
                minor: 1,
                framing: Framing::Chunked,
            },
            Case {
                input: "OPTIONS * HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                method: "OPTIONS",
                target: "*",
                minor: 1,
                framing: Framing::Empty,
            },
            Case {
                input: "GET http://example.com/p HTTP/1.1\n\n",
                method: "GET",
                target: "http://example.com/p",
                minor: 1,
                framing: Framing::Empty,
            },
        ];
        for case in cases {
            let req = request(case.input.as_bytes());
            assert_eq!(req.method, case.method, "{}", case.input);
            assert_eq!(req.target, case.target, "{}", case.input);
            assert_eq!(req.minor_version, case.minor, "{}", case.input);
            assert_eq!(req.framing(), case.framing, "{}", case.input);
        }
    }

    #[test]
    fn invalid_requests_are_errors() {
        for input in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"*1\r\n$4\r\nPING\r\n",
            b"SET key value\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"\x00\x00\x00\x01",
        ] {
            assert!(
                parse_request(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn response_table() {
        let cases: &[(&str, &str, u16, Framing)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                "GET",
                200,
                Framing::Length(2),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                "HEAD",
                200,
                Framing::Empty,
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
                "GET",
                204,
                Framing::Empty,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                "GET",
                304,
                Framing::Empty,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", "POST", 100, Framing::Empty),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                200,
                Framing::Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
                "GET",
                200,
                Framing::UntilClose,
            ),
            ("HTTP/1.0 200 OK\r\n\r\n", "GET", 200, Framing::UntilClose),
            (
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                "GET",
                500,
                Framing::Empty,
            ),
            (
                "HTTP/1.1 404 \r\nContent-Length: 7\r\n\r\n",
                "GET",
                404,
                Framing::Length(7),
            ),
        ];
        for &(input, method, status, framing) in cases {
            let resp = response(input.as_bytes());
            assert_eq!(resp.status, status, "{input}");
            assert_eq!(resp.framing(method), framing, "{input}");
        }
        let interim = response(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        assert!(interim.is_interim());
        let switching = response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert!(!switching.is_interim());
        assert!(switching.ends_http("GET"));
        assert!(response(b"HTTP/1.1 200 OK\r\n\r\n").ends_http("CONNECT"));
        assert!(!response(b"HTTP/1.1 407 Auth\r\n\r\n").ends_http("CONNECT"));
        for bad in [
            &b"HTTP/2 200\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn start_lines_of_heads_that_are_cut_off() {
        let cut = b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nCookie: aaaaaaaa";
        assert_eq!(parse_request(cut).unwrap(), Parsed::Partial);
        assert_eq!(
            parse_request_line(cut),
            Some(RequestLine {
                method: "GET".into(),
                target: "/a/b?c=d".into(),
                minor_version: 1
            })
        );
        assert_eq!(parse_request_line(b"GET /a/b?c=d HTTP/1.1"), None);
        assert_eq!(parse_request_line(b"GET /a/b?c=d HTT"), None);
        assert_eq!(parse_request_line(b"\x16\x03\x01"), None);
        assert_eq!(
            parse_status_line(b"HTTP/1.1 503 Service Unavailable\r\nServer: x"),
            Some((503, 1))
        );
        assert_eq!(parse_status_line(b"HTTP/1.0 200 OK"), None);
        assert_eq!(parse_status_line(b"garbage\r\n"), None);
    }

    #[test]
    fn two_traceparent_fields_make_the_context_invalid() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let twice =
            format!("GET / HTTP/1.1\r\ntraceparent: {valid}\r\ntraceparent: {valid}\r\n\r\n");
        assert_eq!(request(twice.as_bytes()).traceparent, None);
    }

    #[test]
    fn an_upgrade_to_h2c_is_noticed_in_requests_and_responses() {
        let req = request(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: websocket, h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
        assert!(req.upgrade_h2c);
        let resp = response(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        );
        assert!(resp.upgrade_h2c);
        assert!(!request(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade_h2c);
        assert!(!response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2\r\n\r\n").upgrade_h2c);
    }
}
