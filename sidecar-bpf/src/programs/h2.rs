//! HTTP/2 frames found in the kernel, beyond the bounded copy: a walk over the frame headers of
//! what a syscall moved (or an skb carries: the walk reads through a [`Source`]), copying each
//! frame but DATA whole and only the header of each DATA frame. A response's trailers or the
//! next stream's HEADERS behind 16 KiB of DATA in one write are then captured, where a 1 KiB
//! prefix would have lost them.
//!
//! The walk needs to know where a frame starts. A syscall of an HTTP/2 socket (its client
//! preface was seen) that starts with a plausible frame header gives it, as does a write too long
//! for the bounded copy whose frames account for every byte; each walk then leaves, per
//! direction, how many bytes of the next syscall still belong to the last frame. A frame header
//! split across buffers is gathered from each. A walk that cannot finish (too many frames or
//! pieces) forgets the position until a later syscall starts with a frame again.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::helpers::generated;
use sidecar_bpf::{MAX_H2_FRAME, MAX_PIECE_BYTES, MAX_PIECES, Piece, SOCKET_H2, SOCKET_H2_KNOWN};

/// Buffers (iovecs) of one syscall followed by a walk: nginx gathers up to 64 per write.
pub(super) const MAX_REGIONS: usize = 64;
/// Steps of a walk in a bounded loop: each moves to the next buffer, reads a frame header, or
/// copies the rest of a payload from one buffer. The verifier checks every step of such a loop,
/// so it cannot be long.
pub(super) const MAX_STEPS: u32 = 64;
/// `steps` for [`walk`]: run it under the `bpf_loop` helper (Linux 5.17+), whose callback the
/// verifier checks once, for up to [`LOOP_STEPS`] steps.
pub(super) const LOOP_HELPER: u32 = u32::MAX;
/// Steps of a walk under `bpf_loop`: an nginx write of responses (HEADERS and DATA, header and
/// payload in buffers of their own) takes about seven per response.
const LOOP_STEPS: u32 = 1024;
const FRAME_HEADER: u64 = 9;
const DATA: u8 = 0;

/// The user memory a syscall moved: (base, length) pairs, and how many bytes it moved in all.
/// Kept in a per-CPU map: the largest list is more than the BPF stack holds.
#[repr(C)]
pub(super) struct Regions {
    pub vecs: [u64; 2 * MAX_REGIONS],
    pub count: usize,
    pub total: u64,
    /// Bytes at the start a walk copies before it looks for frames (the client preface).
    pub lead: u64,
}

/// The bytes a walk reads: buffers, each at a location the source knows how to read from.
pub(super) trait Source {
    /// Bytes in all.
    fn total(&self) -> u64;
    /// Bytes at the start a walk copies before it looks for a frame header (the client preface,
    /// or the rest of a frame begun before).
    fn lead(&self) -> u64;
    /// The first bytes of a frame header begun before (at most 8), which the walk completes
    /// from the first bytes here: their count and the bytes.
    fn split(&self) -> (u64, [u8; 8]);
    /// Buffers in use.
    fn count(&self) -> usize;
    /// Buffer `index` (below [`MAX_REGIONS`]): its location and length.
    fn buffer(&self, index: usize) -> Option<(u64, u64)>;
    /// Copies `len` bytes (1 to MAX_PIECE_BYTES) from location `at` of a buffer to `dst`; false
    /// if the read failed.
    fn read(&self, dst: *mut u8, len: u32, at: u64) -> bool;
}

impl Source for Regions {
    #[inline(always)]
    fn total(&self) -> u64 {
        self.total
    }

    #[inline(always)]
    fn lead(&self) -> u64 {
        self.lead
    }

    #[inline(always)]
    fn split(&self) -> (u64, [u8; 8]) {
        (0, [0; 8])
    }

    #[inline(always)]
    fn count(&self) -> usize {
        self.count
    }

    #[inline(always)]
    fn buffer(&self, index: usize) -> Option<(u64, u64)> {
        // Bounded by a mask rather than a comparison, which the compiler would merge with the
        // caller's on `pieces` into a test of both at once that leaves the verifier with neither
        // bounded.
        let slot = 2 * (index & (MAX_REGIONS - 1));
        Some((*self.vecs.get(slot)?, *self.vecs.get(slot + 1)?))
    }

