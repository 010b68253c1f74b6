//! HTTP/2 exchanges of one connection: a [`FrameReader`] and an HPACK [`Decoder`] per side, and
//! the streams in flight, each request matched to its response by stream id.
//!
//! A stream starts with the client's HEADERS (its trace context is taken then, so calls the
//! serving thread makes meanwhile join it) and ends with the server's END_STREAM, on DATA or on
//! trailers. A reset, a GOAWAY that leaves it unprocessed, or the connection's end ends it too,
//! as an aborted exchange. Streams whose request was not seen (a connection joined mid-stream)
//! are ignored. Header fields the decoder cannot resolve (table entries from before the sidecar
//! joined) stay unknown; they are never guessed.

use super::frame::{self, Event, Frame, FrameReader, FrameType, Payload, Sender, flags, setting};
use super::hpack::{Decoder, KnownName};
use crate::connection::context::{TraceContext, TraceParent, parse_traceparent};
use crate::connection::stream::Chunk;
use crate::protocol::http::{GrpcCall, HttpExchange, HttpVersion};
use crate::protocol::{Context, Detection, Exchange, Parser, Protocol, Side, Verdict};
use crate::transaction::Facts;

/// Lookups per frame: a fast non-cryptographic hasher (keys are stream ids).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Streams in flight on one connection; beyond this the oldest is dropped.
const MAX_STREAMS: usize = 256;
/// Longest header block assembled from HEADERS and CONTINUATION frames.
const MAX_BLOCK: usize = 16 * 1024;
/// Longest value kept of a header field (paths, authorities).
const MAX_VALUE: usize = 2048;

/// HTTP/2 as the protocol layer knows it.
pub static PROTOCOL: Protocol = Protocol {
    name: "http2",
    detect,
    parser: new_parser,
};

fn new_parser() -> Box<dyn Parser> {
    Box::new(Http2::default())
}

/// A connection speaks HTTP/2 when the client sends the connection preface, or when the server
/// sends its own preface (a SETTINGS frame) first, as it may before the client's arrives (seen
/// when the capture knows the connection's start, so the server's side); one joined mid-stream,
/// at a write whose frames chain plausibly and whose first header block starts with a request
/// pseudo-header (the client) or `:status` (the server).
fn detect(bytes: &[u8], side: Option<Side>) -> Detection {
    if side == Some(Side::Server) && is_server_preface(bytes) {
        return Detection::Yes(Side::Server);
    }
    if is_preface_start(bytes) {
        return match side {
            Some(Side::Server) => Detection::No,
            _ => Detection::Yes(Side::Client),
        };
    }
    if !frame::plausible_start(bytes, 0, Sender::Client, frame::DEFAULT_MAX_FRAME_SIZE) {
        return Detection::No;
    }
    match (first_block_sender(bytes), side) {
        (Some(sender), None) => Detection::Yes(sender),
        (Some(sender), Some(side)) if sender == side => Detection::Yes(sender),
        _ => Detection::No,
    }
}

/// Whether `bytes` start the client connection preface, as far as they go: three bytes (`PRI`, a
/// method no HTTP/1 client sends) tell it already.
pub fn is_preface_start(bytes: &[u8]) -> bool {
    let shown = bytes.len().min(frame::PREFACE.len());
    shown >= 3 && bytes[..shown] == frame::PREFACE[..shown]
}

/// Whether `bytes` start with the server connection preface: a SETTINGS frame on stream 0,
/// not an acknowledgement, whose length is a whole number of settings.
fn is_server_preface(bytes: &[u8]) -> bool {
    let Some(head) = bytes.first_chunk::<{ frame::HEADER_LEN }>() else {
        return false;
    };
    let (header, reserved) = frame::FrameHeader::parse_raw(head);
    header.kind == FrameType::Settings
        && header.flags == 0
        && header.stream_id == 0
        && !reserved
        && header.length % 6 == 0
        && header.length <= frame::DEFAULT_MAX_FRAME_SIZE
}

/// Who sent the first HEADERS frame of `bytes`, from the static table index its block starts
/// with: 1-7 are `:authority`, `:method`, `:path` and `:scheme` (requests), 8-14 `:status`.
fn first_block_sender(bytes: &[u8]) -> Option<Side> {
    let mut pos = 0usize;
    while let Some(head) = bytes
        .get(pos..)
        .and_then(<[u8]>::first_chunk::<{ frame::HEADER_LEN }>)
    {
        let header = frame::FrameHeader::parse(head);
        let start = pos + frame::HEADER_LEN;
        if header.kind == FrameType::Headers {
            let mut at = start;
            if header.has(flags::PADDED) {
                at += 1;
            }
            if header.has(flags::PRIORITY) {
                at += 5;
            }
            let first = *bytes.get(at)?;
            // An indexed field, or a literal with an indexed name (with or without indexing).
            let index = if first & 0x80 != 0 {
                first & 0x7f
            } else if first & 0xc0 == 0x40 {
                first & 0x3f
            } else {
                first & 0x0f
            };
            return match index {
                1..=7 => Some(Side::Client),
                8..=14 => Some(Side::Server),
                _ => None,
            };
        }
        pos = start + header.length as usize;
    }
    None
}

