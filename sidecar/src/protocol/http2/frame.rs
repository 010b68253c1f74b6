//! HTTP/2 frames (RFC 9113, section 4) out of one direction of a connection, as a sequence of
//! [`Chunk`]s with gaps.
//!
//! Frames are reported as they complete. DATA payloads are skipped by count, so they may lie in
//! bytes that were never captured; the payloads of the other known types are handed over whole,
//! or as their visible prefix when part of them was not captured or they were split across chunks
//! beyond [`MAX_CARRY`] bytes. Only frame headers must be seen: when one falls into uncaptured
//! bytes the reader is lost, and it looks for frames again only at a chunk that starts at an
//! application read or write and whose bytes hold a chain of plausible frame headers. It never
//! reports a frame it did not see the header of.

use std::mem;

use crate::connection::stream::Chunk;

/// What a client sends before its first frame (RFC 9113, section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 9;

/// SETTINGS_MAX_FRAME_SIZE until a peer raises it, and its smallest legal value.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may announce (and the 24-bit length's limit).
pub const MAX_FRAME_SIZE_LIMIT: u32 = (1 << 24) - 1;

/// Payload bytes kept of a frame split across chunks; the rest is reported as truncated.
pub const MAX_CARRY: usize = 16_384;

/// Frame flags (RFC 9113, section 6), by the frame types that define them.
pub mod flags {
    /// DATA, HEADERS: the last frame of the stream from this sender.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the header block ends with this frame.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE: a pad length byte and padding surround the payload.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: stream dependency and weight precede the header block.
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameter identifiers (RFC 9113, section 6.5.2).
pub mod setting {
    /// The most HPACK table the sender decodes with: the limit for the other direction.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// 0 or 1: whether the sender accepts server push.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// Streams the sender lets its peer open at once.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// The sender's initial stream flow-control window.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// The longest frame payload the sender accepts: see [`super::FrameReader::set_max_frame_size`].
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// The largest header list the sender accepts (advisory).
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// The frame types of RFC 9113; others are extensions, which receivers ignore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    Goaway,
    WindowUpdate,
    Continuation,
    /// An extension type (e.g. ALTSVC, ORIGIN), by its code.
    Unknown(u8),
}

impl FrameType {
    /// The type of a frame header's type byte.
    pub fn from_code(code: u8) -> Self {
        match code {
            0x0 => Self::Data,
            0x1 => Self::Headers,
            0x2 => Self::Priority,
            0x3 => Self::RstStream,
            0x4 => Self::Settings,
            0x5 => Self::PushPromise,
            0x6 => Self::Ping,
            0x7 => Self::Goaway,
            0x8 => Self::WindowUpdate,
            0x9 => Self::Continuation,
            other => Self::Unknown(other),
        }
    }

    /// The type byte.
    pub fn code(self) -> u8 {
        match self {
            Self::Data => 0x0,
            Self::Headers => 0x1,
            Self::Priority => 0x2,
            Self::RstStream => 0x3,
            Self::Settings => 0x4,
            Self::PushPromise => 0x5,
            Self::Ping => 0x6,
            Self::Goaway => 0x7,
            Self::WindowUpdate => 0x8,
            Self::Continuation => 0x9,
            Self::Unknown(code) => code,
        }
    }

    /// The flags the type defines; `None` for extension types.
    fn defined_flags(self) -> Option<u8> {
        use flags::*;
        Some(match self {
            Self::Data => END_STREAM | PADDED,
            Self::Headers => END_STREAM | END_HEADERS | PADDED | PRIORITY,
            Self::Settings | Self::Ping => ACK,
            Self::PushPromise => END_HEADERS | PADDED,
            Self::Continuation => END_HEADERS,
            Self::Priority | Self::RstStream | Self::Goaway | Self::WindowUpdate => 0,
            Self::Unknown(_) => return None,
        })
    }
}

/// A frame header (RFC 9113, section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length, padding included.
    pub length: u32,
    pub kind: FrameType,
    pub flags: u8,
    /// The stream identifier without the reserved bit.
    pub stream_id: u32,
}

impl FrameHeader {
    /// Parses a frame header; the reserved bit is dropped, as receivers must.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        Self::parse_raw(bytes).0
    }

    /// The header and whether the reserved bit was set.
    pub fn parse_raw(bytes: &[u8; HEADER_LEN]) -> (Self, bool) {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *bytes;
        let stream = u32::from_be_bytes([s0, s1, s2, s3]);
        let header = Self {
            length: u32::from_be_bytes([0, l0, l1, l2]),
            kind: FrameType::from_code(kind),
            flags,
            stream_id: stream & 0x7fff_ffff,
        };
        (header, stream & 0x8000_0000 != 0)
    }

    /// Whether `flag` (one of [`flags`]) is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What a reported frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A DATA frame, whose payload is skipped: `len` is its data without padding, `None` when the
    /// pad length was not captured.
    Data { len: Option<u32> },
    /// The whole payload. For HEADERS the header block fragment (padding and priority fields
    /// removed); for PUSH_PROMISE the promised stream identifier and the fragment (padding
    /// removed).
    Complete(&'a [u8]),
    /// Only this prefix of the payload (shaped as for `Complete`, at most [`MAX_CARRY`] bytes)
    /// is at hand: the rest was not captured, or the frame is longer than what is carried over.
    Truncated(&'a [u8]),
    /// Padding longer than the payload: the peer will treat the connection as broken.
    Malformed,
    /// An extension frame type, skipped.
    Skipped,
}

/// One frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    pub payload: Payload<'a>,
}

impl Frame<'_> {
    /// The error code of a whole RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let Payload::Complete(payload) = self.payload else {
            return None;
        };
        let at = match self.header.kind {
            FrameType::RstStream => 0,
            FrameType::Goaway => 4,
            _ => return None,
        };
        let bytes = payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// The parameters of a SETTINGS payload, in order; a partial parameter at the end is ignored.
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|p| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
        )
    })
}

/// What [`FrameReader::feed`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The client connection preface.
    Preface,
    /// A frame, as soon as what matters of it is known.
    Frame(Frame<'a>),
    /// A frame header was not captured: frames are missed until [`Event::Resynced`], header
    /// blocks among them, so HPACK state is stale from here on.
    Lost,
    /// Frames are found again after `abandoned` bytes that were skipped unread.
    Resynced { abandoned: u64 },
}

/// The endpoint whose bytes a reader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// The client: the stream starts with the connection preface, and streams it opens are odd.
    Client,
    /// The server: streams it pushes are even.
    Server,
}

/// Counters of how much a reader missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Times the reader lost its place.
    pub losses: u64,
    /// Times it found frames again.
    pub resyncs: u64,
    /// Bytes skipped while lost (including bytes of a preface or header cut short).
    pub abandoned_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Bytes of the preface matched so far.
    Preface {
        matched: usize,
    },
    /// Bytes of the next frame header in `head`.
    Header {
        have: usize,
    },
    /// A padded DATA frame waits for its pad length byte.
    DataPad(FrameHeader),
    /// A payload split across chunks, gathered in `carry`.
    Payload(FrameHeader),
    /// Payload bytes to pass over.
    Skip {
        remaining: u64,
    },
    Lost,
}

