//! Fuzzes the HPACK decoder with real header blocks (from the golden captures), mutated ones and
//! raw bytes: no input may panic, the table stays bounded, and a decoder that joins late, with
//! another table size, never resolves a field differently from one that saw every block.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use obi_sidecar::connection::stream::Chunk;
use obi_sidecar::protocol::http2::frame::{Event, FrameReader, FrameType, Payload, Sender};
use obi_sidecar::protocol::http2::hpack::{Decoder, Field, MAX_TABLE_SIZE};

/// Each direction of each golden capture, with its sender.
const STREAMS: &[(&[u8], Sender)] = &[
    (
        include_bytes!("../../testdata/http2/curl_nginx_get.c2s"),
        Sender::Client,
    ),
    (
        include_bytes!("../../testdata/http2/curl_nginx_get.s2c"),
        Sender::Server,
    ),
    (
        include_bytes!("../../testdata/http2/h2load_nginx.c2s"),
        Sender::Client,
    ),
    (
        include_bytes!("../../testdata/http2/h2load_nginx.s2c"),
        Sender::Server,
    ),
    (
        include_bytes!("../../testdata/http2/grpc_python.c2s"),
        Sender::Client,
    ),
    (
        include_bytes!("../../testdata/http2/grpc_python.s2c"),
        Sender::Server,
    ),
    (
        include_bytes!("../../testdata/http2/node_post.c2s"),
        Sender::Client,
    ),
    (
        include_bytes!("../../testdata/http2/node_post.s2c"),
        Sender::Server,
    ),
];

/// The header blocks of each stream, in order (the captures use no CONTINUATION).
fn real_blocks() -> &'static [Vec<Vec<u8>>] {
    static BLOCKS: OnceLock<Vec<Vec<Vec<u8>>>> = OnceLock::new();
    BLOCKS.get_or_init(|| {
        STREAMS
            .iter()
            .map(|&(bytes, sender)| {
                let mut blocks = Vec::new();
                let mut reader = FrameReader::new(sender);
                let chunk = Chunk {
                    visible: bytes,
                    unseen: 0,
                    at_boundary: true,
                    timestamp_ns: 0,
                    tid: None,
                };
                reader.feed(&chunk, |event| {
                    if let Event::Frame(frame) = event
                        && frame.header.kind == FrameType::Headers
                        && let Payload::Complete(block) = frame.payload
                    {
                        blocks.push(block.to_vec());
                    }
                });
                blocks
            })
            .collect()
    })
}

#[derive(Arbitrary, Debug)]
enum Piece {
    /// The next real block of the chosen stream.
    Real,
    /// A real block with one byte changed.
    Flipped {
        at: u16,
        xor: u8,
    },
    /// A real block cut short (decoded as a truncated block).
    Cut {
        at: u16,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    stream: u8,
    pieces: Vec<Piece>,
    join: u8,
    early_size: u16,
    late_size: u32,
}

type Owned = (Option<Vec<u8>>, Option<Vec<u8>>, bool);

fn owned(field: Field<'_>) -> Owned {
    (
        field.name.map(<[u8]>::to_vec),
        field.value.map(<[u8]>::to_vec),
        field.never_indexed,
    )
}

/// Most entries a table can hold: each costs at least 32 bytes.
const MAX_ENTRIES: usize = MAX_TABLE_SIZE / 32;

fuzz_target!(|input: Input| {
    let all = real_blocks();
    let blocks = &all[usize::from(input.stream) % all.len()];
    let mut next = 0;
    let mut early = Decoder::with_table_size(usize::from(input.early_size));
    let mut late = Decoder::with_table_size(input.late_size as usize);
    for (i, piece) in input.pieces.iter().enumerate() {
        let mut real = || {
            let block = blocks[next % blocks.len()].clone();
            next += 1;
            block
        };
        let (block, whole) = match piece {
            Piece::Real => (real(), true),
            Piece::Flipped { at, xor } => {
                let mut block = real();
                if !block.is_empty() {
                    let at = usize::from(*at) % block.len();
                    block[at] ^= xor;
                }
                (block, true)
            }
            Piece::Cut { at } => {
                let mut block = real();
                block.truncate(usize::from(*at) % (block.len() + 1));
                (block, false)
            }
            Piece::Raw(bytes) => (bytes.clone(), true),
        };
        let mut seen_early = Vec::new();
        let early_ok = early
            .decode(&block, whole, |f| seen_early.push(owned(f)))
            .is_ok();
        assert!(early.known_entries() <= MAX_ENTRIES);
        if i < usize::from(input.join) {
            continue;
        }
        let mut seen_late = Vec::new();
        let late_ok = late
            .decode(&block, whole, |f| seen_late.push(owned(f)))
            .is_ok();
        assert!(late.known_entries() <= MAX_ENTRIES);
        // Validity and field boundaries depend on the bytes alone, never on the table.
        assert_eq!(early_ok, late_ok);
        assert_eq!(seen_early.len(), seen_late.len());
        for (a, b) in seen_early.iter().zip(&seen_late) {
            if let (Some(x), Some(y)) = (&a.0, &b.0) {
                assert_eq!(x, y, "names differ");
            }
            if let (Some(x), Some(y)) = (&a.1, &b.1) {
                assert_eq!(x, y, "values differ");
            }
            assert_eq!(a.2, b.2);
        }
    }
});
