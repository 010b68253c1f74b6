//! Fuzzes the pod-scoped capture's userspace path: ring buffer records of any bytes decoded as
//! `PodEvent`s and fed through `Segments` (reassembly, attribution) into the connection layer,
//! with time passing between them. No input may panic, and the connection layer's bounds hold.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use obi_sidecar::capture::events::PodEvent;
use obi_sidecar::connection::segments::{Segments, Sockets};
use obi_sidecar::connection::{Connections, Limits, reassembly};

#[derive(Arbitrary, Debug)]
enum Op {
    /// One ring buffer record.
    Record(Vec<u8>),
    /// Time passes (ms), then what waited too long is given up.
    Wait(u16),
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