/// A request and, as it arrives, its response.
#[derive(Debug)]
struct Stream {
    tid: Option<u32>,
    start_ns: u64,
    method: String,
    path: String,
    authority: Option<String>,
    grpc: bool,
    trace: TraceContext,
    request_body: u64,
    /// Final status once the response head was seen; 0 before.
    status: u16,
    response_body: u64,
    grpc_status: Option<u32>,
}

impl Stream {
    fn heap_bytes(&self) -> usize {
        self.method.capacity()
            + self.path.capacity()
            + self.authority.as_ref().map_or(0, String::capacity)
    }
}

/// A header block being assembled from a HEADERS frame and its CONTINUATIONs.
#[derive(Debug, Default)]
struct Block {
    stream: u32,
    bytes: Vec<u8>,
    /// Part of the block was not captured.
    truncated: bool,
    end_stream: bool,
    started_ns: u64,
    tid: Option<u32>,
}

/// What one side's frames carry, per side.
#[derive(Debug, Default)]
struct Half {
    /// Made at the side's first chunk, once it shows whether the connection is seen from its
    /// start (the client preface) or joined mid-stream.
    reader: Option<FrameReader>,
    decoder: Decoder,
    block: Option<Block>,
}

/// The request an HTTP/1.1 `Upgrade: h2c` carried: stream 1 of the HTTP/2 connection.
#[derive(Debug)]
pub struct Upgraded {
    pub tid: Option<u32>,
    pub start_ns: u64,
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    pub request_body_size: Option<u64>,
    pub trace: TraceContext,
}

/// The HTTP/2 state of one connection.
#[derive(Debug, Default)]
pub struct Http2 {
    client: Half,
    server: Half,
    /// The client preface was seen: the server's frames are read from their start too.
    from_start: bool,
    streams: HashMap<u32, Stream>,
    /// Stream ids in the order they started, for dropping the oldest past [`MAX_STREAMS`].
    order: std::collections::VecDeque<u32>,
}

/// The frame events of one chunk, gathered before they are acted on (the reader lends them
/// from its own buffers).
#[derive(Debug)]
enum Seen {
    Frame {
        header: frame::FrameHeader,
        payload: Option<(Vec<u8>, bool)>,
        data_len: u64,
    },
    Lost,
}

impl Http2 {
    /// A connection an HTTP/1.1 request upgraded: its request is stream 1, whose response comes
    /// in HTTP/2 frames; the client sends the connection preface next.
    pub fn upgraded(request: Upgraded) -> Self {
        let mut parser = Self {
            from_start: true,
            ..Self::default()
        };
        parser.server.reader = Some(FrameReader::new(Sender::Server));
        parser.streams.insert(
            1,
            Stream {
                tid: request.tid,
                start_ns: request.start_ns,
                method: request.method,
                path: request.target,
                authority: request.host,
                grpc: false,
                trace: request.trace,
                request_body: request.request_body_size.unwrap_or(0),
                status: 0,
                response_body: 0,
                grpc_status: None,
            },
        );
        parser.order.push_back(1);
        parser
    }

