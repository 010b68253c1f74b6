//! Fuzzes TCP reassembly: segments cut from one stream, in any order, duplicated, overlapping,
//! with bounded copies or captured as pieces at offsets (as HTTP/2 frames found in the kernel
//! are), and garbage segments anywhere in the sequence space. No input may panic or exceed the
//! held-bytes bound; chunks always tile the stream; and without garbage every visible byte is
//! the stream's own byte at that position.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use obi_sidecar::capture::events::{Payload, Pieces};
use obi_sidecar::connection::reassembly::{Limits, Reassembler, Segment};
use obi_sidecar::connection::stream::Chunk;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Stream bytes `[start, start + len)`, of which the first `copy` are captured.
    Cut { start: u16, len: u16, copy: u16 },
    /// Stream bytes `[start, start + len)`, captured at `runs` (offset in the segment, length;
    /// overlapping ones and those past the end left out).
    Pieced {
        start: u16,
        len: u16,
        runs: Vec<(u16, u8)>,
    },
    /// A segment with arbitrary bytes at an arbitrary sequence number.
    Garbage { seq: u32, len: u16, bytes: Vec<u8> },
    /// Time passes.
    Wait { ns: u16 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    isn: u32,
    known_start: bool,
    ops: Vec<Op>,
    end: Option<u16>,
}

const LIMITS: Limits = Limits {
    max_held_bytes: 4096,
    max_held_segments: 8,
    max_hold_ns: 5_000,
};

/// The stream's byte at `offset`: varied enough that a misplaced byte shows.
fn byte_at(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

fuzz_target!(|input: Input| {
    let mut r = if input.known_start {
        Reassembler::starting_at(input.isn, LIMITS)
    } else {
        Reassembler::new(LIMITS)
    };
    let clean = !input.ops.iter().any(|op| matches!(op, Op::Garbage { .. }));
    // The stream offset the reassembler's position 0 stands for.
    let mut origin: Option<u64> = input.known_start.then_some(0);
    let mut position = 0u64;
    let mut now = 0u64;
    let mut buffer = Vec::new();
    for op in &input.ops {
        let segment = match op {
            Op::Cut { start, len, copy } => {
                let (start, len) = (u64::from(*start), u64::from(*len));
                buffer.clear();
                buffer.extend((start..start + len.min(u64::from(*copy))).map(byte_at));
                if len > 0 {
                    origin.get_or_insert(start);
                }
                Segment {
                    seq: input.isn.wrapping_add(start as u32),
                    captured: Payload::Prefix(&buffer),
                    len: len as u32,
                    timestamp_ns: now,
                    tid: None,
                }
            }
            Op::Pieced { start, len, runs } => {
                let (start, len) = (u64::from(*start), u64::from(*len));
                buffer.clear();
                let (mut end, mut count) = (0u64, 0usize);
                for &(offset, n) in runs {
                    let (offset, n) = (u64::from(offset), u64::from(n));
                    if offset < end || offset + n > len {
                        continue;
                    }
                    buffer.extend_from_slice(&(offset as u32).to_ne_bytes());
                    buffer.extend_from_slice(&(n as u32).to_ne_bytes());
                    buffer.extend((start + offset..start + offset + n).map(byte_at));
                    end = offset + n;
                    count += 1;
                }
                if len > 0 {
                    origin.get_or_insert(start);
                }
                let pieces = Pieces::check(&buffer, count, len as u32);
                assert!(pieces.is_ok(), "well-formed pieces refused: {pieces:?}");
                let Ok(pieces) = pieces else { continue };
                Segment {
                    seq: input.isn.wrapping_add(start as u32),
                    captured: Payload::Pieces(pieces),
                    len: len as u32,
                    timestamp_ns: now,
                    tid: None,
                }
            }
            Op::Garbage { seq, len, bytes } => Segment {
                seq: *seq,
                captured: Payload::Prefix(bytes),
                len: u32::from(*len),
                timestamp_ns: now,
                tid: Some(1),
            },
            Op::Wait { ns } => {
                now += u64::from(*ns);
                r.expire(now, &mut |c| check(c, clean, origin, &mut position));
                continue;
            }
        };
        r.push(segment, &mut |c| check(c, clean, origin, &mut position));
        assert!(r.held_bytes() <= LIMITS.max_held_bytes);
        assert_eq!(r.position(), position);
    }
    let end = input.end.map(|end| input.isn.wrapping_add(u32::from(end)));
    r.finish(end, &mut |c| check(c, clean, origin, &mut position));
    assert_eq!(r.held_bytes(), 0);
    assert_eq!(r.position(), position);
    assert_eq!(r.stats().delivered, position);
});

fn check(chunk: Chunk<'_>, clean: bool, origin: Option<u64>, position: &mut u64) {
    assert!(!chunk.is_empty(), "an empty chunk");
    if clean && let Some(origin) = origin {
        for (i, byte) in chunk.visible.iter().enumerate() {
            assert_eq!(
                *byte,
                byte_at(origin + *position + i as u64),
                "at {}",
                *position
            );
        }
    }
    *position += chunk.len();
}
