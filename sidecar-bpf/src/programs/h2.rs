//! HTTP/2 frames found in the kernel, beyond the bounded copy: a walk over the frame headers of
//! what a syscall moved, copying each frame but DATA whole and only the header of each DATA
//! frame. A response's trailers or the next stream's HEADERS behind 16 KiB of DATA in one write
//! are then captured, where a 1 KiB prefix would have lost them.
//!
//! The walk needs to know where a frame starts. A syscall of an HTTP/2 socket (its client
//! preface was seen) that starts with a plausible frame header gives it, as does a write too long
//! for the bounded copy whose frames account for every byte; each walk then leaves, per
//! direction, how many bytes of the next syscall still belong to the last frame. A walk that
//! cannot finish (too many frames, a header split across buffers) forgets the position until a
//! later syscall starts with a frame again.

use core::ffi::c_void;

use aya_ebpf::helpers::generated;
use sidecar_bpf::{MAX_H2_FRAME, MAX_PIECE_BYTES, MAX_PIECES, Piece, PiecesEvent};

/// Buffers (iovecs) of one syscall followed by a walk.
pub(super) const MAX_REGIONS: usize = 8;
const FRAME_HEADER: u64 = 9;
const DATA: u8 = 0;

/// The user memory a syscall moved: (base, length) pairs, and how many bytes it moved in all.
pub(super) struct Regions {
    pub vecs: [u64; 2 * MAX_REGIONS],
    pub count: usize,
    pub total: u64,
}

/// Where a walk ended.
pub(super) struct Walk {
    /// Bytes of `PiecesEvent::data` used.
    pub captured: u32,
    pub pieces: u32,
    /// The position is still known at the end (a plain flag and count, not an `Option`: the
    /// verifier rejects the undefined payload of a `None` moved through registers).
    pub known: bool,
    /// Bytes of the next syscall that belong to the last frame, when `known`.
    pub skip: u32,
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

/// Copies `len` bytes of user memory at `src` to `data[cursor..]`; false if the read failed.
fn copy(data: *mut u8, cursor: u32, src: u64, len: u32) -> bool {
    let at = (cursor as usize) & (MAX_PIECE_BYTES - 1);
    let mut n = len;
    if n as usize > MAX_PIECE_BYTES {
        n = MAX_PIECE_BYTES as u32;
    }
    // SAFETY: `at` < MAX_PIECE_BYTES and `n` <= MAX_PIECE_BYTES; the scratch slot has
    // MAX_PIECE_BYTES bytes of slack behind `data` for the verifier's worst case.
    unsafe {
        generated::bpf_probe_read_user(data.add(at).cast::<c_void>(), n, src as *const c_void) == 0
    }
}

/// The walk's position, kept in the scratch map rather than in registers: read back each step
/// as unknown values, every step looks the same to the verifier, which then checks one instead of
/// every path through all of them (in registers, the walk exceeded the verifier's million
/// instructions).
#[repr(C)]
#[derive(Default)]
pub(super) struct Cursor {
    /// Offset in the syscall of the next frame header.
    pos: u64,
    region: u64,
    region_start: u64,
    /// Bytes of the event's data used.
    used: u64,
    pieces: u64,
    /// 0 once the position is lost.
    known: u64,
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

/// Walks the frames of `regions` from byte `start` (a frame header); fills `event`'s pieces and
/// data.
pub(super) fn walk(
    regions: &Regions,
    start: u64,
    event: &mut PiecesEvent,
    cursor: *mut Cursor,
) -> Walk {
    let total = regions.total;
    set!(cursor.pos = start);
    set!(cursor.region = 0);
    set!(cursor.region_start = 0);
    set!(cursor.used = 0);
    set!(cursor.pieces = 0);
    set!(cursor.known = 1);
    // Each step either moves to the next buffer or reads one frame header.
    for _ in 0..(MAX_PIECES + MAX_REGIONS) {
        if step(regions, event, cursor) == Step::Done {
            break;
        }
    }
    let pos = get!(cursor.pos);
    let known = get!(cursor.known) != 0 && pos >= total;
    Walk {
        captured: get!(cursor.used) as u32,
        pieces: get!(cursor.pieces) as u32,
        known,
        skip: if known { (pos - total) as u32 } else { 0 },
    }
}

fn lost(cursor: *mut Cursor) -> Step {
    set!(cursor.known = 0);
    Step::Done
}

fn step(regions: &Regions, event: &mut PiecesEvent, cursor: *mut Cursor) -> Step {
    let total = regions.total;
    let pos = get!(cursor.pos);
    if pos >= total {
        return Step::Done;
    }
    let region = get!(cursor.region) as usize;
    let pieces = get!(cursor.pieces) as usize;
    if region >= regions.count || region >= MAX_REGIONS || pieces >= MAX_PIECES {
        return lost(cursor);
    }
    let region_start = get!(cursor.region_start);
    let (Some(&base), Some(&size)) = (
        regions.vecs.get(2 * region),
        regions.vecs.get(2 * region + 1),
    ) else {
        return lost(cursor);
    };
    if region_start > total {
        return lost(cursor);
    }
    let len = size.min(total - region_start);
    if pos >= region_start + len {
        set!(cursor.region_start = region_start + len);
        set!(cursor.region = region as u64 + 1);
        return Step::Continue;
    }
    let within = pos - region_start;
    if within + FRAME_HEADER > len {
        // A header split across buffers: rare, and not worth a second read path.
        return lost(cursor);
    }
    let mut bytes = [0u8; 16];
    // SAFETY: 9 bytes of user memory into a local of 16 through the checked helper.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            bytes.as_mut_ptr().cast::<c_void>(),
            FRAME_HEADER as u32,
            (base + within) as *const c_void,
        )
    };
    let Some(frame) = (if rc == 0 { header(&bytes) } else { None }) else {
        return lost(cursor);
    };
    let mut want = if frame.kind == DATA {
        FRAME_HEADER
    } else {
        FRAME_HEADER + u64::from(frame.len)
    };
    if want > len - within {
        want = len - within;
    }
    let used = get!(cursor.used);
    if used > MAX_PIECE_BYTES as u64 || want > MAX_PIECE_BYTES as u64 - used {
        return lost(cursor);
    }
    if !copy(
        event.data.as_mut_ptr(),
        used as u32,
        base + within,
        want as u32,
    ) {
        return lost(cursor);
    }
    if let Some(slot) = event.pieces.get_mut(pieces) {
        *slot = Piece {
            offset: pos as u32,
            len: want as u32,
        };
    }
    set!(cursor.pieces = pieces as u64 + 1);
    set!(cursor.used = used + want);
    set!(cursor.pos = pos + FRAME_HEADER + u64::from(frame.len));
    Step::Continue
}

/// Whether a copy starts with the HTTP/2 client connection preface.
pub(super) fn is_preface(bytes: &[u8]) -> bool {
    bytes.get(..24) == Some(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice())
}