    fn half(&mut self, side: Side) -> &mut Half {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    fn on_frame(
        &mut self,
        side: Side,
        header: frame::FrameHeader,
        payload: Option<(Vec<u8>, bool)>,
        data_len: u64,
        chunk: &Chunk<'_>,
        cx: &mut Context<'_>,
    ) {
        let end_stream = header.has(flags::END_STREAM);
        match header.kind {
            FrameType::Headers | FrameType::Continuation => {
                let half = self.half(side);
                if header.kind == FrameType::Headers {
                    half.block = Some(Block {
                        stream: header.stream_id,
                        end_stream,
                        started_ns: chunk.timestamp_ns,
                        tid: chunk.tid,
                        ..Block::default()
                    });
                }
                let Some(block) = half.block.as_mut().filter(|b| b.stream == header.stream_id)
                else {
                    return;
                };
                match payload {
                    Some((bytes, whole)) if block.bytes.len() + bytes.len() <= MAX_BLOCK => {
                        block.bytes.extend_from_slice(&bytes);
                        block.truncated |= !whole;
                    }
                    _ => block.truncated = true,
                }
                if (header.has(flags::END_HEADERS) || block.truncated)
                    && let Some(block) = half.block.take()
                {
                    self.on_block(side, block, cx);
                }
            }
            FrameType::Data => {
                if let Some(stream) = self.streams.get_mut(&header.stream_id) {
                    match side {
                        Side::Client => stream.request_body += data_len,
                        Side::Server => stream.response_body += data_len,
                    }
                    if end_stream && side == Side::Server {
                        self.complete(header.stream_id, chunk.timestamp_ns, None, cx);
                    }
                }
            }
            FrameType::RstStream => {
                self.complete(
                    header.stream_id,
                    chunk.timestamp_ns,
                    Some("stream reset"),
                    cx,
                );
            }
            // A server's GOAWAY names the last client stream it processed; a client's concerns
            // streams the server would push.
            FrameType::Goaway if side == Side::Server => {
                // Streams above the last one processed were not: they end as refused.
                let last = payload
                    .as_ref()
                    .and_then(|(bytes, _)| bytes.get(..4))
                    .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]));
                if let Some(last) = last {
                    let refused: Vec<u32> =
                        self.order.iter().copied().filter(|id| *id > last).collect();
                    for id in refused {
                        self.complete(id, chunk.timestamp_ns, Some("refused by GOAWAY"), cx);
                    }
                }
            }
            FrameType::Settings if !header.has(flags::ACK) => {
                if let Some((bytes, _)) = &payload {
                    for (id, value) in frame::settings(bytes) {
                        if id == setting::MAX_FRAME_SIZE {
                            // The sender receives frames this long: the other side sends them.
                            let other = match side {
                                Side::Client => &mut self.server,
                                Side::Server => &mut self.client,
                            };
                            if let Some(reader) = other.reader.as_mut() {
                                reader.set_max_frame_size(value);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A whole (or cut-off) header block of `side`.
    fn on_block(&mut self, side: Side, block: Block, cx: &mut Context<'_>) {
        let mut fields = Fields::default();
        let half = self.half(side);
        // A block the decoder rejects still gave the fields before the fault.
        let _ = half
            .decoder
            .decode(&block.bytes, !block.truncated, |field| fields.take(field));
        match side {
            Side::Client => {
                if self.streams.contains_key(&block.stream) {
                    // Request trailers.
                    return;
                }
                if block.stream.is_multiple_of(2) {
                    return;
                }
                self.start(block, fields, cx);
            }
            Side::Server => {
                let Some(stream) = self.streams.get_mut(&block.stream) else {
                    return;
                };
                if let Some(status) = fields.status {
                    if (100..200).contains(&status) {
                        // Interim: the final head follows.
                        return;
                    }
                    stream.status = status;
                }
                if fields.grpc_status.is_some() {
                    stream.grpc_status = fields.grpc_status;
                }
                // The response says gRPC too: a request whose content-type was an HPACK entry
                // from before the sidecar joined is still known as a call.
                stream.grpc |= fields.grpc || fields.grpc_status.is_some();
                if block.end_stream {
                    self.complete(block.stream, block.started_ns, None, cx);
                }
            }
        }
    }

    fn start(&mut self, block: Block, fields: Fields, cx: &mut Context<'_>) {
        if self.streams.len() >= MAX_STREAMS
            && let Some(oldest) = self.order.pop_front()
            && let Some(dropped) = self.streams.remove(&oldest)
        {
            cx.drop_exchange(dropped.tid, &dropped.trace);
        }
        let trace = cx.start_trace(block.tid, fields.traceparent);
        self.streams.insert(
            block.stream,
            Stream {
                tid: block.tid,
                start_ns: block.started_ns,
                method: fields.method.unwrap_or_default(),
                path: fields.path.unwrap_or_default(),
                authority: fields.authority,
                grpc: fields.grpc,
                trace,
                request_body: 0,
                status: 0,
                response_body: 0,
                grpc_status: None,
            },
        );
        self.order.push_back(block.stream);
    }

    /// Stream `id` ended at `end_ns`: its transaction goes out.
    fn complete(
        &mut self,
        id: u32,
        end_ns: u64,
        aborted: Option<&'static str>,
        cx: &mut Context<'_>,
    ) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        self.order.retain(|s| *s != id);
        cx.complete(Exchange {
            tid: stream.tid,
            start_ns: stream.start_ns,
            end_ns,
            trace: stream.trace,
            facts: Facts::Http(HttpExchange {
                method: stream.method,
                target: stream.path,
                host: stream.authority,
                version: HttpVersion::Http2,
                status: stream.status,
                request_body_size: Some(stream.request_body),
                response_body_size: Some(stream.response_body),
                aborted,
                grpc: stream.grpc.then_some(GrpcCall {
                    status: stream.grpc_status,
                }),
            }),
        });
    }
}

impl Parser for Http2 {
    fn feed(&mut self, side: Side, chunk: &Chunk<'_>, cx: &mut Context<'_>) -> Verdict {
        let mut seen = Vec::new();
        if side == Side::Client && self.client.reader.is_none() {
            let shown = chunk.visible.len().min(frame::PREFACE.len());
            self.from_start = shown > 0 && chunk.visible[..shown] == frame::PREFACE[..shown];
        } else if side == Side::Server
            && self.server.reader.is_none()
            && self.client.reader.is_none()
            && cx.from_start
            && chunk.at_boundary
            && is_server_preface(chunk.visible)
        {
            // The server spoke first, with its preface, on a connection seen from its start:
            // both sides are read from their start (the client's preface follows).
            self.from_start = true;
        }
        let from_start = self.from_start;
        let sender = match side {
            Side::Client => Sender::Client,
            Side::Server => Sender::Server,
        };
        let reader = self.half(side).reader.get_or_insert_with(|| {
            if from_start {
                FrameReader::new(sender)
            } else {
                FrameReader::lost(sender)
            }
        });
        reader.feed(chunk, |event| match event {
            Event::Frame(Frame { header, payload }) => {
                let (payload, data_len) = match payload {
                    Payload::Data { len } => (None, u64::from(len.unwrap_or(header.length))),
                    Payload::Complete(bytes) => (Some((bytes.to_vec(), true)), 0),
                    Payload::Truncated(bytes) => (Some((bytes.to_vec(), false)), 0),
                    Payload::Malformed | Payload::Skipped => (None, 0),
                };
                seen.push(Seen::Frame {
                    header,
                    payload,
                    data_len,
                });
            }
            Event::Lost => seen.push(Seen::Lost),
            Event::Preface | Event::Resynced { .. } => {}
        });
        for event in seen {
            match event {
                Seen::Frame {
                    header,
                    payload,
                    data_len,
                } => self.on_frame(side, header, payload, data_len, chunk, cx),
                Seen::Lost => {
                    // Frames were missed, header blocks among them: the table may have moved.
                    let half = self.half(side);
                    half.decoder.desync();
                    half.block = None;
                }
            }
        }
        Verdict::Keep
    }

    fn finish(&mut self, end_ns: u64, cx: &mut Context<'_>) {
        let ids: Vec<u32> = self.order.iter().copied().collect();
        for id in ids {
            self.complete(id, end_ns, Some("connection closed"), cx);
        }
    }

    fn discard(&mut self, cx: &mut Context<'_>) {
        for (_, stream) in self.streams.drain() {
            cx.drop_exchange(stream.tid, &stream.trace);
        }
        self.order.clear();
    }

    fn heap_bytes(&self) -> usize {
        let half = |h: &Half| {
            h.reader.as_ref().map_or(0, FrameReader::heap_bytes)
                + h.decoder.heap_bytes()
                + h.block.as_ref().map_or(0, |b| b.bytes.capacity())
        };
        half(&self.client)
            + half(&self.server)
            + self.streams.capacity() * (size_of::<Stream>() + 4)
            + self.streams.values().map(Stream::heap_bytes).sum::<usize>()
            + self.order.capacity() * 4
    }
}

/// The header fields a stream needs, as one block gave them.
#[derive(Debug, Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    status: Option<u16>,
    grpc: bool,
    grpc_status: Option<u32>,
    traceparent: Option<TraceParent>,
    traceparents: u32,
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(MAX_VALUE)]).into_owned()
}

fn number<T: std::str::FromStr>(value: &[u8]) -> Option<T> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

impl Fields {
    fn take(&mut self, field: super::hpack::Field<'_>) {
        let (Some(name), Some(value)) = (field.known_name(), field.value) else {
            return;
        };
        match name {
            KnownName::Method => self.method = Some(text(value)),
            KnownName::Path => self.path = Some(text(value)),
            KnownName::Authority => self.authority = Some(text(value)),
            KnownName::Status => self.status = number(value),
            KnownName::ContentType => self.grpc = value.starts_with(b"application/grpc"),
            KnownName::GrpcStatus => self.grpc_status = number(value),
            KnownName::Traceparent => {
                self.traceparents += 1;
                // W3C: several traceparent fields make the context invalid.
                self.traceparent = if self.traceparents == 1 {
                    parse_traceparent(value)
                } else {
                    None
                };
            }
            KnownName::Scheme | KnownName::ContentLength | KnownName::GrpcMessage => {}
        }
    }
}