/// Splits one direction of an HTTP/2 connection into frames.
#[derive(Clone, Debug)]
pub struct FrameReader {
    sender: Sender,
    state: State,
    max_frame_size: u32,
    head: [u8; HEADER_LEN],
    carry: Vec<u8>,
    /// The stream whose header block awaits a CONTINUATION.
    open_block: Option<u32>,
    abandoned_since_loss: u64,
    stats: Stats,
}

/// What is left of the chunk being read.
struct Input<'a> {
    visible: &'a [u8],
    unseen: u64,
}

impl Input<'_> {
    fn len(&self) -> u64 {
        self.visible.len() as u64 + self.unseen
    }

    fn advance(&mut self, n: usize) {
        self.visible = self.visible.get(n..).unwrap_or_default();
    }

    /// Passes over up to `n` bytes, seen or not; returns how many.
    fn skip(&mut self, n: u64) -> u64 {
        let from_visible = n.min(self.visible.len() as u64);
        self.advance(from_visible as usize);
        let from_unseen = (n - from_visible).min(self.unseen);
        self.unseen -= from_unseen;
        from_visible + from_unseen
    }
}

impl FrameReader {
    /// A reader from the start of the connection (after the preface when `sender` is the client).
    pub fn new(sender: Sender) -> Self {
        let state = match sender {
            Sender::Client => State::Preface { matched: 0 },
            Sender::Server => State::Header { have: 0 },
        };
        Self {
            sender,
            state,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            head: [0; HEADER_LEN],
            carry: Vec::new(),
            open_block: None,
            abandoned_since_loss: 0,
            stats: Stats::default(),
        }
    }

    /// A reader that joins a connection mid-stream: lost until it finds frames.
    pub fn lost(sender: Sender) -> Self {
        Self {
            state: State::Lost,
            ..Self::new(sender)
        }
    }

