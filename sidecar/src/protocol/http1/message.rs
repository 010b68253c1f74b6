//! One direction of an HTTP/1.x connection (requests, or responses) as a sequence of messages:
//! a head, then a body delimited by the head's framing.
//!
//! Input comes one chunk at a time as a [`Segment`]: the captured bytes plus the count of bytes
//! after them that were not captured. Bodies are skipped by count; heads must be visible. When a
//! message boundary falls where nothing was captured the reader is *lost* until a new head shows
//! up at the start of a later chunk that starts at a boundary (a syscall), or the caller learns of
//! a boundary from the other direction ([`MessageReader::resync`]).

use std::marker::PhantomData;

use super::chunked::{ChunkedDecoder, ChunkedStatus};
use super::head::{self, Framing, Parsed, Request, RequestLine, Response};
use crate::Result;
use crate::connection::stream::Chunk;

/// A message head type the reader can parse.
pub trait Head: Sized {
    /// What can still be read from a head that is not wholly visible.
    type Line;
    fn parse(bytes: &[u8]) -> Result<Parsed<Self>>;
    fn parse_line(bytes: &[u8]) -> Option<Self::Line>;
    fn header_len(&self) -> usize;
}

impl Head for Request {
    type Line = RequestLine;
    fn parse(bytes: &[u8]) -> Result<Parsed<Self>> {
        head::parse_request(bytes)
    }
    fn parse_line(bytes: &[u8]) -> Option<RequestLine> {
        head::parse_request_line(bytes)
    }
    fn header_len(&self) -> usize {
        self.header_len
    }
}

impl Head for Response {
    /// Status code and minor version.
    type Line = (u16, u8);
    fn parse(bytes: &[u8]) -> Result<Parsed<Self>> {
        head::parse_response(bytes)
    }
    fn parse_line(bytes: &[u8]) -> Option<(u16, u8)> {
        head::parse_status_line(bytes)
    }
    fn header_len(&self) -> usize {
        self.header_len
    }
}

/// What is left of one chunk while it is read: captured bytes, then a count of uncaptured ones.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    visible: &'a [u8],
    unseen: u64,
    /// The chunk starts at a boundary and nothing of it has been consumed yet.
    at_start: bool,
}

impl<'a> From<&Chunk<'a>> for Segment<'a> {
    fn from(chunk: &Chunk<'a>) -> Self {
        Self {
            visible: chunk.visible,
            unseen: chunk.unseen,
            at_start: chunk.at_boundary,
        }
    }
}

impl<'a> Segment<'a> {
    /// One syscall: `total_len` is what it moved, `captured` its leading bytes.
    pub fn new(captured: &'a [u8], total_len: u64) -> Self {
        Self {
            visible: captured,
            unseen: total_len.saturating_sub(captured.len() as u64),
            at_start: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.visible.is_empty() && self.unseen == 0
    }

    /// What is left of the chunk: visible bytes, then uncaptured ones.
    pub fn rest(&self) -> (&'a [u8], u64) {
        (self.visible, self.unseen)
    }

    fn len(&self) -> u64 {
        self.visible.len() as u64 + self.unseen
    }

    fn advance(&mut self, n: u64) {
        self.at_start = false;
        let from_visible = n.min(self.visible.len() as u64);
        self.visible = &self.visible[from_visible as usize..];
        self.unseen = self.unseen.saturating_sub(n - from_visible);
    }

    fn consume_all(&mut self) -> u64 {
        let n = self.len();
        self.advance(n);
        n
    }
}

/// What [`MessageReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<M: Head> {
    /// A complete head; the caller must call [`MessageReader::set_body`] next.
    Head { head: M, started_ns: u64 },
    /// A head that is not wholly visible (cut off by the capture, or too long to buffer): its
    /// start line when that much was seen. The reader is lost until it resyncs.
    Truncated {
        line: Option<M::Line>,
        started_ns: u64,
    },
    /// The body of the current message ended; `body_bytes` excludes chunk framing.
    BodyDone { body_bytes: u64 },
    /// The end of the current body fell into uncaptured bytes; the reader is lost.
    BodyLost,
    /// While lost, a new head starts this chunk: the lost message ended before it.
    Resynced,
    /// The segment is used up.
    NeedMore,
}