    #[inline(always)]
    fn read(&self, dst: *mut u8, len: u32, at: u64) -> bool {
        // SAFETY: the caller bounds `dst` and `len` inside its scratch slot; user memory is read
        // through the checked helper.
        unsafe {
            generated::bpf_probe_read_user(dst.cast::<c_void>(), len, at as *const c_void) == 0
        }
    }
}

/// Where a walk ended.
pub(super) struct Walk {
    /// Bytes of `PiecesEvent::data` used.
    pub captured: u32,
    pub pieces: u32,
    /// The position is still known at the end (a plain flag and count, not an `Option`: the
    /// verifier rejects the undefined payload of a `None` moved through registers).
    pub known: bool,
    /// Bytes of the next syscall (or skb) that belong to the last frame, when `known`.
    pub skip: u32,
    /// Those bytes are the rest of a frame whose payload is copied (not DATA).
    pub copy: bool,
    /// Bytes of a frame header the walk ended inside, gathered in `split_bytes` (0: none). The
    /// position is then not `known`: a syscall's walk forgets it, an skb's carries it on.
    pub split: u32,
    pub split_bytes: [u8; 8],
}

impl Walk {
    /// Whether the walk is taken for a stream of the socket or session whose `flags` and
    /// `h2_skip` these are (direction `dir`), which it updates: on one known to speak HTTP/2 any
    /// frame counts; otherwise only a walk that accounts for every byte, over several frames.
    #[inline(always)]
    pub(super) fn settle(&self, flags: &mut u32, h2_skip: &mut [u32; 2], dir: usize) -> bool {
        let known = SOCKET_H2_KNOWN << dir;
        let accepted = if *flags & SOCKET_H2 != 0 {
            self.pieces > 0 || self.known
        } else {
            self.known && self.pieces >= 2
        };
        if !accepted {
            return false;
        }
        if self.known {
            *flags |= SOCKET_H2 | known;
            h2_skip[dir & 1] = self.skip;
        } else {
            *flags &= !known;
        }
        true
    }
}

/// A frame header as the walk reads it.
struct Header {
    len: u32,
    kind: u8,
}

/// Whether 9 bytes look like an HTTP/2 frame header: a known type, a length the protocol's
/// default frame size allows, the reserved bit clear and a stream id the type permits.
fn header(bytes: &[u8; 16]) -> Option<Header> {
    let len = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
    let kind = bytes[3];
    let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    if len > MAX_H2_FRAME || stream & 0x8000_0000 != 0 || kind > 9 {
        return None;
    }
    let ok = match kind {
        // DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION: on a stream.
        0 | 1 | 2 | 3 | 5 | 9 => stream != 0,
        // SETTINGS (whole settings), PING (8 bytes), GOAWAY: on the connection.
        4 => stream == 0 && len % 6 == 0,
        6 => stream == 0 && len == 8,
        7 => stream == 0 && len >= 8,
        // WINDOW_UPDATE: either.
        _ => len == 4,
    };
    ok.then_some(Header { len, kind })
}

/// Copies `len` bytes at location `src` of `source` to `data[cursor..]`; false if the read
/// failed.
fn copy<S: Source>(source: &S, data: *mut u8, cursor: u32, src: u64, len: u32) -> bool {
    let at = (cursor as usize) & (MAX_PIECE_BYTES - 1);
    // Bounded by a mask, not a comparison: the compiler drops a comparison the caller's checks
    // already imply, and the verifier, which does not see those, needs the bound here. The same
    // value for the lengths callers copy (1 to less than MAX_PIECE_BYTES: a piece header or
    // earlier bytes are always there), written so the verifier also sees that it is not 0.
    let n = (len.wrapping_sub(1) & (MAX_PIECE_BYTES as u32 - 1)) + 1;
    // SAFETY: `at` is below MAX_PIECE_BYTES and `n` at most that; the scratch slot has
    // MAX_PIECE_BYTES bytes of slack behind `data` for the verifier's worst case.
    source.read(unsafe { data.add(at) }, n, src)
}

