//! One direction of a TCP connection put back in order from the segments a packet-level capture
//! saw (the pod-scoped mode), as the [`Chunk`]s the protocol parsers read. Pure and sans-IO:
//! segments go in, in the order they arrived, and chunks come out in stream order.
//!
//! - Bytes already delivered (retransmissions, overlapping segments, keepalive probes) are
//!   trimmed: no byte is ever delivered twice.
//! - A segment ahead of the next expected byte is held, copied, until the hole before it fills.
//!   Held segments are bounded in bytes and in count, and in time through [`Reassembler::expire`];
//!   past a bound the hole is given up and delivered as a gap: a chunk with nothing visible and
//!   `unseen` the hole's length.
//! - A segment's payload beyond the capture's copy is delivered as `unseen`. A segment captured
//!   as pieces (HTTP/2 frames the kernel found through the whole skb) is delivered as one chunk
//!   per piece, each with the uncaptured bytes up to the next as `unseen`: those are known to
//!   be missing, not a hole to wait for, and every captured byte lands at its stream position.
//! - Sequence numbers are 32-bit and wrap; positions are kept as 64-bit stream offsets, and a
//!   segment is placed by its distance from the next expected number (TCP windows stay well
//!   below 2^31, so the signed distance is unambiguous).
//! - Without [`Reassembler::starting_at`] the first segment seen starts the stream, wherever it
//!   is in the connection (the capture joined mid-stream).
//! - A chunk is `at_boundary` when it starts where its segment starts (not after a trimmed
//!   overlap, and never for a gap): a sender's write begins at a segment, so a parser that lost
//!   its place after a gap looks for a message there.

use std::collections::BTreeMap;

use super::stream::{self, Chunk};
use crate::capture::events::Payload;

/// Bounds on what a direction holds while it waits for a hole to fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Captured bytes held (the payload beyond the capture's copy takes no memory).
    pub max_held_bytes: usize,
    /// Segments held.
    pub max_held_segments: usize,
    /// How long the oldest held segment waits before [`Reassembler::expire`] gives up the hole.
    pub max_hold_ns: u64,
}

impl Default for Limits {
    /// 64 segments or 64 KiB: a retransmission on a real network comes after an RTO of at least
    /// 200 ms, by which time a fast sender has gone on; waiting longer for one hole costs memory
    /// and delays every later request of the connection.
    fn default() -> Self {
        Self {
            max_held_bytes: 64 * 1024,
            max_held_segments: 64,
            max_hold_ns: 500_000_000,
        }
    }
}

/// A segment as the capture saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Sequence number of the first payload byte.
    pub seq: u32,
    /// What the capture copied of the payload: its leading bytes, or pieces at offsets in it.
    pub captured: Payload<'a>,
    /// Payload bytes of the segment, captured or not.
    pub len: u32,
    /// When the capture saw it (`CLOCK_MONOTONIC` nanoseconds).
    pub timestamp_ns: u64,
    /// The thread that sent it, when the capture knows it.
    pub tid: Option<u32>,
}

/// Counters of what the reassembly had to fix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes delivered, in chunks with or without visible bytes (gaps included).
    pub delivered: u64,
    /// Bytes received again after delivery (or twice while held), trimmed.
    pub duplicate: u64,
    /// Segments that arrived ahead of a hole and were held.
    pub held: u64,
    /// Holes given up, and the bytes they covered.
    pub gaps: u64,
    pub gap_bytes: u64,
}

/// A held segment: its end offset and its captured bytes, back to back in `data`, with the
/// offset in the segment and the length of each run of them.
#[derive(Debug)]
struct Held {
    end: u64,
    data: Vec<u8>,
    runs: Vec<(u64, usize)>,
    timestamp_ns: u64,
    tid: Option<u32>,
}