#[derive(Debug)]
enum Body {
    Length { remaining: u64, read: u64 },
    Chunked(ChunkedDecoder),
    UntilClose { read: u64 },
}

#[derive(Debug)]
enum State {
    Head,
    Body(Body),
    Lost,
}

/// Splits one direction's byte stream into messages.
#[derive(Debug)]
pub struct MessageReader<M> {
    state: State,
    /// Head bytes carried over from earlier chunks while a head is split across them.
    buf: Vec<u8>,
    started_ns: u64,
    head: PhantomData<M>,
}

impl<M> Default for MessageReader<M> {
    fn default() -> Self {
        Self {
            state: State::Head,
            buf: Vec::new(),
            started_ns: 0,
            head: PhantomData,
        }
    }
}

impl<M: Head> MessageReader<M> {
    /// Reads the next step from `seg`, the chunk whose bytes moved at `ts`. Heads longer than
    /// `max_head` bytes are not buffered: they are reported as truncated.
    pub fn next(&mut self, seg: &mut Segment<'_>, ts: u64, max_head: usize) -> Result<Step<M>> {
        match &mut self.state {
            State::Lost => {
                if seg.at_start && starts_message::<M>(seg.visible) {
                    self.state = State::Head;
                    return Ok(Step::Resynced);
                }
                seg.consume_all();
                Ok(Step::NeedMore)
            }
            State::Head => self.head(seg, ts, max_head),
            State::Body(body) => {
                let step = match body {
                    Body::Length { remaining, read } => {
                        let take = (*remaining).min(seg.len());
                        seg.advance(take);
                        *remaining -= take;
                        *read += take;
                        if *remaining > 0 {
                            return Ok(Step::NeedMore);
                        }
                        Step::BodyDone { body_bytes: *read }
                    }
                    Body::Chunked(decoder) => {
                        let progress = decoder.feed(seg.visible, seg.unseen)?;
                        seg.advance(progress.consumed);
                        match progress.status {
                            ChunkedStatus::NeedMore => return Ok(Step::NeedMore),
                            ChunkedStatus::Done => Step::BodyDone {
                                body_bytes: decoder.data_bytes(),
                            },
                            ChunkedStatus::Lost => {
                                self.state = State::Lost;
                                return Ok(Step::BodyLost);
                            }
                        }
                    }
                    Body::UntilClose { read } => {
                        *read += seg.consume_all();
                        return Ok(Step::NeedMore);
                    }
                };
                self.state = State::Head;
                Ok(step)
            }
        }
    }

    fn head(&mut self, seg: &mut Segment<'_>, ts: u64, max_head: usize) -> Result<Step<M>> {
        if seg.is_empty() {
            return Ok(Step::NeedMore);
        }
        let carried = self.buf.len();
        if carried == 0 {
            self.started_ns = ts;
        }
        if seg.visible.is_empty() {
            // A message starts somewhere in bytes that were not captured.
            return Ok(self.truncated(seg, None));
        }
        // The common case, a head within one chunk, is parsed in place without copying.
        let parsed = if carried == 0 {
            M::parse(seg.visible)
        } else {
            let take = seg.visible.len().min(max_head.saturating_sub(carried));
            self.buf.extend_from_slice(&seg.visible[..take]);
            M::parse(&self.buf)
        };
        match parsed {
            Err(e) => {
                self.buf = Vec::new();
                Err(e)
            }
            Ok(Parsed::Complete(head)) => {
                // Carried bytes were consumed by earlier chunks; the rest of this one after
                // the head is the body or the next message.
                seg.advance(head.header_len().saturating_sub(carried) as u64);
                self.buf = Vec::new();
                Ok(Step::Head {
                    head,
                    started_ns: self.started_ns,
                })
            }
            Ok(Parsed::Partial) => {
                let held = if carried == 0 {
                    seg.visible.len()
                } else {
                    self.buf.len()
                };
                if seg.unseen > 0 || held >= max_head {
                    let line = if carried == 0 {
                        M::parse_line(seg.visible)
                    } else {
                        M::parse_line(&self.buf)
                    };
                    return Ok(self.truncated(seg, line));
                }
                if carried == 0 {
                    self.buf.extend_from_slice(seg.visible);
                }
                seg.consume_all();
                Ok(Step::NeedMore)
            }
        }
    }

