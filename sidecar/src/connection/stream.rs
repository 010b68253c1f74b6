//! One direction of a connection as the protocol parsers see it: an ordered sequence of
//! [`Chunk`]s, each some captured bytes followed by a counted run of bytes that were not captured.
//!
//! Every capture mode turns what it sees into chunks: a read or write syscall is one chunk (its
//! captured prefix, then the rest it moved), a TCP segment put back in order is one, a gap in the
//! sequence space (a segment never seen) is a chunk with nothing visible. Parsers never guess
//! across `unseen` bytes: they skip them by count, and resynchronize where a chunk starts at a
//! boundary.

/// A piece of one direction's byte stream, starting where the previous chunk of that direction
/// ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The captured bytes, in stream order.
    pub visible: &'a [u8],
    /// Bytes that follow `visible` in the stream but were not captured: the copy was bounded, or
    /// the bytes were lost.
    pub unseen: u64,
    /// The chunk starts where the application handed bytes to the kernel or took them from it (a
    /// syscall, a TLS record call), or at a segment the sender transmitted as one: a message often
    /// starts here, so this is where a parser that lost its place looks for one.
    pub at_boundary: bool,
    /// `CLOCK_MONOTONIC` nanoseconds when the bytes moved.
    pub timestamp_ns: u64,
    /// The thread that moved the bytes, when the capture knows it.
    pub tid: Option<u32>,
}

impl<'a> Chunk<'a> {
    /// The chunk of one syscall: `total_len` bytes moved, of which `captured` are the first.
    pub fn of_call(captured: &'a [u8], total_len: u64, timestamp_ns: u64, tid: u32) -> Self {
        Self {
            visible: captured,
            unseen: total_len.saturating_sub(captured.len() as u64),
            at_boundary: true,
            timestamp_ns,
            tid: Some(tid),
        }
    }

    /// Bytes the chunk stands for, seen or not.
    pub fn len(&self) -> u64 {
        self.visible.len() as u64 + self.unseen
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts `len` bytes, of which `ranges` were captured (offset and bytes, in increasing offsets,
/// not overlapping), into chunks from offset `from` on: each range starts a chunk whose `unseen`
/// runs to the next range, and bytes before the first range are a chunk with nothing visible.
/// Each chunk is `like` but for its bytes; only the first keeps `like.at_boundary`. At least
/// one chunk goes out, empty if `from` is `len` and nothing was captured.
pub fn cut<'a>(
    ranges: impl IntoIterator<Item = (u64, &'a [u8])>,
    from: u64,
    len: u64,
    like: Chunk<'a>,
    out: &mut impl FnMut(Chunk<'a>),
) {
    let mut chunk = Chunk {
        visible: &[],
        unseen: 0,
        ..like
    };
    let mut at = from;
    let mut emitted = false;
    for (offset, bytes) in ranges {
        let end = offset.saturating_add(bytes.len() as u64).min(len);
        if end <= at {
            continue;
        }
        let begin = offset.max(at);
        chunk.unseen += begin - at;
        if !chunk.is_empty() {
            out(chunk);
            emitted = true;
            chunk.at_boundary = false;
        }
        let skip = usize::try_from(begin - offset).unwrap_or(usize::MAX);
        let take = usize::try_from(end - begin).unwrap_or(0);
        chunk.visible = bytes
            .get(skip..)
            .and_then(|b| b.get(..take))
            .unwrap_or_default();
        chunk.unseen = 0;
        at = end;
    }
    chunk.unseen += len.saturating_sub(at);
    if !chunk.is_empty() || !emitted {
        out(chunk);
    }
}