    /// The SETTINGS_MAX_FRAME_SIZE the receiver of this direction announced (in the other
    /// direction's SETTINGS): frames longer than it are not plausible when resynchronizing.
    pub fn set_max_frame_size(&mut self, size: u32) {
        self.max_frame_size = size.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT);
    }

    /// Whether the reader has lost its place.
    pub fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// What the reader has missed so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Heap bytes held for a payload split across chunks.
    pub fn heap_bytes(&self) -> usize {
        self.carry.capacity()
    }

    /// Reads the next chunk of this direction, reporting each event as it happens.
    pub fn feed<F>(&mut self, chunk: &Chunk<'_>, mut on: F)
    where
        F: FnMut(Event<'_>),
    {
        let mut input = Input {
            visible: chunk.visible,
            unseen: chunk.unseen,
        };
        if self.state == State::Lost {
            if !chunk.at_boundary
                || !plausible_start(
                    chunk.visible,
                    chunk.unseen,
                    self.sender,
                    self.max_frame_size,
                )
            {
                self.abandon(chunk.len());
                return;
            }
            self.stats.resyncs += 1;
            on(Event::Resynced {
                abandoned: mem::take(&mut self.abandoned_since_loss),
            });
            self.state = State::Header { have: 0 };
            self.open_block = None;
        }
        while self.step(&mut input, &mut on) {}
    }

    /// Advances by one state; `false` when the chunk is used up or the reader is lost.
    fn step<F>(&mut self, input: &mut Input<'_>, on: &mut F) -> bool
    where
        F: FnMut(Event<'_>),
    {
        match self.state {
            State::Lost => false,
            State::Preface { matched } => {
                let want = PREFACE.len() - matched;
                if !input.visible.is_empty() {
                    let n = want.min(input.visible.len());
                    if input.visible[..n] != PREFACE[matched..matched + n] {
                        self.lose(matched as u64 + input.len(), on);
                        return false;
                    }
                    input.advance(n);
                    self.state = State::Preface {
                        matched: matched + n,
                    };
                } else if input.unseen > 0 {
                    // Its length is fixed, so an uncaptured preface is passed over by count.
                    let n = input.skip(want as u64) as usize;
                    self.state = State::Preface {
                        matched: matched + n,
                    };
                } else {
                    return false;
                }
                if self.state
                    == (State::Preface {
                        matched: PREFACE.len(),
                    })
                {
                    on(Event::Preface);
                    self.state = State::Header { have: 0 };
                }
                true
            }
            State::Header { have } => {
                let header = if have == 0
                    && let Some(bytes) = input.visible.first_chunk::<HEADER_LEN>()
                {
                    input.advance(HEADER_LEN);
                    FrameHeader::parse(bytes)
                } else {
                    if input.visible.is_empty() {
                        if input.unseen > 0 {
                            self.lose(have as u64 + input.len(), on);
                        }
                        return false;
                    }
                    let n = (HEADER_LEN - have).min(input.visible.len());
                    self.head[have..have + n].copy_from_slice(&input.visible[..n]);
                    input.advance(n);
                    if have + n < HEADER_LEN {
                        self.state = State::Header { have: have + n };
                        return true;
                    }
                    FrameHeader::parse(&self.head)
                };
                if connection_error(&header, self.open_block) {
                    self.lose(HEADER_LEN as u64 + input.len(), on);
                    return false;
                }
                self.open_block = block_after(&header);
                self.begin(header, input, on);
                true
            }
            State::DataPad(header) => {
                if let Some(&pad) = input.visible.first() {
                    let payload = match header.length.checked_sub(1 + u32::from(pad)) {
                        Some(len) => Payload::Data { len: Some(len) },
                        None => Payload::Malformed,
                    };
                    on(Event::Frame(Frame { header, payload }));
                } else if input.unseen > 0 {
                    let payload = Payload::Data { len: None };
                    on(Event::Frame(Frame { header, payload }));
                } else {
                    return false;
                }
                self.state = State::Skip {
                    remaining: u64::from(header.length),
                };
                true
            }
            State::Payload(header) => {
                let length = header.length as usize;
                let want = length.min(MAX_CARRY) - self.carry.len();
                let n = want.min(input.visible.len());
                self.carry.extend_from_slice(&input.visible[..n]);
                input.advance(n);
                if self.carry.len() == length {
                    on(Event::Frame(shaped(header, &self.carry, true)));
                    self.state = State::Header { have: 0 };
                } else if self.carry.len() == MAX_CARRY || input.unseen > 0 {
                    on(Event::Frame(shaped(header, &self.carry, false)));
                    self.state = State::Skip {
                        remaining: (length - self.carry.len()) as u64,
                    };
                } else {
                    return false;
                }
                self.release_carry();
                true
            }
            State::Skip { remaining } => {
                let left = remaining - input.skip(remaining);
                if left > 0 {
                    self.state = State::Skip { remaining: left };
                    return false;
                }
                self.state = State::Header { have: 0 };
                true
            }
        }
    }

    /// Starts the frame of `header`, whose payload begins at `input`.
    fn begin<F>(&mut self, header: FrameHeader, input: &mut Input<'_>, on: &mut F)
    where
        F: FnMut(Event<'_>),
    {
        let length = header.length as usize;
        match header.kind {
            FrameType::Data if header.has(flags::PADDED) && length > 0 => {
                self.state = State::DataPad(header);
            }
            FrameType::Data | FrameType::Unknown(_) => {
                let payload = match header.kind {
                    FrameType::Data if header.has(flags::PADDED) => Payload::Malformed,
                    FrameType::Data => Payload::Data {
                        len: Some(header.length),
                    },
                    _ => Payload::Skipped,
                };
                on(Event::Frame(Frame { header, payload }));
                self.state = State::Skip {
                    remaining: u64::from(header.length),
                };
            }
            _ if input.visible.len() >= length => {
                // Wholly in this chunk: handed over in place, however long.
                on(Event::Frame(shaped(header, &input.visible[..length], true)));
                input.advance(length);
                self.state = State::Header { have: 0 };
            }
            _ if input.unseen > 0 || input.visible.len() >= MAX_CARRY => {
                // Cut as carrying would have cut it, so how the stream was split into chunks
                // does not change what is reported.
                let kept = input.visible.len().min(MAX_CARRY);
                on(Event::Frame(shaped(header, &input.visible[..kept], false)));
                self.state = State::Skip {
                    remaining: (length - kept) as u64,
                };
                input.advance(kept);
            }
            _ => {
                // Continues in the next chunk.
                self.carry.clear();
                self.carry.extend_from_slice(input.visible);
                input.advance(input.visible.len());
                self.state = State::Payload(header);
            }
        }
    }

    fn lose<F>(&mut self, abandoned: u64, on: &mut F)
    where
        F: FnMut(Event<'_>),
    {
        self.state = State::Lost;
        self.stats.losses += 1;
        self.abandoned_since_loss = 0;
        self.abandon(abandoned);
        on(Event::Lost);
    }

    fn abandon(&mut self, bytes: u64) {
        self.abandoned_since_loss += bytes;
        self.stats.abandoned_bytes += bytes;
    }

    /// Drops a large carry buffer once its frame is done, so an idle connection holds little.
    fn release_carry(&mut self) {
        self.carry.clear();
        if self.carry.capacity() > 1024 {
            self.carry = Vec::new();
        }
    }
}

/// The payload of a frame as reported: header block fragments without padding and priority.
fn shaped(header: FrameHeader, bytes: &[u8], whole: bool) -> Frame<'_> {
    let payload = match header.kind {
        FrameType::Headers | FrameType::PushPromise => header_block(&header, bytes),
        _ if whole => Payload::Complete(bytes),
        _ => Payload::Truncated(bytes),
    };
    Frame { header, payload }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE frame out of `bytes`, the visible
/// prefix of its payload (or all of it).
fn header_block<'a>(header: &FrameHeader, bytes: &'a [u8]) -> Payload<'a> {
    let padded = header.has(flags::PADDED);
    let start = usize::from(padded)
        + match header.kind {
            FrameType::Headers if header.has(flags::PRIORITY) => 5,
            _ => 0,
        };
    let least = start
        + match header.kind {
            FrameType::PushPromise => 4,
            _ => 0,
        };
    let length = header.length as usize;
    if length < least {
        return Payload::Malformed;
    }
    let pad = match (padded, bytes.first()) {
        (false, _) => 0,
        (true, Some(&pad)) => usize::from(pad),
        (true, None) => return Payload::Truncated(&[]),
    };
    let end = match length.checked_sub(pad) {
        Some(end) if end >= least => end,
        _ => return Payload::Malformed,
    };
    match bytes.get(start..end) {
        // Only padding may be missing: the fragment is whole.
        Some(fragment) => Payload::Complete(fragment),
        None => Payload::Truncated(bytes.get(start..).unwrap_or_default()),
    }
}

/// Whether `bytes`, followed by `unseen` bytes, at the start of an application read or write,
/// look like frames: headers that are each plausible, with payloads that fit their type as far
/// as they are visible, chaining (each starts where the previous payload ends) either to exactly
/// where the chunk ends (a write of whole frames), or through two or more whole frames with a
/// payload before running past the visible bytes.
///
/// The first frame must have a payload, and frames running past the visible bytes count for
/// nothing: a few bytes into a frame, nine bytes can look like an empty frame, or like a frame
/// whose length lands on the next real frame or beyond what was seen (the truncation sweep over
/// the golden captures found all three).
pub fn plausible_start(bytes: &[u8], unseen: u64, sender: Sender, max_frame_size: u32) -> bool {
    let mut pos = 0usize;
    let mut whole_with_payload = 0;
    let mut open_block: Option<u32> = None;
    while let Some(head) = bytes.get(pos..).and_then(<[u8]>::first_chunk::<HEADER_LEN>) {
        let (header, reserved) = FrameHeader::parse_raw(head);
        let start = pos + HEADER_LEN;
        let end = start + header.length as usize;
        let payload = bytes.get(start..end.min(bytes.len())).unwrap_or_default();
        if reserved
            || connection_error(&header, open_block)
            || !plausible_header(&header, sender, max_frame_size)
            || !plausible_payload(&header, payload)
            || (pos == 0 && header.length == 0)
        {
            return false;
        }
        open_block = block_after(&header);
        whole_with_payload += usize::from(header.length > 0 && end <= bytes.len());
        pos = end;
    }
    // A header cut off by the end of the visible bytes must agree as far as it goes.
    let rest = bytes.get(pos..).unwrap_or_default();
    if rest.len() >= 3 && u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) > max_frame_size {
        return false;
    }
    if let Some(&code) = rest.get(3) {
        let kind = FrameType::from_code(code);
        let Some(defined) = kind.defined_flags() else {
            return false;
        };
        if (kind == FrameType::Continuation) != open_block.is_some()
            || rest.get(4).is_some_and(|&f| f & !defined != 0)
        {
            return false;
        }
    }
    let chunk_end = bytes.len() as u64 + unseen;
    whole_with_payload >= 2 || (pos > 0 && pos as u64 == chunk_end)
}

/// The stream whose header block awaits a CONTINUATION after `header`'s frame.
fn block_after(header: &FrameHeader) -> Option<u32> {
    match header.kind {
        FrameType::Headers | FrameType::PushPromise | FrameType::Continuation
            if !header.has(flags::END_HEADERS) =>
        {
            Some(header.stream_id)
        }
        _ => None,
    }
}

/// Whether `header` would make its receiver close the connection (RFC 9113, sections 4.2, 6 and
/// 6.10): a stream identifier where the type forbids one or none where it needs one, a fixed-size
/// payload of another size, or anything but the CONTINUATION an open header block (on stream
/// `open_block`) awaits. A reader that meets one is not where it thinks it is.
fn connection_error(header: &FrameHeader, open_block: Option<u32>) -> bool {
    let continuation_expected = match open_block {
        Some(stream) => header.kind != FrameType::Continuation || header.stream_id != stream,
        None => header.kind == FrameType::Continuation,
    };
    let stream_wrong = match header.kind {
        FrameType::Data
        | FrameType::Headers
        | FrameType::Priority
        | FrameType::RstStream
        | FrameType::PushPromise
        | FrameType::Continuation => header.stream_id == 0,
        FrameType::Settings | FrameType::Ping | FrameType::Goaway => header.stream_id != 0,
        FrameType::WindowUpdate | FrameType::Unknown(_) => false,
    };
    let length = header.length;
    let length_wrong = match header.kind {
        FrameType::Priority => length != 5,
        FrameType::RstStream | FrameType::WindowUpdate => length != 4,
        FrameType::Ping => length != 8,
        FrameType::Settings => !length.is_multiple_of(6) || (header.has(flags::ACK) && length != 0),
        FrameType::Goaway => length < 8,
        FrameType::PushPromise => length < 4,
        _ => false,
    };
    continuation_expected || stream_wrong || length_wrong
}

/// The highest error code RFC 9113 defines (HTTP_1_1_REQUIRED).
const MAX_ERROR_CODE: u32 = 0xd;

/// Whether the visible prefix `payload` of a frame fits the frame's type: padding shorter than
/// the payload, a nonzero window increment, defined error codes, setting values in range, a
/// stream not depending on itself.
fn plausible_payload(header: &FrameHeader, payload: &[u8]) -> bool {
    let word = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    // What a padded frame holds besides padding: the pad length, fields, at least one byte of
    // header block.
    let fixed = match header.kind {
        FrameType::Headers if header.has(flags::PRIORITY) => 7,
        FrameType::Headers => 2,
        FrameType::PushPromise => 6,
        _ => 1,
    };
    let padding_fits = !header.has(flags::PADDED)
        || payload
            .first()
            .is_none_or(|&pad| u32::from(pad) + fixed <= header.length);
    padding_fits
        && match header.kind {
            FrameType::WindowUpdate => word(0).is_none_or(|w| w != 0 && w >> 31 == 0),
            FrameType::RstStream => word(0).is_none_or(|code| code <= MAX_ERROR_CODE),
            FrameType::Goaway => {
                word(0).is_none_or(|last| last >> 31 == 0)
                    && word(4).is_none_or(|code| code <= MAX_ERROR_CODE)
            }
            FrameType::Settings => settings(payload).all(|(id, value)| match id {
                setting::ENABLE_PUSH => value <= 1,
                setting::INITIAL_WINDOW_SIZE => value >> 31 == 0,
                setting::MAX_FRAME_SIZE => {
                    (DEFAULT_MAX_FRAME_SIZE..=MAX_FRAME_SIZE_LIMIT).contains(&value)
                }
                _ => true,
            }),
            FrameType::Priority => word(0).is_none_or(|dep| dep & 0x7fff_ffff != header.stream_id),
            _ => true,
        }
}

/// Whether a frame header that is no connection error is one a conforming `sender` would send
/// at the start of a write: a known type, only the flags it defines, a length within the limit,
/// streams the sender may use for the type, and a payload where senders always put one.
fn plausible_header(header: &FrameHeader, sender: Sender, max_frame_size: u32) -> bool {
    let Some(defined) = header.kind.defined_flags() else {
        return false;
    };
    if header.flags & !defined != 0 || header.length > max_frame_size {
        return false;
    }
    // Requests go on streams the client opened (odd); responses also on pushed (even) streams.
    let odd = header.stream_id % 2 == 1;
    match header.kind {
        // Senders send an empty DATA frame only to end a stream, and every header block holds
        // at least one field.
        FrameType::Data => {
            (sender == Sender::Server || odd)
                && (header.length > 0 || header.has(flags::END_STREAM))
        }
        FrameType::Headers => (sender == Sender::Server || odd) && header.length > 0,
        FrameType::PushPromise => sender == Sender::Server && odd,
        FrameType::Continuation => header.length > 0,
        _ => true,
    }
}

/// Helpers for the tests of this module and of the HPACK decoder over the golden captures.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The captures under `testdata/http2/`: each has `.c2s` and `.s2c` streams.
    pub const CAPTURES: &[&str] = &["curl_nginx_get", "h2load_nginx", "grpc_python", "node_post"];

    pub fn golden(file: &str) -> Vec<u8> {
        let path = format!("{}/testdata/http2/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The streams of every capture: file name, bytes, sender.
    pub fn streams() -> Vec<(String, Vec<u8>, Sender)> {
        CAPTURES
            .iter()
            .flat_map(|name| {
                [("c2s", Sender::Client), ("s2c", Sender::Server)].map(|(dir, sender)| {
                    (
                        format!("{name}.{dir}"),
                        golden(&format!("{name}.{dir}")),
                        sender,
                    )
                })
            })
            .collect()
    }

    pub fn chunk(visible: &[u8], unseen: u64, at_boundary: bool) -> Chunk<'_> {
        Chunk {
            visible,
            unseen,
            at_boundary,
            timestamp_ns: 0,
            tid: None,
        }
    }

    /// A payload with its bytes copied out.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum SeenPayload {
        Data(Option<u32>),
        Complete(Vec<u8>),
        Truncated(Vec<u8>),
        Malformed,
        Skipped,
    }

    /// An event with its bytes copied out.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Seen {
        Preface,
        Frame(FrameHeader, SeenPayload),
        Lost,
        Resynced(u64),
    }

    impl Seen {
        pub fn of(event: Event<'_>) -> Self {
            match event {
                Event::Preface => Self::Preface,
                Event::Lost => Self::Lost,
                Event::Resynced { abandoned } => Self::Resynced(abandoned),
                Event::Frame(Frame { header, payload }) => Self::Frame(
                    header,
                    match payload {
                        Payload::Data { len } => SeenPayload::Data(len),
                        Payload::Complete(p) => SeenPayload::Complete(p.to_vec()),
                        Payload::Truncated(p) => SeenPayload::Truncated(p.to_vec()),
                        Payload::Malformed => SeenPayload::Malformed,
                        Payload::Skipped => SeenPayload::Skipped,
                    },
                ),
            }
        }
    }

    pub fn read(reader: &mut FrameReader, chunks: &[Chunk<'_>]) -> Vec<Seen> {
        let mut seen = Vec::new();
        for chunk in chunks {
            reader.feed(chunk, |e| seen.push(Seen::of(e)));
        }
        seen
    }

    /// Where each frame of a whole stream lies (the preface counts as one), in order.
    pub fn spans(bytes: &[u8], sender: Sender) -> Vec<std::ops::Range<usize>> {
        let mut spans = Vec::new();
        let mut pos = 0;
        if sender == Sender::Client {
            spans.push(0..PREFACE.len());
            pos = PREFACE.len();
        }
        while let Some(head) = bytes.get(pos..).and_then(<[u8]>::first_chunk::<HEADER_LEN>) {
            let end = pos + HEADER_LEN + FrameHeader::parse(head).length as usize;
            spans.push(pos..end);
            pos = end;
        }
        assert_eq!(pos, bytes.len());
        spans
    }

    /// A frame header as the listings print it.
    pub fn describe(header: &FrameHeader) -> String {
        const NAMES: [&str; 10] = [
            "DATA",
            "HEADERS",
            "PRIORITY",
            "RST_STREAM",
            "SETTINGS",
            "PUSH_PROMISE",
            "PING",
            "GOAWAY",
            "WINDOW_UPDATE",
            "CONTINUATION",
        ];
        let code = header.kind.code();
        let name = NAMES
            .get(usize::from(code))
            .map_or_else(|| format!("UNKNOWN_{code:#04x}"), |n| n.to_string());
        format!(
            "{name} length={} flags={:#04x} stream={}",
            header.length, header.flags, header.stream_id
        )
    }

    /// Whether `part`, a frame reported from a partial capture, could be `whole`, the frame at
    /// the same place in the whole capture.
    pub fn consistent(part: &Seen, whole: &Seen) -> bool {
        match (part, whole) {
            (Seen::Frame(h, p), Seen::Frame(wh, wp)) if h == wh => match (p, wp) {
                (SeenPayload::Truncated(p), SeenPayload::Complete(w)) => w.starts_with(p),
                (SeenPayload::Data(None), SeenPayload::Data(_)) => true,
                (p, wp) => p == wp,
            },
            _ => part == whole,
        }
    }

    /// Checks that the frames in `part` appear, in order, among those of `whole`.
    pub fn assert_subsequence(part: &[Seen], whole: &[Seen], context: &str) {
        let mut rest = whole.iter().filter(|s| matches!(s, Seen::Frame(..)));
        for seen in part.iter().filter(|s| matches!(s, Seen::Frame(..))) {
            assert!(
                rest.any(|w| consistent(seen, w)),
                "{context}: {seen:?} is not in the whole capture"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn header(kind: u8, flags: u8, stream: u32, length: u32) -> FrameHeader {
        FrameHeader {
            length,
            kind: FrameType::from_code(kind),
            flags,
            stream_id: stream,
        }
    }

    fn whole(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Seen {
        Seen::Frame(
            header(kind, flags, stream, payload.len() as u32),
            SeenPayload::Complete(payload.to_vec()),
        )
    }

    fn client_stream() -> Vec<u8> {
        [
            &PREFACE[..],
            &frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]),
            &frame(8, 0, 0, &[0, 0, 0x10, 0]),
            &frame(1, 0x05, 1, b"\x82\x86\x84"),
            &frame(0, 0x01, 3, &[7; 300]),
            &frame(1, 0x05, 5, b"\x83\x86\x84"),
            &frame(0, 0x01, 5, b"body"),
            &frame(6, 0, 0, b"pingpong"),
            &frame(0x0a, 0, 0, b"altsvc"),
            &frame(3, 0, 5, &[0, 0, 0, 8]),
            &frame(7, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0, b'x']),
        ]
        .concat()
    }

    fn client_events() -> Vec<Seen> {
        vec![
            Seen::Preface,
            whole(4, 0, 0, &[0, 3, 0, 0, 0, 100]),
            whole(8, 0, 0, &[0, 0, 0x10, 0]),
            whole(1, 0x05, 1, b"\x82\x86\x84"),
            Seen::Frame(header(0, 1, 3, 300), SeenPayload::Data(Some(300))),
            whole(1, 0x05, 5, b"\x83\x86\x84"),
            Seen::Frame(header(0, 1, 5, 4), SeenPayload::Data(Some(4))),
            whole(6, 0, 0, b"pingpong"),
            Seen::Frame(header(0x0a, 0, 0, 6), SeenPayload::Skipped),
            whole(3, 0, 5, &[0, 0, 0, 8]),
            whole(7, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0, b'x']),
        ]
    }

    #[test]
    fn frames_of_a_whole_stream() {
        let bytes = client_stream();
        let mut reader = FrameReader::new(Sender::Client);
        assert_eq!(
            read(&mut reader, &[chunk(&bytes, 0, true)]),
            client_events()
        );
        assert_eq!(reader.stats(), Stats::default());
        assert!(!reader.is_lost());
    }

    #[test]
    fn frames_split_at_every_byte_boundary() {
        let bytes = client_stream();
        for split in 0..=bytes.len() {
            let mut reader = FrameReader::new(Sender::Client);
            let chunks = [
                chunk(&bytes[..split], 0, true),
                chunk(&bytes[split..], 0, false),
            ];
            assert_eq!(
                read(&mut reader, &chunks),
                client_events(),
                "split at {split}"
            );
        }
        // One byte per chunk: every header and payload carried over.
        let mut reader = FrameReader::new(Sender::Client);
        let chunks: Vec<_> = bytes.chunks(1).map(|b| chunk(b, 0, false)).collect();
        assert_eq!(read(&mut reader, &chunks), client_events());
        assert!(reader.carry.capacity() <= 1024);
    }

    #[test]
    fn data_payloads_may_be_unseen() {
        let headers = frame(1, 0x04, 1, b"\x88");
        let mut reader = FrameReader::new(Sender::Server);
        let data_head = &frame(0, 0, 1, &[0; 5000])[..HEADER_LEN];
        let trailers = frame(1, 0x05, 1, b"\x40\x0bgrpc-status\x010");
        let events = read(
            &mut reader,
            &[
                chunk(&headers, 0, true),
                // A write of 5009 bytes of which the header and 100 bytes were captured.
                chunk(&[data_head, &[0; 100]].concat(), 4900, true),
                // The next write, or the next TCP segment.
                chunk(&trailers, 0, false),
            ],
        );
        assert_eq!(
            events,
            [
                whole(1, 0x04, 1, b"\x88"),
                Seen::Frame(header(0, 0, 1, 5000), SeenPayload::Data(Some(5000))),
                whole(1, 0x05, 1, b"\x40\x0bgrpc-status\x010"),
            ]
        );
        assert!(!reader.is_lost());
    }

    #[test]
    fn headers_after_large_data_in_one_write() {
        let data = frame(0, 0, 1, &[b'd'; 20_000]);
        let trailers = frame(1, 0x05, 1, b"\x88");
        let write = [&data[..], &trailers].concat();
        let expected = [
            Seen::Frame(header(0, 0, 1, 20_000), SeenPayload::Data(Some(20_000))),
            whole(1, 0x05, 1, b"\x88"),
        ];
        // Captured whole.
        let mut reader = FrameReader::new(Sender::Server);
        assert_eq!(read(&mut reader, &[chunk(&write, 0, true)]), expected);
        // The payload's middle not captured, its end and the trailers seen in the next segment.
        let mut reader = FrameReader::new(Sender::Server);
        let chunks = [
            chunk(&write[..1024], 10_000, true),
            chunk(&write[11_024..], 0, false),
        ];
        assert_eq!(read(&mut reader, &chunks), expected);
        // Captured only 1 KiB: the trailers' header is unseen, so the reader is lost.
        let mut reader = FrameReader::new(Sender::Server);
        let chunks = [chunk(&write[..1024], (write.len() - 1024) as u64, true)];
        assert_eq!(
            read(&mut reader, &chunks),
            [expected[0].clone(), Seen::Lost]
        );
        assert!(reader.is_lost());
        assert_eq!(
            reader.stats(),
            Stats {
                losses: 1,
                resyncs: 0,
                abandoned_bytes: trailers.len() as u64,
            }
        );
    }

    #[test]
    fn truncated_payloads() {
        // HEADERS with padding and priority, cut inside the block.
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0x80, 0, 0, 1, 15]);
        payload.extend_from_slice(b"\x82\x86\x84\x41\x0fwww.example.com");
        payload.extend_from_slice(&[0; 3]);
        let bytes = frame(1, 0x2d, 3, &payload);
        let hdr = header(1, 0x2d, 3, payload.len() as u32);
        for (visible, expected) in [
            (0, SeenPayload::Truncated(vec![])),
            (1, SeenPayload::Truncated(vec![])),
            (6, SeenPayload::Truncated(vec![])),
            (9, SeenPayload::Truncated(b"\x82\x86\x84".to_vec())),
            // Only padding missing: the block is whole.
            (
                payload.len() - 2,
                SeenPayload::Complete(payload[6..payload.len() - 3].to_vec()),
            ),
            (
                payload.len(),
                SeenPayload::Complete(payload[6..payload.len() - 3].to_vec()),
            ),
        ] {
            let mut reader = FrameReader::new(Sender::Client);
            reader.state = State::Header { have: 0 };
            let unseen = (payload.len() - visible) as u64;
            let events = read(
                &mut reader,
                &[chunk(&bytes[..HEADER_LEN + visible], unseen, true)],
            );
            assert_eq!(events, [Seen::Frame(hdr, expected)], "{visible} visible");
        }
        // Padding longer than the payload.
        let mut reader = FrameReader::new(Sender::Server);
        let bad = [
            frame(1, 0x0c, 1, &[9, 1, 2]),
            frame(0, 0x09, 1, &[5, 1]),
            frame(0, 0x08, 1, &[]),
            // No room for the pad length, or the priority fields.
            frame(1, 0x0c, 1, &[]),
            frame(1, 0x24, 1, &[0, 0, 0]),
            frame(5, 0x04, 1, &[0, 0]),
        ]
        .concat();
        let events = read(&mut reader, &[chunk(&bad, 0, true)]);
        assert_eq!(
            events,
            [
                Seen::Frame(header(1, 0x0c, 1, 3), SeenPayload::Malformed),
                Seen::Frame(header(0, 0x09, 1, 2), SeenPayload::Malformed),
                Seen::Frame(header(0, 0x08, 1, 0), SeenPayload::Malformed),
                Seen::Frame(header(1, 0x0c, 1, 0), SeenPayload::Malformed),
                Seen::Frame(header(1, 0x24, 1, 3), SeenPayload::Malformed),
                // A PUSH_PROMISE too short for its promised stream is a connection error.
                Seen::Lost,
            ]
        );
        // Padded DATA: the data length without padding, unknown if the pad length is unseen.
        let mut reader = FrameReader::new(Sender::Server);
        let data = frame(0, 0x08, 1, &[4, b'a', b'b', 0, 0, 0, 0]);
        let events = read(
            &mut reader,
            &[
                chunk(&data[..HEADER_LEN], 0, true),
                chunk(&data[HEADER_LEN..], 0, false),
            ],
        );
        assert_eq!(
            events,
            [Seen::Frame(
                header(0, 0x08, 1, 7),
                SeenPayload::Data(Some(2))
            )]
        );
        let mut reader = FrameReader::new(Sender::Server);
        let events = read(&mut reader, &[chunk(&data[..HEADER_LEN], 7, true)]);
        assert_eq!(
            events,
            [Seen::Frame(header(0, 0x08, 1, 7), SeenPayload::Data(None))]
        );
        // PUSH_PROMISE keeps the promised stream; padding goes.
        let mut reader = FrameReader::new(Sender::Server);
        let push = frame(5, 0x0c, 1, &[1, 0, 0, 0, 2, 0x82, 0]);
        let events = read(&mut reader, &[chunk(&push, 0, true)]);
        assert_eq!(
            events,
            [Seen::Frame(
                header(5, 0x0c, 1, 7),
                SeenPayload::Complete(vec![0, 0, 0, 2, 0x82])
            )]
        );
    }

    #[test]
    fn carry_over_is_capped() {
        let big = frame(1, 0x04, 1, &[0x82; 20_000]);
        let after = frame(6, 0, 0, b"pingpong");
        let bytes = [&big[..], &after].concat();
        let mut reader = FrameReader::new(Sender::Server);
        // Split in three so the frame is carried: over the cap, the rest is skipped.
        let chunks = [
            chunk(&bytes[..100], 0, true),
            chunk(&bytes[100..10_000], 0, false),
            chunk(&bytes[10_000..], 0, false),
        ];
        let events = read(&mut reader, &chunks);
        assert_eq!(
            events,
            [
                Seen::Frame(
                    header(1, 0x04, 1, 20_000),
                    SeenPayload::Truncated(vec![0x82; MAX_CARRY])
                ),
                whole(6, 0, 0, b"pingpong"),
            ]
        );
        assert!(reader.carry.capacity() <= 1024);
        // Wholly in one chunk, it is handed over in place, however long.
        let mut reader = FrameReader::new(Sender::Server);
        let events = read(&mut reader, &[chunk(&bytes, 0, true)]);
        assert_eq!(events[0], whole(1, 0x04, 1, &[0x82; 20_000]));
        // Partly in one chunk, it is cut where carrying would cut it, however it was split.
        let mut reader = FrameReader::new(Sender::Server);
        let events = read(&mut reader, &[chunk(&bytes[..18_000], 2_009 + 17, true)]);
        assert_eq!(
            events,
            [
                Seen::Frame(
                    header(1, 0x04, 1, 20_000),
                    SeenPayload::Truncated(vec![0x82; MAX_CARRY])
                ),
                Seen::Lost
            ]
        );
    }

    #[test]
    fn resync_after_a_gap() {
        let bytes = client_stream();
        let spans = spans(&bytes, Sender::Client);
        // Frames 4 (DATA on stream 3) and 5 (HEADERS on stream 5) fall in a gap; the next write
        // (DATA and PING) is captured, then one with an extension frame, which would not do to
        // resync on, but is read as the reader is back in place.
        let gap = spans[4].start..spans[6].start;
        let chunks = [
            chunk(&bytes[..gap.start], 0, true),
            chunk(&[], gap.len() as u64, false),
            chunk(&bytes[gap.end..spans[8].start], 0, true),
            chunk(&bytes[spans[8].start..], 0, true),
        ];
        let mut reader = FrameReader::new(Sender::Client);
        let events = read(&mut reader, &chunks);
        let all = client_events();
        let expected: Vec<Seen> = all[..4]
            .iter()
            .cloned()
            .chain([Seen::Lost, Seen::Resynced(gap.len() as u64)])
            .chain(all[6..].iter().cloned())
            .collect();
        assert_eq!(events, expected);
        assert_eq!(
            reader.stats(),
            Stats {
                losses: 1,
                resyncs: 1,
                abandoned_bytes: gap.len() as u64,
            }
        );
        // Not at a boundary: no resync there; nor at the next write, which starts with an
        // extension frame.
        let mut reader = FrameReader::new(Sender::Client);
        let mut chunks = chunks;
        chunks[2].at_boundary = false;
        let events = read(&mut reader, &chunks);
        assert_eq!(events.last(), Some(&Seen::Lost));
        assert_eq!(
            reader.stats().abandoned_bytes,
            (bytes.len() - gap.start) as u64
        );
    }

    #[test]
    fn resync_needs_plausible_headers() {
        let ok = |bytes: &[u8], sender| plausible_start(bytes, 0, sender, DEFAULT_MAX_FRAME_SIZE);
        let settings = frame(4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
        let headers = frame(1, 0x04, 1, b"\x82");
        let data = frame(0, 0, 1, &[0; 100]);
        assert!(ok(&settings, Sender::Server));
        assert!(ok(&[&headers[..], &settings].concat(), Sender::Client));
        // After two whole frames with a payload, the next may run past the visible bytes or be
        // cut off; after one, it may not.
        assert!(ok(
            &[&headers[..], &settings, &data[..50]].concat(),
            Sender::Server
        ));
        assert!(!ok(&[&headers[..], &data[..50]].concat(), Sender::Client));
        assert!(ok(
            &[&headers[..], &headers, &settings[..5]].concat(),
            Sender::Client
        ));
        assert!(!ok(
            &[&headers[..], &settings[..5]].concat(),
            Sender::Client
        ));
        // One frame must end exactly where the chunk does, unseen bytes included.
        assert!(!ok(&data[..50], Sender::Client));
        assert!(plausible_start(
            &data[..50],
            59,
            Sender::Client,
            DEFAULT_MAX_FRAME_SIZE
        ));
        assert!(!plausible_start(
            &data[..50],
            58,
            Sender::Client,
            DEFAULT_MAX_FRAME_SIZE
        ));
        assert!(!plausible_start(
            &data[..50],
            60,
            Sender::Client,
            DEFAULT_MAX_FRAME_SIZE
        ));
        // A header block continued.
        let open = frame(1, 0, 1, b"\x82");
        let cont = frame(9, 0x04, 1, b"\x84");
        assert!(ok(&[&open[..], &cont].concat(), Sender::Client));
        for (bytes, sender, why) in [
            (vec![], Sender::Client, "nothing"),
            (settings[..8].to_vec(), Sender::Server, "no whole header"),
            (frame(0x0a, 0, 0, b"x"), Sender::Server, "extension type"),
            (frame(4, 0x02, 0, &[]), Sender::Server, "undefined flag"),
            (frame(4, 0, 1, &[]), Sender::Server, "SETTINGS on a stream"),
            (frame(4, 0, 0, &[0; 5]), Sender::Server, "SETTINGS length"),
            (
                frame(4, 1, 0, &[0; 6]),
                Sender::Server,
                "SETTINGS ack with payload",
            ),
            (frame(6, 0, 0, &[0; 7]), Sender::Server, "PING length"),
            (
                frame(8, 0, 1, &[0; 5]),
                Sender::Server,
                "WINDOW_UPDATE length",
            ),
            (
                frame(3, 0, 0, &[0; 4]),
                Sender::Server,
                "RST_STREAM on stream 0",
            ),
            (frame(2, 0, 1, &[0; 4]), Sender::Server, "PRIORITY length"),
            (
                frame(7, 0, 1, &[0; 8]),
                Sender::Server,
                "GOAWAY on a stream",
            ),
            (
                frame(1, 0x04, 0, b"\x82"),
                Sender::Server,
                "HEADERS on stream 0",
            ),
            (frame(1, 0x04, 1, b""), Sender::Server, "empty HEADERS"),
            (
                frame(0, 0, 1, b""),
                Sender::Server,
                "empty DATA not ending the stream",
            ),
            (
                [&open[..], &frame(9, 4, 1, b"")].concat(),
                Sender::Client,
                "empty CONTINUATION",
            ),
            (
                frame(1, 0x04, 2, b"\x82"),
                Sender::Client,
                "client HEADERS on an even stream",
            ),
            (
                frame(0, 0, 4, b"x"),
                Sender::Client,
                "client DATA on an even stream",
            ),
            (
                frame(5, 0x04, 1, &[0, 0, 0, 2]),
                Sender::Client,
                "PUSH_PROMISE from a client",
            ),
            (
                frame(9, 0x04, 1, b"\x82"),
                Sender::Client,
                "CONTINUATION first",
            ),
            (
                [&open[..], &settings].concat(),
                Sender::Client,
                "no CONTINUATION",
            ),
            (
                [&open[..], &frame(9, 4, 3, b"")].concat(),
                Sender::Client,
                "other stream",
            ),
            (
                [&headers[..], &[0, 0, 0, 0x0b]].concat(),
                Sender::Client,
                "cut-off bad type",
            ),
            (
                [&headers[..], &[0x01, 0, 0]].concat(),
                Sender::Client,
                "cut-off long length",
            ),
            (
                [&headers[..], &[0, 0, 0, 4, 2]].concat(),
                Sender::Client,
                "cut-off bad flag",
            ),
            (
                [&headers[..], &[0, 0, 0, 9]].concat(),
                Sender::Client,
                "cut-off CONTINUATION",
            ),
            (
                frame(0, 0, 1, &[0; 16_385]),
                Sender::Client,
                "longer than the limit",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                Sender::Client,
                "HTTP/1.1",
            ),
            (b"{\"json\": true}".to_vec(), Sender::Server, "JSON"),
        ] {
            assert!(!ok(&bytes, sender), "{why}");
        }
        // Payloads that no sender writes: a zero window increment, undefined error codes,
        // setting values out of range, a stream depending on itself, padding too long.
        let exact =
            |bytes: &[u8], sender| plausible_start(bytes, 0, sender, DEFAULT_MAX_FRAME_SIZE);
        assert!(exact(&frame(8, 0, 0, &[0, 0, 0, 1]), Sender::Client));
        assert!(exact(&frame(3, 0, 1, &[0, 0, 0, 8]), Sender::Client));
        assert!(exact(
            &frame(7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0xd]),
            Sender::Client
        ));
        assert!(exact(&frame(2, 0, 3, &[0, 0, 0, 1, 16]), Sender::Client));
        assert!(exact(&frame(1, 0x0c, 1, &[1, 0x82, 0]), Sender::Client));
        for (bytes, why) in [
            (frame(8, 0, 0, &[0, 0, 0, 0]), "zero increment"),
            (frame(8, 0, 0, &[0x80, 0, 0, 1]), "increment's reserved bit"),
            (frame(3, 0, 1, &[0, 0, 0, 0x0e]), "RST_STREAM error code"),
            (
                frame(7, 0, 0, &[0, 0, 0, 1, 0, 0, 1, 0]),
                "GOAWAY error code",
            ),
            (
                frame(7, 0, 0, &[0x80, 0, 0, 1, 0, 0, 0, 0]),
                "GOAWAY last stream's reserved bit",
            ),
            (frame(4, 0, 0, &[0, 2, 0, 0, 0, 2]), "ENABLE_PUSH 2"),
            (
                frame(4, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
                "INITIAL_WINDOW_SIZE 2^31",
            ),
            (
                frame(4, 0, 0, &[0, 5, 0, 0, 0x10, 0]),
                "MAX_FRAME_SIZE 4096",
            ),
            (frame(2, 0, 3, &[0, 0, 0, 3, 16]), "PRIORITY on itself"),
            (
                frame(1, 0x0c, 1, &[2, 0x82, 0]),
                "HEADERS padding leaves no block",
            ),
            (frame(0, 0x08, 1, &[3, 0, 0]), "DATA padding too long"),
        ] {
            assert!(!exact(&bytes, Sender::Client), "{why}");
        }
        // The reserved bit.
        let mut reserved = settings.clone();
        reserved[5] |= 0x80;
        assert!(!ok(&reserved, Sender::Server));
        // A larger SETTINGS_MAX_FRAME_SIZE admits longer frames.
        let long = frame(0, 0, 1, &[0; 16_385]);
        assert!(plausible_start(&long, 0, Sender::Client, 1 << 20));
        let mut reader = FrameReader::lost(Sender::Client);
        reader.set_max_frame_size(1 << 20);
        let events = read(&mut reader, &[chunk(&long, 0, true)]);
        assert_eq!(events.len(), 2, "{events:?}");
    }

    /// In place, a frame header that would be a connection error means the reader is not where
    /// it thinks: it is lost rather than report the frame.
    #[test]
    fn connection_errors_lose_the_place() {
        let open = frame(1, 0x00, 1, b"\x82");
        for (bytes, why) in [
            (
                [&open[..], &frame(0, 1, 1, b"x")].concat(),
                "DATA inside a header block",
            ),
            (
                [&open[..], &frame(9, 4, 3, b"\x84")].concat(),
                "CONTINUATION of another stream",
            ),
            (frame(9, 4, 1, b"\x84"), "CONTINUATION without a block"),
            (frame(4, 0, 1, &[]), "SETTINGS on a stream"),
            (frame(0, 1, 0, b"x"), "DATA on stream 0"),
            (frame(6, 0, 0, b"ping"), "PING of 4 bytes"),
            (frame(8, 0, 0, b"wu"), "WINDOW_UPDATE of 2 bytes"),
        ] {
            let mut reader = FrameReader::new(Sender::Server);
            let events = read(&mut reader, &[chunk(&bytes, 0, true)]);
            assert_eq!(events.last(), Some(&Seen::Lost), "{why}");
            assert!(events.len() <= 2, "{why}: {events:?}");
        }
        // Extension types and undefined flags are ignored, as receivers must.
        let mut reader = FrameReader::new(Sender::Server);
        let bytes = [frame(0x0b, 0xff, 7, b"ext"), frame(0, 0xf0, 2, b"x")].concat();
        let events = read(&mut reader, &[chunk(&bytes, 0, true)]);
        assert_eq!(
            events,
            [
                Seen::Frame(header(0x0b, 0xff, 7, 3), SeenPayload::Skipped),
                Seen::Frame(header(0, 0xf0, 2, 1), SeenPayload::Data(Some(1))),
            ]
        );
    }

    #[test]
    fn preface() {
        // Split anywhere, or partly uncaptured (its length is fixed).
        for split in 0..=PREFACE.len() {
            let bytes = client_stream();
            let mut reader = FrameReader::new(Sender::Client);
            let events = read(
                &mut reader,
                &[
                    chunk(&bytes[..split], 0, true),
                    chunk(&bytes[split..], 0, false),
                ],
            );
            assert_eq!(events, client_events());
            let mut reader = FrameReader::new(Sender::Client);
            let events = read(
                &mut reader,
                &[
                    chunk(&bytes[..split], (PREFACE.len() - split) as u64, true),
                    chunk(&bytes[PREFACE.len()..], 0, true),
                ],
            );
            assert_eq!(events, client_events());
        }
        // Not HTTP/2: lost, and all of it abandoned.
        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut reader = FrameReader::new(Sender::Client);
        assert_eq!(read(&mut reader, &[chunk(http1, 0, true)]), [Seen::Lost]);
        assert_eq!(reader.stats().abandoned_bytes, http1.len() as u64);
        // A mismatch after a partial match counts the matched bytes too.
        let mut reader = FrameReader::new(Sender::Client);
        let events = read(
            &mut reader,
            &[chunk(b"PRI * ", 0, true), chunk(b"HTTP/1.1", 0, false)],
        );
        assert_eq!(events, [Seen::Lost]);
        assert_eq!(reader.stats().abandoned_bytes, 14);
    }

    #[test]
    fn settings_and_error_codes() {
        let payload = [0, 1, 0, 0, 0x10, 0, 0, 5, 0, 0, 0x40, 0, 9];
        assert_eq!(
            settings(&payload).collect::<Vec<_>>(),
            [
                (setting::HEADER_TABLE_SIZE, 4096),
                (setting::MAX_FRAME_SIZE, 16_384)
            ]
        );
        let rst = Frame {
            header: header(3, 0, 1, 4),
            payload: Payload::Complete(&[0, 0, 0, 8]),
        };
        assert_eq!(rst.error_code(), Some(8));
        let goaway = Frame {
            header: header(7, 0, 0, 8),
            payload: Payload::Complete(&[0, 0, 0, 3, 0, 0, 0, 2]),
        };
        assert_eq!(goaway.error_code(), Some(2));
        let cut = Frame {
            header: header(7, 0, 0, 8),
            payload: Payload::Truncated(&[0, 0, 0, 3, 0]),
        };
        assert_eq!(cut.error_code(), None);
        for code in 0..=255 {
            assert_eq!(FrameType::from_code(code).code(), code);
        }
    }

    /// The golden captures: the frames are those the independent listing names.
    #[test]
    fn golden_frames_match_the_listing() {
        for (file, bytes, sender) in streams() {
            let listing = String::from_utf8(golden(&format!("{file}.txt"))).unwrap();
            let expected: Vec<&str> = listing.lines().filter(|l| !l.starts_with("  ")).collect();
            let mut reader = FrameReader::new(sender);
            let mut printed = Vec::new();
            reader.feed(&chunk(&bytes, 0, true), |event| {
                printed.push(match event {
                    Event::Preface => "PREFACE".to_string(),
                    Event::Frame(Frame { header, payload }) => {
                        assert!(
                            matches!(
                                payload,
                                Payload::Complete(_) | Payload::Data { len: Some(_) }
                            ),
                            "{file}: {payload:?}"
                        );
                        describe(&header)
                    }
                    other => panic!("{file}: {other:?}"),
                });
            });
            assert_eq!(printed, expected, "{file}");
        }
    }

    /// Writes captured up to 1 KiB each, as the kernel side does: every frame whose header is
    /// inside a write's first KiB is still found, DATA payloads skipped by count.
    #[test]
    fn golden_writes_captured_one_kib_each() {
        for (file, bytes, sender) in streams() {
            let mut full = FrameReader::new(sender);
            let all = read(&mut full, &[chunk(&bytes, 0, true)]);
            // One frame per write, then writes of up to three frames.
            let spans = spans(&bytes, sender);
            for group in [1, 3] {
                let writes: Vec<_> = spans
                    .chunks(group)
                    .map(|g| g[0].start..g[g.len() - 1].end)
                    .collect();
                let chunks: Vec<_> = writes
                    .iter()
                    .map(|w| {
                        let captured = w.len().min(1024);
                        chunk(
                            &bytes[w.start..w.start + captured],
                            (w.len() - captured) as u64,
                            true,
                        )
                    })
                    .collect();
                let mut reader = FrameReader::new(sender);
                let events = read(&mut reader, &chunks);
                assert_subsequence(&events, &all, &file);
                if group == 1 {
                    // Nothing is lost: each write starts with a header.
                    let frames =
                        |e: &[Seen]| e.iter().filter(|s| matches!(s, Seen::Frame(..))).count();
                    assert_eq!(frames(&events), frames(&all), "{file}");
                    assert_eq!(reader.stats(), Stats::default(), "{file}");
                }
            }
        }
    }

    /// A reader that joins mid-connection finds the frames of the first write with a payload.
    #[test]
    fn golden_joined_mid_stream() {
        for (file, bytes, sender) in streams() {
            let mut full = FrameReader::new(sender);
            let all = read(&mut full, &[chunk(&bytes, 0, true)]);
            let spans = spans(&bytes, sender);
            let mut resynced = 0;
            for start in 1..spans.len() {
                let chunks: Vec<_> = spans[start..]
                    .iter()
                    .map(|s| chunk(&bytes[s.clone()], 0, true))
                    .collect();
                let mut reader = FrameReader::lost(sender);
                let events = read(&mut reader, &chunks);
                // Writes of one empty frame (a SETTINGS ACK) are too weak to resync on.
                let Some(first) = spans[start..].iter().position(|s| s.len() > HEADER_LEN) else {
                    assert!(events.is_empty(), "{file} from {start}");
                    continue;
                };
                let skipped: usize = spans[start..start + first].iter().map(|s| s.len()).sum();
                assert_eq!(
                    events.first(),
                    Some(&Seen::Resynced(skipped as u64)),
                    "{file} from {start}"
                );
                let offset = all.len() - (spans.len() - start - first);
                assert_eq!(events[1..], all[offset..], "{file} from {start}");
                resynced += 1;
            }
            assert!(resynced >= spans.len() / 2, "{file}");
        }
    }
}