    fn truncated(&mut self, seg: &mut Segment<'_>, line: Option<M::Line>) -> Step<M> {
        seg.consume_all();
        self.buf = Vec::new();
        self.state = State::Lost;
        Step::Truncated {
            line,
            started_ns: self.started_ns,
        }
    }
}

impl<M> MessageReader<M> {
    /// Sets how the body after the head just returned is delimited.
    pub fn set_body(&mut self, framing: Framing) {
        self.state = match framing {
            Framing::Empty => State::Head,
            Framing::Length(remaining) => State::Body(Body::Length { remaining, read: 0 }),
            Framing::Chunked => State::Body(Body::Chunked(ChunkedDecoder::default())),
            Framing::UntilClose => State::Body(Body::UntilClose { read: 0 }),
        };
    }

    /// Another source (the other direction) shows the current message is over: expect a head.
    pub fn resync(&mut self) {
        self.state = State::Head;
        self.buf = Vec::new();
    }

    /// Gives up on the current message after invalid input; a later head resyncs.
    pub fn lose(&mut self) {
        self.state = State::Lost;
        self.buf = Vec::new();
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// Body bytes read so far of a body that runs until the connection closes.
    pub fn until_close_bytes(&self) -> Option<u64> {
        match self.state {
            State::Body(Body::UntilClose { read }) => Some(read),
            _ => None,
        }
    }

    /// Heap bytes held for split heads.
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }
}

