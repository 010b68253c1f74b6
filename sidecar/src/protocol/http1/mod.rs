//! HTTP/1.x: one parser per connection. The client side carries requests and the server side
//! responses; each side is split into messages by a [`MessageReader`]. Requests wait in a FIFO
//! queue (pipelining) and each final response completes the oldest one.
//!
//! Hand-written on top of `httparse` (heads) because captured bytes are bounded prefixes of each
//! write, joined mid-connection and cut inside heads and bodies: framing has to survive bytes it
//! never sees, which no HTTP crate is built for.

use std::collections::VecDeque;

pub mod chunked;
pub mod head;
pub mod message;

use head::{Framing, Request, Response};
use message::{MessageReader, Segment, Step};

use super::http::{HttpExchange, HttpVersion};
use super::http2::parser::{Http2, Upgraded, is_preface_start};
use super::{Context, Detection, Exchange, Parser, Protocol, Side, Verdict};
use crate::connection::context::{TraceContext, TraceParent};
use crate::connection::stream::Chunk;
use crate::transaction::Facts;

/// Longest head (request or status line plus header fields) buffered across chunks.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Requests awaiting their responses on one connection (pipelining depth).
const MAX_PIPELINED: usize = 64;

/// HTTP/1.x as the protocol layer knows it.
pub static PROTOCOL: Protocol = Protocol {
    name: "http1",
    detect,
    parser: new_parser,
};

fn new_parser() -> Box<dyn Parser> {
    Box::new(Http1::default())
}

/// A connection speaks HTTP/1.x when the client's first bytes start a request line. Only the
/// request line is checked (its header fields are parsed once, by the parser). The HTTP/2
/// preface looks like the start of one (`PRI * HTTP/2.0`): it is left to HTTP/2.
fn detect(bytes: &[u8], side: Option<Side>) -> Detection {
    if side == Some(Side::Server) || is_preface_start(bytes) {
        return Detection::No;
    }
    match httparse::Request::new(&mut []).parse(bytes) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => Detection::Yes(Side::Client),
        Err(_) => Detection::No,
    }
}

/// One request and, as it arrives, its response.
#[derive(Debug)]
struct Pending {
    method: String,
    target: String,
    host: Option<String>,
    minor_version: u8,
    tid: Option<u32>,
    start_ns: u64,
    /// The request body was read to its end (or its end is unknowable).
    request_done: bool,
    request_body_size: Option<u64>,
    /// Final status once the response head was seen; 0 before.
    status: u16,
    response_body_size: Option<u64>,
    trace: TraceContext,
    /// The request offers to switch to cleartext HTTP/2.
    upgrade_h2c: bool,
}

impl Pending {
    fn heap_bytes(&self) -> usize {
        self.method.capacity()
            + self.target.capacity()
            + self.host.as_ref().map_or(0, String::capacity)
    }
}

/// The HTTP/1.x state of one connection.
#[derive(Debug, Default)]
pub struct Http1 {
    /// A valid head was seen: later garbage is a capture gap to resync after, not a reason to
    /// give up on the connection.
    http_seen: bool,
    requests: MessageReader<Request>,
    responses: MessageReader<Response>,
    pending: VecDeque<Pending>,
    /// The response being read answers no known request; its body is skipped.
    orphan_response: bool,
    last_response_ns: u64,
    /// The connection switched to HTTP/2 (`Upgrade: h2c`): everything from here on is its.
    upgraded: Option<Box<Http2>>,
}

/// What is known of a request when it starts.
struct RequestStart {
    method: String,
    target: String,
    host: Option<String>,
    minor_version: u8,
    traceparent: Option<TraceParent>,
    request_body_size: Option<u64>,
    request_done: bool,
    upgrade_h2c: bool,
}

impl Parser for Http1 {
    fn feed(&mut self, side: Side, chunk: &Chunk<'_>, cx: &mut Context<'_>) -> Verdict {
        if let Some(http2) = &mut self.upgraded {
            return http2.feed(side, chunk, cx);
        }
        let mut seg = Segment::from(chunk);
        match side {
            Side::Client => self.read_requests(&mut seg, chunk, cx),
            Side::Server => {
                let verdict = self.read_responses(&mut seg, chunk, cx);
                self.last_response_ns = chunk.timestamp_ns;
                verdict
            }
        }
    }

    /// A response delimited by the close is complete; requests without a response end with
    /// status 0.
    fn finish(&mut self, close_ns: u64, cx: &mut Context<'_>) {
        if let Some(http2) = &mut self.upgraded {
            return http2.finish(close_ns, cx);
        }
        if let Some(read) = self.responses.until_close_bytes()
            && let Some(pending) = self.pending.front_mut()
        {
            pending.response_body_size = Some(read);
        }
        while let Some(pending) = self.pending.front() {
            let end = if pending.status != 0 {
                self.last_response_ns
            } else {
                close_ns
            };
            self.complete(end, cx);
        }
    }