/// The walk's position, kept in the scratch map rather than in registers: read back each step
/// as unknown values, every step looks the same to the verifier, which then checks one instead of
/// every path through all of them (in registers, the walk exceeded the verifier's million
/// instructions).
#[repr(C)]
#[derive(Default)]
pub(super) struct Cursor {
    /// Offset of the next frame header's next byte to read (its first, unless `hdr_have`).
    pos: u64,
    /// Bytes `copy_from..copy_to` of the last frame's payload are still to copy: it went on in
    /// the next buffer.
    copy_from: u64,
    copy_to: u64,
    region: u64,
    region_start: u64,
    /// Bytes of the event's data used.
    used: u64,
    pieces: u64,
    /// Where in the syscall the last piece ends, and where in the data its [`Piece`] is: bytes
    /// that follow it extend it.
    last_end: u64,
    last_header: u64,
    /// 0 once the position is lost.
    known: u64,
    /// Bytes of the frame header before `pos` gathered so far, when it is split across buffers
    /// (grpcio's writes split them often), and those bytes.
    hdr_have: u64,
    hdr: [u8; 32],
}

macro_rules! get {
    ($cursor:ident . $field:ident) => {
        // SAFETY: a field of the scratch slot this program owns while it runs.
        unsafe { core::ptr::read_volatile(&raw const (*$cursor).$field) }
    };
}
macro_rules! set {
    ($cursor:ident . $field:ident = $value:expr) => {
        // SAFETY: as for `get!`.
        unsafe { core::ptr::write_volatile(&raw mut (*$cursor).$field, $value) }
    };
}

/// What one step of the walk did.
#[derive(PartialEq, Eq)]
enum Step {
    Continue,
    Done,
}

/// The data of a pieced record (`PiecesEvent::data`, `TlsDataEvent::data`): pieces, each its
/// [`Piece`] header then its bytes.
pub(super) type PieceData = [u8; MAX_PIECE_BYTES];

/// Walks the frames of `source` from byte `start` (a frame header, after its lead and split
/// header), in at most `steps` steps; fills the pieces of `event`. Inlined into each caller:
/// with its result pointer it takes more arguments than a BPF call can pass in registers.
#[inline(always)]
pub(super) fn walk<S: Source>(
    source: &S,
    start: u64,
    event: &mut PieceData,
    cursor: *mut Cursor,
    steps: u32,
) -> Walk {
    let total = source.total();
    let (split, split_bytes) = source.split();
    set!(cursor.pos = start);
    // The lead is copied as the rest of a frame's payload is: across buffers, in steps.
    set!(cursor.copy_from = 0);
    set!(cursor.copy_to = source.lead());
    set!(cursor.region = 0);
    set!(cursor.region_start = 0);
    set!(cursor.used = 0);
    set!(cursor.pieces = 0);
    set!(cursor.last_end = u64::MAX);
    set!(cursor.last_header = 0);
    set!(cursor.known = 1);
    set!(cursor.hdr_have = split);
    // SAFETY: the first 8 bytes of the cursor's header buffer, in the scratch slot.
    unsafe { core::ptr::write_volatile((&raw mut (*cursor).hdr).cast::<[u8; 8]>(), split_bytes) };
    if steps == LOOP_HELPER {
        let mut walking = Walking {
            source,
            event,
            cursor,
        };
        // SAFETY: the callback is a function of this object taking (index, context), as the
        // helper requires; the context is a live local it only reads through.
        unsafe {
            generated::bpf_loop(
                LOOP_STEPS,
                walk_step::<S> as *mut c_void,
                (&raw mut walking).cast::<c_void>(),
                0,
            );
        }
    } else {
        for _ in 0..steps.min(MAX_STEPS) {
            if step(source, event, cursor) == Step::Done {
                break;
            }
        }
    }
    let pos = get!(cursor.pos);
    let have = get!(cursor.hdr_have);
    let going = get!(cursor.known) != 0 && pos >= total;
    let known = going && have == 0;
    let (copy_from, copy_to) = (get!(cursor.copy_from), get!(cursor.copy_to));
    let split = if going { have as u32 } else { 0 };
    // SAFETY: as above.
    let split_bytes =
        unsafe { core::ptr::read_volatile((&raw const (*cursor).hdr).cast::<[u8; 8]>()) };
    Walk {
        captured: get!(cursor.used) as u32,
        pieces: get!(cursor.pieces) as u32,
        known,
        skip: if known { (pos - total) as u32 } else { 0 },
        copy: known && copy_from < copy_to && copy_to == pos,
        split,
        split_bytes,
    }
}