/// The start of a chunk's data looks like the start of a new message.
fn starts_message<M: Head>(visible: &[u8]) -> bool {
    match M::parse(visible) {
        Ok(Parsed::Complete(_)) => true,
        Ok(Parsed::Partial) => M::parse_line(visible).is_some(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/http1/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap()
    }

    /// A message as the reader reports it: start line summary and body bytes (None: lost).
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Head(String),
        Body(Option<u64>),
    }

    /// Reads `syscalls` (captured bytes, total length) as requests, framing bodies as the heads
    /// say.
    fn read_requests(syscalls: &[(&[u8], u64)]) -> Vec<Seen> {
        let mut reader = MessageReader::<Request>::default();
        let mut seen = Vec::new();
        for (i, &(bytes, total)) in syscalls.iter().enumerate() {
            let mut seg = Segment::new(bytes, total);
            loop {
                match reader.next(&mut seg, i as u64, 16 * 1024).unwrap() {
                    Step::NeedMore => break,
                    Step::Head { head, .. } => {
                        reader.set_body(head.framing());
                        if head.framing() == Framing::Empty {
                            seen.push(Seen::Head(format!("{} {}", head.method, head.target)));
                            seen.push(Seen::Body(Some(0)));
                        } else {
                            seen.push(Seen::Head(format!("{} {}", head.method, head.target)));
                        }
                    }
                    Step::Truncated { line, .. } => seen.push(Seen::Head(format!(
                        "truncated {:?}",
                        line.map(|l| l.target)
                    ))),
                    Step::BodyDone { body_bytes } => seen.push(Seen::Body(Some(body_bytes))),
                    Step::BodyLost => seen.push(Seen::Body(None)),
                    Step::Resynced => {}
                }
            }
        }
        seen
    }

    fn whole(bytes: &[u8]) -> Vec<(&[u8], u64)> {
        vec![(bytes, bytes.len() as u64)]
    }

    #[test]
    fn keepalive_requests_across_every_split() {
        let stream = golden("nginx_keepalive.req");
        let expected = read_requests(&whole(&stream));
        let heads: Vec<_> = expected
            .iter()
            .filter_map(|s| match s {
                Seen::Head(h) => Some(h.as_str()),
                Seen::Body(_) => None,
            })
            .collect();
        assert_eq!(
            heads,
            [
                "GET /hello.txt",
                "GET /missing",
                "HEAD /hello.txt",
                "GET /fail",
                "GET /old",
                "GET /empty"
            ]
        );
        for split in 0..=stream.len() {
            let (a, b) = stream.split_at(split);
            let syscalls = [(a, a.len() as u64), (b, b.len() as u64)];
            assert_eq!(read_requests(&syscalls), expected, "split at {split}");
        }
    }

    #[test]
    fn bodies_are_counted_across_every_split_and_capture_cut() {
        for file in ["custom_100_continue.req", "custom_chunked_request.req"] {
            let stream = golden(file);
            let expected = vec![Seen::Head("POST /echo".into()), Seen::Body(Some(1500))];
            assert_eq!(read_requests(&whole(&stream)), expected, "{file}");
            for split in 0..=stream.len() {
                let (a, b) = stream.split_at(split);
                // Each syscall captured only up to 1024 bytes, as the kernel side does.
                let syscalls = [
                    (&a[..a.len().min(1024)], a.len() as u64),
                    (&b[..b.len().min(1024)], b.len() as u64),
                ];
                let seen = read_requests(&syscalls);
                // A last chunk begun in uncaptured bytes and ended in the next syscall cannot be
                // told from a longer chunk: only there may the body's end be lost.
                let ambiguous = a.len() > 1024 && split > stream.len() - 7 && b.len() < 5;
                if ambiguous && seen.last() == Some(&Seen::Body(None)) {
                    continue;
                }
                assert_eq!(seen, expected, "{file} split at {split}");
            }
        }
    }

    #[test]
    fn heads_cut_off_by_the_capture_are_truncated_then_resync() {
        let long_cookie = format!(
            "GET /big HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
            "c".repeat(2000)
        );
        let next = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
        let syscalls: [(&[u8], u64); 2] = [
            (&long_cookie.as_bytes()[..1024], long_cookie.len() as u64),
            (next, next.len() as u64),
        ];
        assert_eq!(
            read_requests(&syscalls),
            [
                Seen::Head("truncated Some(\"/big\")".into()),
                Seen::Head("GET /next".into()),
                Seen::Body(Some(0)),
            ]
        );
    }

    #[test]
    fn heads_longer_than_the_limit_are_truncated() {
        let mut reader = MessageReader::<Request>::default();
        let head = b"GET /long HTTP/1.1\r\nA: aaaaaaaaaaaaaaaa\r\n";
        let mut seg = Segment::new(head, head.len() as u64);
        assert_eq!(reader.next(&mut seg, 0, 64).unwrap(), Step::NeedMore);
        assert!(reader.buffered() > 0);
        let more = b"B: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n";
        let mut seg = Segment::new(more, more.len() as u64);
        let step = reader.next(&mut seg, 1, 64).unwrap();
        assert!(
            matches!(&step, Step::Truncated { line: Some(line), started_ns: 0 } if line.target == "/long"),
            "{step:?}"
        );
        assert_eq!(reader.buffered(), 0);
        assert!(reader.is_lost());
    }

    #[test]
    fn responses_until_close_count_everything() {
        let stream = golden("custom_http10_close.resp");
        let mut reader = MessageReader::<Response>::default();
        let mut seg = Segment::new(&stream[..1024.min(stream.len())], stream.len() as u64);
        let Step::Head { head, .. } = reader.next(&mut seg, 0, 1024).unwrap() else {
            panic!("expected a head");
        };
        assert_eq!(head.framing("GET"), Framing::UntilClose);
        reader.set_body(head.framing("GET"));
        assert_eq!(reader.next(&mut seg, 0, 1024).unwrap(), Step::NeedMore);
        assert_eq!(
            reader.until_close_bytes(),
            Some((stream.len() - head.header_len) as u64)
        );
    }

    #[test]
    fn a_message_starting_in_unseen_bytes_is_lost_until_a_head_starts_a_syscall() {
        let mut reader = MessageReader::<Response>::default();
        let mut seg = Segment::new(b"", 500);
        assert!(matches!(
            reader.next(&mut seg, 0, 1024).unwrap(),
            Step::Truncated { line: None, .. }
        ));
        let mut seg = Segment::new(b"body bytes", 10);
        assert_eq!(reader.next(&mut seg, 1, 1024).unwrap(), Step::NeedMore);
        let next = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut seg = Segment::new(next, next.len() as u64);
        assert_eq!(reader.next(&mut seg, 2, 1024).unwrap(), Step::Resynced);
        assert!(matches!(
            reader.next(&mut seg, 2, 1024).unwrap(),
            Step::Head { head, started_ns: 2 } if head.status == 200
        ));
    }
}
