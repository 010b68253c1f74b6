//! Fuzzes the decoding of ring buffer records (the TLS records among them) and the connection
//! layer behind it: no record may panic, whatever its kind, length or fields, and a run of
//! records (TLS plaintext held for untied sessions, ties, a connection switching to plaintext)
//! keeps the layer within its bounds.
//!
//! Input: records, each a little-endian u16 length then that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obi_sidecar::capture::events::Event;
use obi_sidecar::connection::{Connections, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_connections: 16,
        max_buffered_bytes: 1 << 16,
    };
    let mut conns = Connections::new(limits);
    let mut out = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (record, after) = tail.split_at(len);
        rest = after;
        if let Ok(event) = Event::decode(record) {
            conns.on_event(&event, &mut out);
        }
        assert!(conns.connections() <= limits.max_connections);
        assert!(conns.buffered() <= limits.max_buffered_bytes);
        out.clear();
    }
});
