//! Fuzzes the HTTP/2 frame reader (and the HPACK decoder behind it): no input may panic, payloads
//! are never longer than their frames say, a stream read in pieces gives the frames it gives read
//! whole, and until the reader loses its place a damaged capture gives the same frames.
//!
//! Input: four control bytes (sender and start state, then a seed for how the stream is cut
//! into chunks), then the stream. `scripts/fuzz.sh` seeds it with the golden captures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obi_sidecar::connection::stream::Chunk;
use obi_sidecar::protocol::http2::frame::{
    Event, Frame, FrameHeader, FrameReader, FrameType, MAX_CARRY, Payload, Sender,
};
use obi_sidecar::protocol::http2::hpack::Decoder;

/// A frame with its payload copied out: header, payload kind, bytes, DATA length.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Frame(FrameHeader, &'static str, Vec<u8>, Option<u32>),
    Other,
}

fn seen(event: Event<'_>) -> Seen {
    let Event::Frame(frame) = event else {
        return Seen::Other;
    };
    check(&frame);
    let (kind, bytes, len) = match frame.payload {
        Payload::Complete(p) => ("complete", p.to_vec(), None),
        Payload::Truncated(p) => ("truncated", p.to_vec(), None),
        Payload::Data { len } => ("data", Vec::new(), len),
        Payload::Malformed => ("malformed", Vec::new(), None),
        Payload::Skipped => ("skipped", Vec::new(), None),
    };
    Seen::Frame(frame.header, kind, bytes, len)
}

/// Payloads fit their frames.
fn check(frame: &Frame<'_>) {
    let length = frame.header.length as usize;
    match frame.payload {
        Payload::Complete(p) => match frame.header.kind {
            FrameType::Headers | FrameType::PushPromise => assert!(p.len() <= length),
            _ => assert_eq!(p.len(), length),
        },
        Payload::Truncated(p) => assert!(p.len() < length),
        Payload::Data { len: Some(len) } => assert!(len <= frame.header.length),
        _ => {}
    }
}

/// A small deterministic generator for the chunk boundaries.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn chunk(visible: &[u8], unseen: u64, at_boundary: bool) -> Chunk<'_> {
    Chunk {
        visible,
        unseen,
        at_boundary,
        timestamp_ns: 0,
        tid: None,
    }
}

fn run(reader: &mut FrameReader, chunks: &[Chunk<'_>]) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut decoder = Decoder::new();
    let mut lost = false;
    for c in chunks {
        reader.feed(c, |event| {
            if let Event::Frame(frame) = event
                && frame.header.kind == FrameType::Headers
            {
                let (block, whole) = match frame.payload {
                    Payload::Complete(b) => (b, true),
                    Payload::Truncated(b) => (b, false),
                    _ => (&[][..], false),
                };
                let _ = decoder.decode(block, whole, |_| {});
            }
            if event == Event::Lost {
                decoder.desync();
            }
            let s = seen(event);
            // Only the frames before the first loss are compared.
            if !lost {
                out.push(s);
            }
            lost |= event == Event::Lost;
        });
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((control, stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let sender = if control[0] & 1 == 0 {
        Sender::Client
    } else {
        Sender::Server
    };
    let start_lost = control[0] & 2 != 0;
    let new_reader = || {
        let mut reader = if start_lost {
            FrameReader::lost(sender)
        } else {
            FrameReader::new(sender)
        };
        if control[0] & 4 != 0 {
            reader.set_max_frame_size(1 << 20);
        }
        reader
    };
    let mut rng = Rng(u64::from(u32::from_le_bytes(*control)));
    let average = 1 + u64::from(control[1]) * 4;

    // Read whole.
    let mut whole_reader = new_reader();
    let whole = run(&mut whole_reader, &[chunk(stream, 0, true)]);
    let total = stream.len() as u64;
    assert!(whole_reader.stats().abandoned_bytes <= total);

    // Read in pieces, everything visible.
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = (1 + rng.below(2 * average) as usize).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        pieces.push(chunk(piece, 0, rng.below(2) == 0));
        rest = tail;
    }
    let mut split_reader = new_reader();
    let split = run(&mut split_reader, &pieces);
    if !start_lost && whole_reader.stats().losses == 0 {
        // The same frames; only one longer than the carry cap can be whole in one chunk and
        // cut when carried over.
        assert_eq!(split.len(), whole.len());
        for (s, w) in split.iter().zip(&whole) {
            match (s, w) {
                (Seen::Frame(sh, "truncated", sp, _), Seen::Frame(wh, "complete", wp, _))
                    if sh.length as usize > MAX_CARRY =>
                {
                    assert_eq!(sh, wh);
                    assert!(sp.len() <= MAX_CARRY && wp.starts_with(sp));
                }
                _ => assert_eq!(s, w),
            }
        }
    }

    // Read in pieces of which some bytes were not captured.
    let mut damaged = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = (1 + rng.below(2 * average) as usize).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        let captured = if rng.below(4) == 0 {
            rng.below(n as u64 + 1) as usize
        } else {
            n
        };
        damaged.push(chunk(
            &piece[..captured],
            (n - captured) as u64,
            rng.below(2) == 0,
        ));
        rest = tail;
    }
    let mut damaged_reader = new_reader();
    let seen_damaged = run(&mut damaged_reader, &damaged);
    assert!(damaged_reader.stats().abandoned_bytes <= total);
    if !start_lost {
        // Until the first loss, a frame is the whole read's frame at the same place, or its
        // visible prefix.
        for (d, w) in seen_damaged.iter().zip(&whole) {
            match (d, w) {
                (Seen::Frame(dh, dk, dp, dl), Seen::Frame(wh, wk, wp, wl)) => {
                    assert_eq!(dh, wh);
                    match (*dk, *wk) {
                        ("truncated", "complete" | "truncated") => assert!(wp.starts_with(dp)),
                        // With the pad length not captured, padding too long goes unnoticed.
                        ("truncated", "malformed") => assert!(dp.is_empty()),
                        ("data", "malformed") => assert!(dl.is_none()),
                        ("data", "data") => assert!(dl.is_none() || dl == wl),
                        _ => assert_eq!((dk, dp), (wk, wp)),
                    }
                }
                (Seen::Other, _) | (_, Seen::Other) => break,
            }
        }
    }
});
