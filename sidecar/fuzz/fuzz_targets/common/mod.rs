//! What the database fuzz targets share: a sequence of capture events on a few connections,
//! each data event's bytes steered by a protocol's fragments, fed to the connection layer, which
//! must never panic and must stay within its limits.

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use obi_sidecar::capture::events::{Direction, Event, Meta, Role};
use obi_sidecar::connection::{Connections, Limits};

#[derive(Arbitrary, Debug)]
pub enum Op {
    Connect {
        fd: u8,
        client: bool,
    },
    Close {
        fd: u8,
    },
    Data {
        fd: u8,
        tid: u8,
        egress: bool,
        fragment: u8,
        /// Bytes moved beyond the captured ones.
        uncaptured: u16,
        bytes: Vec<u8>,
    },
    Exit,
}

const MAX_CONNECTIONS: usize = 4;
const MAX_BUFFERED: usize = 16384;

/// Runs `ops` through the connection layer, each data event starting with one of `fragments`.
pub fn drive(ops: &[Op], fragments: &[&[u8]]) {
    let mut conns = Connections::new(Limits {
        max_connections: MAX_CONNECTIONS,
        max_buffered_bytes: MAX_BUFFERED,
    });
    let mut out = Vec::new();
    let mut now = 1_000u64;
    let meta = |fd: u8, tid: u8, now: u64| Meta {
        pid: 7,
        tid: u32::from(tid % 3),
        fd: i32::from(fd % 6),
        timestamp_ns: now,
    };
    for op in ops {
        now += 10;
        match op {
            Op::Connect { fd, client } => {
                let role = if *client { Role::Client } else { Role::Server };
                let event = Event::Connect {
                    meta: meta(*fd, 0, now),
                    role,
                    peer: None,
                    local: None,
                };
                conns.on_event(&event, &mut out);
            }
            Op::Close { fd } => conns.on_event(
                &Event::Close {
                    meta: meta(*fd, 0, now),
                },
                &mut out,
            ),
            Op::Data {
                fd,
                tid,
                egress,
                fragment,
                uncaptured,
                bytes,
            } => {
                let mut payload = fragments[usize::from(*fragment) % fragments.len()].to_vec();
                payload.extend_from_slice(bytes);
                payload.truncate(1024);
                let event = Event::Data {
                    meta: meta(*fd, *tid, now),
                    direction: if *egress {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    },
                    total_len: payload.len() as u32 + u32::from(*uncaptured),
                    payload: &payload,
                };
                conns.on_event(&event, &mut out);
            }
            Op::Exit => conns.forget_process(7, &mut out),
        }
        assert!(conns.connections() <= MAX_CONNECTIONS);
        assert!(conns.buffered() <= MAX_BUFFERED);
    }
    for tx in &out {
        assert!(tx.start_ns <= tx.end_ns);
        assert_ne!(tx.trace.span_id, [0; 8]);
    }
}