impl Held {
    /// Each run of captured bytes: its offset in the segment, and its bytes.
    fn ranges(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut rest = self.data.as_slice();
        self.runs.iter().map(move |&(offset, len)| {
            let (bytes, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            (offset, bytes)
        })
    }
}

/// Reassembly state of one direction of one connection.
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    /// The sequence number and stream offset of the next byte to deliver; no sequence number
    /// before the first segment (or [`Reassembler::starting_at`]).
    next_seq: Option<u32>,
    next: u64,
    /// Segments ahead of `next`, by start offset.
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// Timestamp of the latest segment, for gaps found at the end.
    last_ns: u64,
    stats: Stats,
}

impl Reassembler {
    /// A direction whose stream starts at the first segment seen.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            next_seq: None,
            next: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            last_ns: 0,
            stats: Stats::default(),
        }
    }

    /// A direction whose first payload byte is known to have sequence number `seq` (from the
    /// handshake): a first segment that goes missing is then a gap, not a silent new start.
    pub fn starting_at(seq: u32, limits: Limits) -> Self {
        Self {
            next_seq: Some(seq),
            ..Self::new(limits)
        }
    }

    /// The sequence number of the next byte to deliver, once known.
    pub fn next_seq(&self) -> Option<u32> {
        self.next_seq
    }

    /// Bytes of the stream delivered so far (gaps included).
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Captured bytes held for out-of-order segments.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Feeds one segment, in arrival order; chunks now in order go to `out`.
    pub fn push(&mut self, segment: Segment<'_>, out: &mut impl FnMut(Chunk<'_>)) {
        if segment.len == 0 {
            return;
        }
        self.last_ns = self.last_ns.max(segment.timestamp_ns);
        let len = u64::from(segment.len);
        let next_seq = *self.next_seq.get_or_insert(segment.seq);
        let distance = i64::from(segment.seq.wrapping_sub(next_seq) as i32);
        let Some(start) = self.next.checked_add_signed(distance) else {
            // Before the stream's first byte: data from before the capture began.
            self.stats.duplicate += len;
            return;
        };
        let end = start + len;
        if end <= self.next {
            self.stats.duplicate += len;
            return;
        }
        if start <= self.next {
            let ranges = segment.captured.ranges();
            self.deliver(start, end, ranges, segment.timestamp_ns, segment.tid, out);
            self.drain(out);
            return;
        }
        self.hold(
            start,
            end,
            segment.captured,
            segment.timestamp_ns,
            segment.tid,
        );
        while self.held_bytes > self.limits.max_held_bytes
            || self.held.len() > self.limits.max_held_segments
        {
            self.give_up_hole(out);
        }
    }

    /// Gives up holes whose first held segment has waited longer than the limit at `now_ns`.
    pub fn expire(&mut self, now_ns: u64, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(oldest) = self.held.values().map(|h| h.timestamp_ns).min() {
            if now_ns.saturating_sub(oldest) < self.limits.max_hold_ns {
                break;
            }
            self.give_up_hole(out);
        }
    }

    /// The direction ended (FIN, RST or close): delivers everything held, holes as gaps, and a
    /// last gap up to `end_seq` (the sequence number after the last payload byte, e.g. a FIN's
    /// own number) when it is known and ahead.
    pub fn finish(&mut self, end_seq: Option<u32>, out: &mut impl FnMut(Chunk<'_>)) {
        while !self.held.is_empty() {
            self.give_up_hole(out);
        }
        let (Some(end_seq), Some(next_seq)) = (end_seq, self.next_seq) else {
            return;
        };
        let missing = end_seq.wrapping_sub(next_seq) as i32;
        if missing > 0 {
            self.gap(u64::from(missing.unsigned_abs()), self.last_ns, out);
        }
    }

    /// Delivers `[start, end)` from `next` on (`start <= next < end`), whose captured bytes are
    /// `ranges` (offsets from `start`).
    fn deliver<'b>(
        &mut self,
        start: u64,
        end: u64,
        ranges: impl Iterator<Item = (u64, &'b [u8])>,
        timestamp_ns: u64,
        tid: Option<u32>,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        let cut = self.next - start;
        self.stats.duplicate += cut;
        let like = Chunk {
            visible: &[],
            unseen: 0,
            at_boundary: cut == 0,
            timestamp_ns,
            tid,
        };
        stream::cut(ranges, cut, end - start, like, out);
        self.advance(end - self.next);
    }

    /// Delivers the held segments that now start at or before `next`.
    fn drain(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(entry) = self.held.first_entry() {
            let start = *entry.key();
            if start > self.next {
                break;
            }
            let held = entry.remove();
            self.held_bytes -= held.data.len();
            if held.end <= self.next {
                self.stats.duplicate += held.end - start;
                continue;
            }
            self.deliver(
                start,
                held.end,
                held.ranges(),
                held.timestamp_ns,
                held.tid,
                out,
            );
        }
    }

    fn hold(
        &mut self,
        start: u64,
        end: u64,
        captured: Payload<'_>,
        timestamp_ns: u64,
        tid: Option<u32>,
    ) {
        // One segment never takes more than the whole budget; the rest of it counts as unseen.
        let mut data = Vec::new();
        let mut runs = Vec::new();
        for (offset, bytes) in captured.ranges() {
            let within = usize::try_from((end - start).saturating_sub(offset)).unwrap_or(0);
            let room = self.limits.max_held_bytes.saturating_sub(data.len());
            let bytes = &bytes[..bytes.len().min(room).min(within)];
            if bytes.is_empty() {
                continue;
            }
            data.extend_from_slice(bytes);
            runs.push((offset, bytes.len()));
        }
        if let Some(existing) = self.held.get(&start) {
            // The same start twice (a retransmission of a held segment): keep the longer one.
            if (existing.end, existing.data.len()) >= (end, data.len()) {
                self.stats.duplicate += end - start;
                return;
            }
            self.stats.duplicate += existing.end - start;
            self.held_bytes -= existing.data.len();
        }
        self.stats.held += 1;
        self.held_bytes += data.len();
        self.held.insert(
            start,
            Held {
                end,
                data,
                runs,
                timestamp_ns,
                tid,
            },
        );
    }

    /// Delivers the hole before the first held segment as a gap, then what follows it.
    fn give_up_hole(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        let Some((&start, held)) = self.held.first_key_value() else {
            return;
        };
        if start > self.next {
            let timestamp_ns = held.timestamp_ns;
            self.gap(start - self.next, timestamp_ns, out);
        }
        self.drain(out);
    }

    fn gap(&mut self, len: u64, timestamp_ns: u64, out: &mut impl FnMut(Chunk<'_>)) {
        self.stats.gaps += 1;
        self.stats.gap_bytes += len;
        out(Chunk {
            visible: &[],
            unseen: len,
            at_boundary: false,
            timestamp_ns,
            tid: None,
        });
        self.advance(len);
    }

    fn advance(&mut self, len: u64) {
        self.next += len;
        self.stats.delivered += len;
        if let Some(seq) = self.next_seq.as_mut() {
            // Sequence numbers count modulo 2^32.
            *seq = seq.wrapping_add(len as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

    use super::*;
    use crate::capture::events::Pieces;

    /// A delivered chunk, owned: (visible, unseen, at_boundary).
    type Out = (Vec<u8>, u64, bool);

    fn seg(seq: u32, bytes: &[u8]) -> Segment<'_> {
        Segment {
            seq,
            captured: Payload::Prefix(bytes),
            len: bytes.len() as u32,
            timestamp_ns: 0,
            tid: None,
        }
    }

    /// Feeds `segments`, then finishes with `end`; returns every chunk.
    fn run(r: &mut Reassembler, segments: &[Segment<'_>], end: Option<u32>) -> Vec<Out> {
        let mut out = Vec::new();
        let mut sink = |c: Chunk<'_>| out.push((c.visible.to_vec(), c.unseen, c.at_boundary));
        for s in segments {
            r.push(*s, &mut sink);
        }
        r.finish(end, &mut sink);
        out
    }

    fn chunk(visible: &[u8], unseen: u64, at_boundary: bool) -> Out {
        (visible.to_vec(), unseen, at_boundary)
    }

    #[test]
    fn table() {
        let big = Limits::default();
        let tight = Limits {
            max_held_bytes: 4,
            max_held_segments: 2,
            max_hold_ns: 1,
        };
        let partial = Segment {
            seq: 1003,
            captured: Payload::Prefix(b"defg"),
            len: 10,
            timestamp_ns: 0,
            tid: Some(9),
        };
        // (name, start, limits, segments, end, chunks)
        type Case<'a> = (
            &'a str,
            Option<u32>,
            Limits,
            Vec<Segment<'a>>,
            Option<u32>,
            Vec<Out>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "in order",
                None,
                big,
                vec![seg(1000, b"abc"), seg(1003, b"def")],
                None,
                vec![chunk(b"abc", 0, true), chunk(b"def", 0, true)],
            ),
            (
                "duplicate dropped",
                None,
                big,
                vec![seg(1000, b"abc"), seg(1000, b"abc"), seg(1003, b"d")],
                None,
                vec![chunk(b"abc", 0, true), chunk(b"d", 0, true)],
            ),
            (
                "overlap trimmed",
                None,
                big,
                vec![seg(1000, b"abc"), seg(1001, b"bcde")],
                None,
                vec![chunk(b"abc", 0, true), chunk(b"de", 0, false)],
            ),
            (
                "reordered",
                None,
                big,
                vec![seg(1000, b"ab"), seg(1004, b"ef"), seg(1002, b"cd")],
                None,
                vec![
                    chunk(b"ab", 0, true),
                    chunk(b"cd", 0, true),
                    chunk(b"ef", 0, true),
                ],
            ),
            (
                "held overlaps trimmed on delivery",
                None,
                big,
                vec![
                    seg(1000, b"a"),
                    seg(1003, b"def"),
                    seg(1002, b"cdefg"),
                    seg(1001, b"b"),
                ],
                None,
                vec![
                    chunk(b"a", 0, true),
                    chunk(b"b", 0, true),
                    chunk(b"cdefg", 0, true),
                ],
            ),
            (
                "copy bound is unseen",
                None,
                big,
                vec![seg(1000, b"abc"), partial, seg(1013, b"n")],
                None,
                vec![
                    chunk(b"abc", 0, true),
                    chunk(b"defg", 6, true),
                    chunk(b"n", 0, true),
                ],
            ),
            (
                "hole given up at the count bound",
                None,
                tight,
                vec![
                    seg(1000, b"a"),
                    seg(1003, b"d"),
                    seg(1005, b"f"),
                    seg(1007, b"h"),
                ],
                None,
                vec![
                    chunk(b"a", 0, true),
                    chunk(b"", 2, false),
                    chunk(b"d", 0, true),
                    chunk(b"", 1, false),
                    chunk(b"f", 0, true),
                    chunk(b"", 1, false),
                    chunk(b"h", 0, true),
                ],
            ),
            (
                "hole given up at the byte bound",
                None,
                tight,
                vec![seg(1000, b"a"), seg(1002, b"cdefg")],
                None,
                vec![
                    chunk(b"a", 0, true),
                    chunk(b"", 1, false),
                    chunk(b"cdef", 1, true),
                ],
            ),
            (
                "late filler of a given-up hole is dropped",
                None,
                tight,
                vec![
                    seg(1000, b"a"),
                    seg(1002, b"c"),
                    seg(1003, b"d"),
                    seg(1004, b"e"),
                    seg(1001, b"b"),
                ],
                None,
                vec![
                    chunk(b"a", 0, true),
                    chunk(b"", 1, false),
                    chunk(b"c", 0, true),
                    chunk(b"d", 0, true),
                    chunk(b"e", 0, true),
                ],
            ),
            (
                "wrap-around",
                None,
                big,
                vec![
                    seg(u32::MAX - 1, b"ab"),
                    seg(2, b"ef"),
                    seg(0, b"cd"),
                    seg(u32::MAX, b"bc"),
                ],
                None,
                vec![
                    chunk(b"ab", 0, true),
                    chunk(b"cd", 0, true),
                    chunk(b"ef", 0, true),
                ],
            ),
            (
                "mid-stream start drops what came before",
                None,
                big,
                vec![seg(5000, b"xy"), seg(4990, b"old"), seg(5002, b"z")],
                None,
                vec![chunk(b"xy", 0, true), chunk(b"z", 0, true)],
            ),
            (
                "known start: a lost first segment is a gap",
                Some(100),
                big,
                vec![seg(103, b"def")],
                None,
                vec![chunk(b"", 3, false), chunk(b"def", 0, true)],
            ),
            (
                "finish: trailing hole to the FIN",
                None,
                big,
                vec![seg(1000, b"ab"), seg(1004, b"e")],
                Some(1008),
                vec![
                    chunk(b"ab", 0, true),
                    chunk(b"", 2, false),
                    chunk(b"e", 0, true),
                    chunk(b"", 3, false),
                ],
            ),
            (
                "empty segments and an end behind are ignored",
                None,
                big,
                vec![seg(1000, b""), seg(1000, b"ab")],
                Some(1001),
                vec![chunk(b"ab", 0, true)],
            ),
        ];
        for (name, start, limits, segments, end, want) in cases {
            let mut r = match start {
                Some(seq) => Reassembler::starting_at(seq, limits),
                None => Reassembler::new(limits),
            };
            assert_eq!(run(&mut r, &segments, end), want, "{name}");
            assert_eq!(r.held_bytes(), 0, "{name}");
        }
    }

    #[test]
    fn pieced_segments_put_each_piece_at_its_offset() {
        let tight = Limits {
            max_held_bytes: 4,
            max_held_segments: 2,
            max_hold_ns: 1,
        };
        // A segment: (seq, len, pieces), or a prefix when len is None.
        type In<'a> = (u32, Option<u32>, &'a [(u32, &'a [u8])]);
        // (name, limits, segments, chunks)
        type Case<'a> = (&'a str, Limits, Vec<In<'a>>, Vec<Out>);
        let cases: Vec<Case<'_>> = vec![
            (
                "uncaptured bytes between pieces are unseen, not a hole",
                Limits::default(),
                vec![
                    (1000, Some(30), &[(0, b"HEAD"), (20, b"DATAHDR")]),
                    (1030, None, &[(0, b"next")]),
                ],
                vec![
                    chunk(b"HEAD", 16, true),
                    chunk(b"DATAHDR", 3, false),
                    chunk(b"next", 0, true),
                ],
            ),
            (
                "bytes before the first piece are a chunk of their own",
                Limits::default(),
                vec![(1000, Some(10), &[(4, b"xy")])],
                vec![chunk(b"", 4, true), chunk(b"xy", 4, false)],
            ),
            (
                "no piece at all: the whole segment unseen",
                Limits::default(),
                vec![(1000, Some(10), &[]), (1010, None, &[(0, b"k")])],
                vec![chunk(b"", 10, true), chunk(b"k", 0, true)],
            ),
            (
                "an overlap trims whole pieces and part of one",
                Limits::default(),
                vec![
                    (1000, None, &[(0, b"abcdef")]),
                    (1002, Some(12), &[(0, b"cd"), (3, b"fgh"), (9, b"lm")]),
                ],
                vec![
                    chunk(b"abcdef", 0, true),
                    chunk(b"gh", 3, false),
                    chunk(b"lm", 1, false),
                ],
            ),
            (
                "a held pieced segment is delivered once its hole fills",
                Limits::default(),
                vec![
                    (1000, None, &[(0, b"ab")]),
                    (1010, Some(8), &[(1, b"x"), (6, b"yz")]),
                    (1002, None, &[(0, b"cdefghij")]),
                ],
                vec![
                    chunk(b"ab", 0, true),
                    chunk(b"cdefghij", 0, true),
                    chunk(b"", 1, true),
                    chunk(b"x", 4, false),
                    chunk(b"yz", 0, false),
                ],
            ),
            (
                "held pieces are cut to the byte budget, the rest unseen",
                tight,
                vec![
                    (1000, None, &[(0, b"a")]),
                    (1002, Some(10), &[(0, b"abc"), (5, b"defg")]),
                ],
                vec![
                    chunk(b"a", 0, true),
                    chunk(b"", 1, false),
                    chunk(b"abc", 2, true),
                    chunk(b"d", 4, false),
                ],
            ),
        ];
        for (name, limits, segments, want) in cases {
            let cuts: Vec<Cut> = segments
                .iter()
                .map(|&(seq, len, pieces)| match len {
                    Some(len) => Cut {
                        seq,
                        captured: raw_pieces(pieces),
                        pieces: Some(pieces.len()),
                        len,
                    },
                    None => Cut {
                        seq,
                        captured: pieces[0].1.to_vec(),
                        pieces: None,
                        len: pieces[0].1.len() as u32,
                    },
                })
                .collect();
            let segments: Vec<Segment<'_>> = cuts.iter().map(Cut::segment).collect();
            let mut r = Reassembler::new(limits);
            assert_eq!(run(&mut r, &segments, None), want, "{name}");
            assert_eq!(r.held_bytes(), 0, "{name}");
        }
    }

    #[test]
    fn expire_gives_up_a_hole_after_the_hold_time() {
        let limits = Limits {
            max_hold_ns: 100,
            ..Limits::default()
        };
        let mut r = Reassembler::new(limits);
        let mut out = Vec::new();
        let mut sink = |c: Chunk<'_>| out.push((c.visible.to_vec(), c.unseen, c.timestamp_ns));
        let at = |seq, bytes, timestamp_ns| Segment {
            timestamp_ns,
            ..seg(seq, bytes)
        };
        r.push(at(10, b"a", 1000), &mut sink);
        r.push(at(12, b"c", 1010), &mut sink);
        r.expire(1050, &mut sink);
        r.expire(1109, &mut sink);
        assert_eq!(r.position(), 1, "held until the limit");
        r.expire(1110, &mut sink);
        assert_eq!(
            out,
            vec![
                (b"a".to_vec(), 0, 1000),
                (Vec::new(), 1, 1010),
                (b"c".to_vec(), 0, 1010)
            ]
        );
        assert_eq!(r.next_seq(), Some(13));
        assert_eq!(
            r.stats(),
            Stats {
                delivered: 3,
                duplicate: 0,
                held: 1,
                gaps: 1,
                gap_bytes: 1
            }
        );
    }

    #[test]
    fn tid_and_timestamp_follow_their_segment() {
        let mut r = Reassembler::new(Limits::default());
        let mut out = Vec::new();
        let mut sink = |c: Chunk<'_>| out.push((c.tid, c.timestamp_ns));
        for (seq, tid, ts) in [(0, 1, 10), (4, 3, 30), (2, 2, 20)] {
            let segment = Segment {
                tid: Some(tid),
                timestamp_ns: ts,
                ..seg(seq, b"xy")
            };
            r.push(segment, &mut sink);
        }
        assert_eq!(out, vec![(Some(1), 10), (Some(2), 20), (Some(3), 30)]);
    }

    /// What a test's capture copies of each segment.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Capture {
        /// Its first bytes, up to this many.
        Prefix(usize),
        /// Runs at random offsets, as pieces.
        Pieces,
    }

    /// A segment of a test: its sequence number, captured bytes (a prefix, or the raw data of
    /// pieces and their count) and length.
    #[derive(Clone)]
    struct Cut {
        seq: u32,
        captured: Vec<u8>,
        pieces: Option<usize>,
        len: u32,
    }

    impl Cut {
        fn segment(&self) -> Segment<'_> {
            let captured = match self.pieces {
                None => Payload::Prefix(&self.captured),
                Some(count) => Payload::Pieces(
                    Pieces::check(&self.captured, count, self.len).expect("well-formed pieces"),
                ),
            };
            Segment {
                seq: self.seq,
                captured,
                len: self.len,
                timestamp_ns: 0,
                tid: None,
            }
        }
    }

    /// The raw data of a pieced record holding `pieces` (offset, bytes).
    fn raw_pieces(pieces: &[(u32, &[u8])]) -> Vec<u8> {
        let mut raw = Vec::new();
        for (offset, bytes) in pieces {
            raw.extend_from_slice(&offset.to_ne_bytes());
            raw.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
            raw.extend_from_slice(bytes);
        }
        raw
    }

    /// Splits `stream` into segments starting at `isn`, each captured as `copy` says.
    fn segments_of(rng: &mut StdRng, stream: &[u8], isn: u32, copy: Capture) -> Vec<Cut> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let len = rng.random_range(1..=1500).min(stream.len() - at);
            let bytes = &stream[at..at + len];
            let (captured, pieces) = match copy {
                Capture::Prefix(n) => (bytes[..len.min(n)].to_vec(), None),
                Capture::Pieces => {
                    let mut runs = Vec::new();
                    let mut from = 0;
                    while from < len && rng.random_bool(0.7) {
                        let start = rng.random_range(from..len);
                        let end = rng.random_range(start..=len.min(start + 40));
                        runs.push((start as u32, &bytes[start..end]));
                        from = end;
                    }
                    (raw_pieces(&runs), Some(runs.len()))
                }
            };
            out.push(Cut {
                seq: isn.wrapping_add(at as u32),
                captured,
                pieces,
                len: len as u32,
            });
            at += len;
        }
        out
    }

    #[test]
    fn permuted_and_duplicated_segments_reassemble_to_the_stream() {
        for seed in 0..300u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let stream: Vec<u8> = (0..rng.random_range(1..30_000))
                .map(|_| rng.random())
                .collect();
            // Some streams start right before the sequence numbers wrap.
            let isn = if seed % 3 == 0 {
                u32::MAX - rng.random_range(0..20_000)
            } else {
                rng.random()
            };
            let copy = match seed % 4 {
                0 | 2 => Capture::Prefix(usize::MAX),
                1 => Capture::Prefix(1024),
                _ => Capture::Pieces,
            };
            let mut arrivals = segments_of(&mut rng, &stream, isn, copy);
            // Retransmissions re-cut differently, and plain duplicates.
            let mut extra = segments_of(&mut rng, &stream, isn, copy);
            extra.retain(|_| rng.random_bool(0.2));
            arrivals.extend(extra);
            for i in 0..arrivals.len() {
                if rng.random_bool(0.1) {
                    arrivals.push(arrivals[i].clone());
                }
            }
            // The first segment goes first so the stream starts at its beginning; the rest
            // in any order.
            arrivals[1..].shuffle(&mut rng);
            let limits = Limits {
                max_held_bytes: usize::MAX,
                max_held_segments: usize::MAX,
                max_hold_ns: u64::MAX,
            };
            let mut r = Reassembler::new(limits);
            let mut rebuilt = Vec::new();
            let mut unseen_total = 0;
            let mut sink = |c: Chunk<'_>| {
                unseen_total += c.unseen;
                let at = rebuilt.len();
                rebuilt.extend_from_slice(c.visible);
                // Bytes not captured: stand in for them with the stream's own, checking only
                // that they are where they should be.
                let unseen = c.unseen as usize;
                rebuilt.extend_from_slice(&stream[at + c.visible.len()..][..unseen]);
            };
            for cut in &arrivals {
                r.push(cut.segment(), &mut sink);
            }
            r.finish(Some(isn.wrapping_add(stream.len() as u32)), &mut sink);
            assert_eq!(rebuilt, stream, "seed {seed}");
            if copy == Capture::Prefix(usize::MAX) {
                assert_eq!(unseen_total, 0, "seed {seed}: everything was captured");
            }
            let stats = r.stats();
            assert_eq!(stats.gaps, 0, "seed {seed}");
            assert_eq!(stats.delivered, stream.len() as u64, "seed {seed}");
            assert_eq!(r.held_bytes(), 0);
        }
    }
}
