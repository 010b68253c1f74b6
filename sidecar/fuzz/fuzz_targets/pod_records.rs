//! Fuzzes the pod-scoped capture's userspace path: ring buffer records of any bytes decoded as
//! `PodEvent`s and fed through `Segments` (reassembly, attribution) into the connection layer,
//! with time passing between them. Pieced segment records (HTTP/2 frames found in the kernel)
//! are also built well-formed, at nearby sequence numbers of a few sockets, so that their pieces
//! reach the reassembly and the parsers rather than stopping at the decoder. No input may panic,
//! and the connection layer's bounds hold.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use obi_sidecar::capture::events::PodEvent;
use obi_sidecar::connection::segments::{Segments, Sockets};
use obi_sidecar::connection::{Connections, Limits, reassembly};
use sidecar_bpf::{
    EVENT_SEGMENT_PIECES, MAX_PIECE_BYTES, Piece, SEGMENT_PIECES_EVENT_HEADER_LEN, SegmentHeader,
    SegmentPiecesEvent,
};

#[derive(Arbitrary, Debug)]
enum Op {
    /// One ring buffer record.
    Record(Vec<u8>),
    /// A pieced segment record of socket `cookie`, `len` bytes at `seq`, with a piece at each
    /// of `runs` (offset, length; overlapping ones and those past the end left out) cut from
    /// `bytes`.
    Pieced {
        cookie: u8,
        egress: bool,
        seq: u16,
        len: u16,
        tcp_flags: u8,
        runs: Vec<(u16, u8)>,
        bytes: Vec<u8>,
    },
    /// Time passes (ms), then what waited too long is given up.
    Wait(u16),
}

/// The record an [`Op::Pieced`] stands for.
fn pieced_record(
    cookie: u8,
    egress: bool,
    seq: u16,
    len: u16,
    tcp_flags: u8,
    runs: &[(u16, u8)],
    bytes: &[u8],
) -> Vec<u8> {
    let mut data = Vec::new();
    let (mut end, mut count) = (0u32, 0u32);
    for &(offset, n) in runs {
        let (offset, n) = (u32::from(offset), u32::from(n));
        if offset < end
            || offset + n > u32::from(len)
            || data.len() + 8 + n as usize > MAX_PIECE_BYTES
        {
            continue;
        }
        let piece = Piece { offset, len: n };
        data.extend_from_slice(&piece.offset.to_ne_bytes());
        data.extend_from_slice(&piece.len.to_ne_bytes());
        data.extend(
            (0..n as usize).map(|i| bytes.get(i % bytes.len().max(1)).copied().unwrap_or(0)),
        );
        end = offset + n;
        count += 1;
    }
    let header = SegmentHeader {
        kind: EVENT_SEGMENT_PIECES,
        direction: u32::from(egress),
        cookie: u64::from(cookie % 4),
        seq: 1000 + u32::from(seq),
        payload_len: u32::from(len),
        captured_len: data.len() as u32,
        tcp_flags: u32::from(tcp_flags),
        ..SegmentHeader::default()
    };
    let mut event = SegmentPiecesEvent {
        header,
        piece_count: count,
        _pad: 0,
        data: [0; MAX_PIECE_BYTES],
    };
    event.data[..data.len()].copy_from_slice(&data);
    // SAFETY: a plain `#[repr(C)]` ABI struct of integers and bytes, read as its bytes.
    let whole = unsafe {
        std::slice::from_raw_parts(
            (&raw const event).cast::<u8>(),
            std::mem::size_of::<SegmentPiecesEvent>(),
        )
    };
    whole[..SEGMENT_PIECES_EVENT_HEADER_LEN + data.len()].to_vec()
}

/// Processes 7 and 8 are instrumented, 9 is not; port 80 is 7's; some cookies have addresses.
struct Pod;

impl Sockets for Pod {
    fn listener(&self, local: SocketAddr) -> Option<u32> {
        (local.port() == 80).then_some(7)
    }
    fn selected(&self, pid: u32) -> bool {
        pid == 7 || pid == 8
    }
    fn addresses(&mut self, cookie: u64) -> Option<(SocketAddr, SocketAddr)> {
        (cookie % 2 == 0).then(|| {
            (
                SocketAddr::from(([127, 0, 0, 1], 80)),
                SocketAddr::from(([127, 0, 0, 1], 40000)),
            )
        })
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let limits = Limits {
        max_connections: 16,
        max_buffered_bytes: 64 * 1024,
    };
    let mut conns = Connections::new(limits);
    let mut segments = Segments::new(reassembly::Limits::default());
    let mut out = Vec::new();
    let mut now = 0u64;
    for op in ops {
        match op {
            Op::Record(bytes) => {
                if let Ok(event) = PodEvent::decode(&bytes) {
                    segments.on_event(&event, &mut Pod, &mut conns, &mut out);
                }
            }
            Op::Pieced {
                cookie,
                egress,
                seq,
                len,
                tcp_flags,
                runs,
                bytes,
            } => {
                let record = pieced_record(cookie, egress, seq, len, tcp_flags, &runs, &bytes);
                let event = PodEvent::decode(&record);
                assert!(
                    event.is_ok(),
                    "a well-formed pieced record refused: {event:?}"
                );
                if let Ok(event) = event {
                    segments.on_event(&event, &mut Pod, &mut conns, &mut out);
                }
            }
            Op::Wait(ms) => {
                now += u64::from(ms) * 1_000_000;
                segments.expire(now, &mut conns, &mut out);
                conns.expire(now, &mut out);
            }
        }
        assert!(conns.connections() <= limits.max_connections);
        out.clear();
    }
});