    fn discard(&mut self, cx: &mut Context<'_>) {
        if let Some(http2) = &mut self.upgraded {
            http2.discard(cx);
        }
        for pending in std::mem::take(&mut self.pending) {
            cx.drop_exchange(pending.tid, &pending.trace);
        }
        self.requests = MessageReader::default();
        self.responses = MessageReader::default();
    }

    fn heap_bytes(&self) -> usize {
        self.upgraded.as_ref().map_or(0, |http2| http2.heap_bytes())
            + self.requests.buffered()
            + self.responses.buffered()
            + self.pending.capacity() * size_of::<Pending>()
            + self.pending.iter().map(Pending::heap_bytes).sum::<usize>()
    }
}

impl Http1 {
    fn read_requests(
        &mut self,
        seg: &mut Segment<'_>,
        chunk: &Chunk<'_>,
        cx: &mut Context<'_>,
    ) -> Verdict {
        loop {
            let step = match self.requests.next(seg, chunk.timestamp_ns, MAX_HEAD_BYTES) {
                Ok(step) => step,
                Err(_) if !self.http_seen => return Verdict::Abandon,
                Err(_) => {
                    self.requests.lose();
                    return Verdict::Keep;
                }
            };
            match step {
                Step::NeedMore => return Verdict::Keep,
                Step::Head { head, started_ns } => {
                    let framing = head.framing();
                    self.requests.set_body(framing);
                    let empty = framing == Framing::Empty;
                    self.start_exchange(
                        RequestStart {
                            method: head.method,
                            target: head.target,
                            host: head.host,
                            minor_version: head.minor_version,
                            traceparent: head.traceparent,
                            request_body_size: empty.then_some(0),
                            request_done: empty,
                            upgrade_h2c: head.upgrade_h2c,
                        },
                        chunk.tid,
                        started_ns,
                        cx,
                    );
                }
                Step::Truncated { line, started_ns } => {
                    // A request that is not wholly visible still gets its span; the response
                    // tells where it ended.
                    if let Some(line) = line {
                        self.start_exchange(
                            RequestStart {
                                method: line.method,
                                target: line.target,
                                host: None,
                                minor_version: line.minor_version,
                                traceparent: None,
                                request_body_size: None,
                                request_done: false,
                                upgrade_h2c: false,
                            },
                            chunk.tid,
                            started_ns,
                            cx,
                        );
                    }
                }
                Step::BodyDone { body_bytes } => {
                    if let Some(pending) = self.pending.back_mut().filter(|e| !e.request_done) {
                        pending.request_done = true;
                        pending.request_body_size = Some(body_bytes);
                    }
                }
                Step::BodyLost => {
                    if let Some(pending) = self.pending.back_mut() {
                        pending.request_done = true;
                    }
                }
                Step::Resynced => {}
            }
        }
    }

    fn start_exchange(
        &mut self,
        start: RequestStart,
        tid: Option<u32>,
        started_ns: u64,
        cx: &mut Context<'_>,
    ) {
        self.http_seen = true;
        // A new request while the previous response's end was unknown: that response is over.
        // If even its status was not seen, it still was answered when response bytes followed
        // the request: it ends with status 0 rather than taking a later request's response.
        if self.responses.is_lost() {
            self.responses.resync();
            self.orphan_response = false;
            if self
                .pending
                .front()
                .is_some_and(|e| e.status != 0 || self.last_response_ns > e.start_ns)
            {
                self.complete(self.last_response_ns, cx);
            }
        }
        if self.pending.len() >= MAX_PIPELINED
            && let Some(dropped) = self.pending.pop_front()
        {
            cx.drop_exchange(dropped.tid, &dropped.trace);
        }
        let trace = cx.start_trace(tid, start.traceparent);
        self.pending.push_back(Pending {
            method: start.method,
            target: start.target,
            host: start.host,
            minor_version: start.minor_version,
            tid,
            start_ns: started_ns,
            request_done: start.request_done,
            request_body_size: start.request_body_size,
            status: 0,
            response_body_size: None,
            trace,
            upgrade_h2c: start.upgrade_h2c,
        });
    }