/// What [`walk_step`] needs, handed to `bpf_loop` as its context.
struct Walking<'a, S> {
    source: &'a S,
    event: &'a mut PieceData,
    cursor: *mut Cursor,
}

/// One step of a walk under `bpf_loop`, which the verifier checks once whatever the count: 0 to
/// go on, 1 to stop.
#[inline(never)]
extern "C" fn walk_step<S: Source>(_index: u64, context: *mut c_void) -> i64 {
    // SAFETY: `walk` hands over its `Walking` local, live for the whole loop.
    let walking = unsafe { &mut *context.cast::<Walking<'_, S>>() };
    match step(walking.source, walking.event, walking.cursor) {
        Step::Continue => 0,
        Step::Done => 1,
    }
}

fn lost(cursor: *mut Cursor) -> Step {
    set!(cursor.known = 0);
    Step::Done
}

fn step<S: Source>(source: &S, event: &mut PieceData, cursor: *mut Cursor) -> Step {
    let total = source.total();
    let pos = get!(cursor.pos);
    let (copy_from, copy_to) = (get!(cursor.copy_from), get!(cursor.copy_to));
    let copying = copy_from < copy_to && copy_from < total;
    let have = get!(cursor.hdr_have);
    let at = if copying { copy_from } else { pos };
    if at >= total {
        return Step::Done;
    }
    let region = get!(cursor.region) as usize;
    let pieces = get!(cursor.pieces) as usize;
    // The source has at most MAX_REGIONS buffers and bounds the index itself.
    if region >= source.count() || pieces >= MAX_PIECES {
        return lost(cursor);
    }
    let region_start = get!(cursor.region_start);
    let Some((base, size)) = source.buffer(region) else {
        return lost(cursor);
    };
    if region_start > total {
        return lost(cursor);
    }
    let len = size.min(total - region_start);
    if at >= region_start + len {
        set!(cursor.region_start = region_start + len);
        set!(cursor.region = region as u64 + 1);
        return Step::Continue;
    }
    let within = at - region_start;
    if copying {
        // The rest of a payload, from this buffer.
        let mut want = copy_to - copy_from;
        if want > len - within {
            want = len - within;
        }
        if !add_piece(source, event, cursor, pieces, at, base + within, want) {
            return lost(cursor);
        }
        set!(cursor.copy_from = copy_from + want);
        return Step::Continue;
    }
    if have > 0 || within + FRAME_HEADER > len {
        return gather_header(
            source,
            event,
            cursor,
            pieces,
            at,
            have,
            base + within,
            len - within,
        );
    }
    let mut bytes = [0u8; 16];
    let read = source.read(bytes.as_mut_ptr(), FRAME_HEADER as u32, base + within);
    let Some(frame) = (if read { header(&bytes) } else { None }) else {
        return lost(cursor);
    };
    let end = FRAME_HEADER + u64::from(frame.len);
    let mut want = if frame.kind == DATA {
        FRAME_HEADER
    } else {
        end
    };
    if want > len - within {
        want = len - within;
    }
    if !add_piece(source, event, cursor, pieces, pos, base + within, want) {
        return lost(cursor);
    }
    if frame.kind != DATA {
        set!(cursor.copy_from = pos + want);
        set!(cursor.copy_to = pos + end);
    }
    set!(cursor.pos = pos + end);
    Step::Continue
}

/// Part of a frame header split across buffers (or skbs), `have` bytes of it gathered: the
/// `avail` bytes at location `src` (offset `at`) up to the header's end are captured and kept;
/// once all nine are there, the frame is taken as [`step`] takes one read at once (its payload
/// copied unless it is DATA).
#[allow(
    clippy::too_many_arguments,
    reason = "inlined into `step`, whose locals these are"
)]
#[inline(always)]
fn gather_header<S: Source>(
    source: &S,
    event: &mut PieceData,
    cursor: *mut Cursor,
    pieces: usize,
    at: u64,
    have: u64,
    src: u64,
    avail: u64,
) -> Step {
    if have >= FRAME_HEADER {
        return lost(cursor);
    }
    let mut n = FRAME_HEADER - have;
    if n > avail {
        n = avail;
    }
    // SAFETY: `have` < 9 and `n` in 1..=9, masked for the verifier (as in `copy`): at most 31
    // bytes into the cursor's 32-byte buffer of the scratch slot.
    let dst = unsafe {
        (&raw mut (*cursor).hdr)
            .cast::<u8>()
            .add((have & 15) as usize)
    };
    if !source.read(dst, ((n.wrapping_sub(1) & 15) + 1) as u32, src)
        || !add_piece(source, event, cursor, pieces, at, src, n)
    {
        return lost(cursor);
    }
    // The header's end; the frame began `have` bytes before `at`.
    let payload = at + n;
    set!(cursor.pos = payload);
    if have + n < FRAME_HEADER {
        set!(cursor.hdr_have = have + n);
        return Step::Continue;
    }
    set!(cursor.hdr_have = 0);
    let gathered = get!(cursor.hdr);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&gathered[..16]);
    let Some(frame) = header(&bytes) else {
        return lost(cursor);
    };
    let end = payload + u64::from(frame.len);
    if frame.kind != DATA {
        set!(cursor.copy_from = payload);
        set!(cursor.copy_to = end);
    }
    set!(cursor.pos = end);
    Step::Continue
}

/// Copies the `len` bytes at `offset` of the source (location `src`) into the event's
/// data: as a longer last piece when they follow it (frames back to back, or a header and its
/// payload in buffers of their own), else as a new piece with its [`Piece`] header, so that
/// pieces break only where a DATA payload is left out. False when the data is full.
#[allow(
    clippy::too_many_arguments,
    reason = "inlined into `step`, whose locals these are"
)]
#[inline(always)]
fn add_piece<S: Source>(
    source: &S,
    event: &mut PieceData,
    cursor: *mut Cursor,
    index: usize,
    offset: u64,
    src: u64,
    len: u64,
) -> bool {
    let used = get!(cursor.used);
    let extends = get!(cursor.last_end) == offset;
    let header = if extends { 0 } else { PIECE_HEADER };
    if used > MAX_PIECE_BYTES as u64 || header + len > MAX_PIECE_BYTES as u64 - used {
        return false;
    }
    let data = event.as_mut_ptr();
    if !copy(source, data, (used + header) as u32, src, len as u32) {
        return false;
    }
    let (at, piece) = if extends {
        let at = get!(cursor.last_header);
        let mut last = read_piece(data, at);
        last.len += len as u32;
        (at, last)
    } else {
        set!(cursor.pieces = index as u64 + 1);
        set!(cursor.last_header = used);
        let piece = Piece {
            offset: offset as u32,
            len: len as u32,
        };
        (used, piece)
    };
    // SAFETY: `at` is masked below the data's size, which the scratch slot's slack covers by
    // far; `Piece` is plain integers, written unaligned.
    unsafe {
        core::ptr::write_unaligned(
            data.add((at as usize) & (MAX_PIECE_BYTES - 1))
                .cast::<Piece>(),
            piece,
        );
    }
    set!(cursor.used = used + header + len);
    set!(cursor.last_end = offset + len);
    true
}

/// Bytes of a [`Piece`] header in the event's data.
const PIECE_HEADER: u64 = size_of::<Piece>() as u64;

/// The header of the piece at `at`, as written.
fn read_piece(data: *mut u8, at: u64) -> Piece {
    // SAFETY: as in `add_piece`: a masked offset inside the scratch slot, read unaligned.
    unsafe {
        core::ptr::read_unaligned(
            data.add((at as usize) & (MAX_PIECE_BYTES - 1))
                .cast::<Piece>(),
        )
    }
}

/// Bytes of the HTTP/2 client connection preface.
pub(super) const PREFACE_LEN: u64 = 24;

/// Whether a copy starts with the HTTP/2 client connection preface.
pub(super) fn is_preface(bytes: &[u8]) -> bool {
    bytes.get(..24) == Some(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice())
}