    fn read_responses(
        &mut self,
        seg: &mut Segment<'_>,
        chunk: &Chunk<'_>,
        cx: &mut Context<'_>,
    ) -> Verdict {
        let ts = chunk.timestamp_ns;
        loop {
            let step = match self.responses.next(seg, ts, MAX_HEAD_BYTES) {
                Ok(step) => step,
                Err(_) if !self.http_seen => return Verdict::Abandon,
                Err(_) => {
                    self.responses.lose();
                    return Verdict::Keep;
                }
            };
            match step {
                Step::NeedMore => return Verdict::Keep,
                Step::Head { head, .. } => {
                    if head.is_interim() {
                        self.responses.set_body(Framing::Empty);
                        continue;
                    }
                    self.on_final_status(head.status);
                    let answered = !self.orphan_response;
                    // An orphan response's request is unknown: frame it as if it answered a GET.
                    let method = self
                        .pending
                        .front()
                        .filter(|_| answered)
                        .map_or("GET", |e| e.method.as_str());
                    let framing = head.framing(method);
                    if head.status == 101
                        && head.upgrade_h2c
                        && answered
                        && self.pending.front().is_some_and(|p| p.upgrade_h2c)
                    {
                        self.upgrade(seg, chunk, cx);
                        return Verdict::Keep;
                    }
                    if head.ends_http(method) {
                        if answered {
                            self.complete(ts, cx);
                        }
                        return Verdict::Abandon;
                    }
                    self.responses.set_body(framing);
                    if framing == Framing::Empty {
                        self.body_done(Some(0), ts, cx);
                    }
                }
                Step::Truncated { line, .. } => match line {
                    // An interim response has no body: the next chunk starts afresh.
                    Some((status, _)) if (100..200).contains(&status) && status != 101 => {
                        self.responses.resync();
                    }
                    Some((status, _)) => {
                        self.on_final_status(status);
                    }
                    None => {}
                },
                Step::BodyDone { body_bytes } => self.body_done(Some(body_bytes), ts, cx),
                Step::BodyLost => {}
                Step::Resynced => {
                    if self.orphan_response {
                        self.orphan_response = false;
                    } else if self.pending.front().is_some_and(|e| e.status != 0) {
                        self.complete(self.last_response_ns, cx);
                    }
                }
            }
        }
    }

    /// The server accepted `Upgrade: h2c`: the oldest request becomes stream 1 of an HTTP/2
    /// connection, which reads the rest of this chunk and everything after it.
    fn upgrade(&mut self, seg: &Segment<'_>, chunk: &Chunk<'_>, cx: &mut Context<'_>) {
        let Some(request) = self.pending.pop_front() else {
            return;
        };
        // Requests pipelined behind the upgrade are not answered in HTTP/1 any more.
        for pending in std::mem::take(&mut self.pending) {
            cx.drop_exchange(pending.tid, &pending.trace);
        }
        let mut http2 = Box::new(Http2::upgraded(Upgraded {
            tid: request.tid,
            start_ns: request.start_ns,
            method: request.method,
            target: request.target,
            host: request.host,
            request_body_size: request.request_body_size,
            trace: request.trace,
        }));
        let (visible, unseen) = seg.rest();
        let rest = Chunk {
            visible,
            unseen,
            at_boundary: false,
            ..*chunk
        };
        if !rest.is_empty() {
            http2.feed(Side::Server, &rest, cx);
        }
        self.requests = MessageReader::default();
        self.responses = MessageReader::default();
        self.upgraded = Some(http2);
    }

    /// A final response head (or status line) for the oldest waiting request.
    fn on_final_status(&mut self, status: u16) {
        self.http_seen = true;
        // The response shows the request is over even if its end was not seen.
        if self.requests.is_lost() {
            self.requests.resync();
        }
        match self.pending.front_mut() {
            Some(pending) => {
                pending.status = status;
                pending.request_done = true;
                self.orphan_response = false;
            }
            None => self.orphan_response = true,
        }
    }

    fn body_done(&mut self, size: Option<u64>, ts: u64, cx: &mut Context<'_>) {
        if self.orphan_response {
            self.orphan_response = false;
            return;
        }
        if let Some(pending) = self.pending.front_mut() {
            pending.response_body_size = size;
            self.complete(ts, cx);
        }
    }

    /// The oldest exchange's response ended at `end_ns`: hand over its transaction.
    fn complete(&mut self, end_ns: u64, cx: &mut Context<'_>) {
        let Some(pending) = self.pending.pop_front() else {
            return;
        };
        cx.complete(Exchange {
            tid: pending.tid,
            start_ns: pending.start_ns,
            end_ns,
            trace: pending.trace,
            facts: Facts::Http(HttpExchange {
                method: pending.method,
                target: pending.target,
                host: pending.host,
                version: if pending.minor_version == 0 {
                    HttpVersion::Http10
                } else {
                    HttpVersion::Http11
                },
                status: pending.status,
                request_body_size: pending.request_body_size,
                response_body_size: pending.response_body_size,
                aborted: None,
                grpc: None,
            }),
        });
    }
}

#[cfg(test)]
mod tests;
