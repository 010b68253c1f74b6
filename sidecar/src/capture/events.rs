//! Decoding of ring buffer records (the ABI in `sidecar_bpf`) into borrowed, typed events.

use std::mem::offset_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sidecar_bpf::{
    ConnectEvent, DATA_EVENT_HEADER_LEN, DIRECTION_EGRESS, DataEvent, EVENT_CLOSE, EVENT_CONNECT,
    EVENT_DATA, EVENT_PIECES, EventHeader, MAX_PAYLOAD, MAX_PIECE_BYTES, MAX_PIECES,
    PIECES_EVENT_HEADER_LEN, Piece, PiecesEvent, ROLE_CLIENT, ROLE_SERVER,
};

use crate::{Error, Result};

/// Which side of a connection the instrumented process is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// It accepted the connection.
    Server,
    /// It connected.
    Client,
    /// Not seen being set up (the connection predates the selection, or the socket tracepoints
    /// first saw it moving data): decided from the first bytes.
    Unknown,
}

/// Direction of a data event, from the instrumented process's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The process read these bytes.
    Ingress,
    /// The process wrote these bytes.
    Egress,
}

/// Fields every event has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Process id in the sidecar's PID namespace.
    pub pid: u32,
    /// Thread id in the sidecar's PID namespace.
    pub tid: u32,
    /// The socket's file descriptor.
    pub fd: i32,
    /// `CLOCK_MONOTONIC` nanoseconds at syscall exit.
    pub timestamp_ns: u64,
}

/// One decoded ring buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Bytes read from or written to a tracked socket.
    Data {
        meta: Meta,
        direction: Direction,
        /// Bytes the syscall moved; `payload` may hold fewer.
        total_len: u32,
        /// The leading bytes (at most `MAX_PAYLOAD`).
        payload: &'a [u8],
    },
    /// A socket starts being tracked: accepted, connected, or first seen moving data.
    Connect {
        meta: Meta,
        role: Role,
        peer: Option<SocketAddr>,
        /// Known when the kernel read it from the socket (socket tracepoints).
        local: Option<SocketAddr>,
    },
    /// Bytes of one syscall captured as pieces at known offsets (HTTP/2 frames found by the
    /// kernel through the whole buffer).
    Pieces {
        meta: Meta,
        direction: Direction,
        /// Bytes the syscall moved.
        total_len: u32,
        pieces: Pieces<'a>,
    },
    /// A tracked socket was closed.
    Close { meta: Meta },
}

/// The pieces of a [`PiecesEvent`], checked: in increasing, non-overlapping offsets within what
/// the syscall moved, each [`Piece`] header followed by all its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pieces<'a> {
    data: &'a [u8],
}

impl<'a> Pieces<'a> {
    /// Each piece: its offset in what the syscall moved, and its bytes.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        let mut rest = self.data;
        std::iter::from_fn(move || {
            let (head, tail) = rest.split_first_chunk::<{ size_of::<Piece>() }>()?;
            let word = |at: usize| {
                u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]])
            };
            let (offset, len) = (word(0), word(4) as usize);
            let bytes = tail.get(..len)?;
            rest = &tail[len..];
            Some((u64::from(offset), bytes))
        })
    }

    /// Validates the pieces against their count and the syscall's length.
    fn check(data: &'a [u8], count: usize, total_len: u32) -> Result<Self> {
        let pieces = Self { data };
        let (mut end, mut used, mut seen) = (0u64, 0usize, 0usize);
        for (offset, bytes) in pieces.iter() {
            if offset < end || offset + bytes.len() as u64 > u64::from(total_len) {
                return Err(Error::MalformedEvent(
                    "pieces out of order or out of bounds",
                ));
            }
            end = offset + bytes.len() as u64;
            used += size_of::<Piece>() + bytes.len();
            seen += 1;
        }
        if seen != count || used != data.len() {
            return Err(Error::MalformedEvent("pieces do not match their data"));
        }
        Ok(pieces)
    }
}

impl Event<'_> {
    /// The fields every event has.
    pub fn meta(&self) -> &Meta {
        match self {
            Event::Data { meta, .. }
            | Event::Connect { meta, .. }
            | Event::Pieces { meta, .. }
            | Event::Close { meta } => meta,
        }
    }
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T> {
    if bytes.len() < size_of::<T>() {
        return Err(Error::MalformedEvent("record shorter than its type"));
    }
    // SAFETY: the length is checked above and the ABI types are plain integers and byte arrays,
    // valid for any bit pattern; the read is unaligned because ring buffer records are only
    // 8-byte aligned by convention.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl<'a> Event<'a> {
    /// Decodes one ring buffer record.
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        let header: EventHeader = read(bytes)?;
        let meta = Meta {
            pid: header.pid,
            tid: header.tid,
            fd: header.fd,
            timestamp_ns: header.timestamp_ns,
        };
        match header.kind {
            EVENT_DATA => {
                if bytes.len() < DATA_EVENT_HEADER_LEN {
                    return Err(Error::MalformedEvent("data record shorter than its header"));
                }
                // The fixed part is read field by field: the record is trimmed to the payload,
                // and copying a whole `DataEvent` per record showed up in profiles.
                let field = |offset: usize| read::<u32>(bytes.get(offset..).unwrap_or_default());
                let direction = field(offset_of!(DataEvent, direction))?;
                let total_len = field(offset_of!(DataEvent, total_len))?;
                let captured = field(offset_of!(DataEvent, captured_len))? as usize;
                if captured > MAX_PAYLOAD || bytes.len() < DATA_EVENT_HEADER_LEN + captured {
                    return Err(Error::MalformedEvent(
                        "data record shorter than its payload",
                    ));
                }
                Ok(Event::Data {
                    meta,
                    direction: direction_of(direction),
                    total_len,
                    payload: &bytes[DATA_EVENT_HEADER_LEN..DATA_EVENT_HEADER_LEN + captured],
                })
            }
            EVENT_CONNECT => {
                let event: ConnectEvent = read(bytes)?;
                let role = match event.role {
                    ROLE_SERVER => Role::Server,
                    ROLE_CLIENT => Role::Client,
                    _ => Role::Unknown,
                };
                Ok(Event::Connect {
                    meta,
                    role,
                    peer: socket_addr(event.family, event.peer_addr, event.peer_port),
                    local: match event.local_port {
                        0 => None,
                        port => socket_addr(event.family, event.local_addr, port),
                    },
                })
            }
            EVENT_PIECES => {
                if bytes.len() < PIECES_EVENT_HEADER_LEN {
                    return Err(Error::MalformedEvent(
                        "pieces record shorter than its header",
                    ));
                }
                let field = |offset: usize| read::<u32>(bytes.get(offset..).unwrap_or_default());
                let direction = field(offset_of!(PiecesEvent, direction))?;
                let total_len = field(offset_of!(PiecesEvent, total_len))?;
                let captured = field(offset_of!(PiecesEvent, captured_len))? as usize;
                let count = field(offset_of!(PiecesEvent, piece_count))? as usize;
                if captured > MAX_PIECE_BYTES
                    || count > MAX_PIECES
                    || bytes.len() < PIECES_EVENT_HEADER_LEN + captured
                {
                    return Err(Error::MalformedEvent("pieces record shorter than its data"));
                }
                let data = &bytes[PIECES_EVENT_HEADER_LEN..PIECES_EVENT_HEADER_LEN + captured];
                Ok(Event::Pieces {
                    meta,
                    direction: direction_of(direction),
                    total_len,
                    pieces: Pieces::check(data, count, total_len)?,
                })
            }
            EVENT_CLOSE => Ok(Event::Close { meta }),
            _ => Err(Error::MalformedEvent("unknown event kind")),
        }
    }
}

fn direction_of(value: u32) -> Direction {
    if value == DIRECTION_EGRESS {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

/// An address of a [`ConnectEvent`]: `addr` holds 4 (IPv4) or 16 (IPv6) bytes.
fn socket_addr(family: u16, addr: [u8; 16], port: u16) -> Option<SocketAddr> {
    const AF_INET: u16 = libc::AF_INET as u16;
    const AF_INET6: u16 = libc::AF_INET6 as u16;
    let ip = match family {
        AF_INET => {
            let [a, b, c, d, ..] = addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        AF_INET6 => {
            let v6 = Ipv6Addr::from(addr);
            // Dual-stack listeners report IPv4 peers as v4-mapped addresses.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn as_bytes<T>(value: &T) -> &[u8] {
        // SAFETY: test helper over the plain ABI structs.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
    }

    pub(crate) fn header(kind: u32) -> EventHeader {
        EventHeader {
            kind,
            pid: 7,
            tid: 8,
            fd: 3,
            timestamp_ns: 42,
        }
    }

    #[test]
    fn decodes_trimmed_data_record() {
        let mut event = DataEvent {
            header: header(EVENT_DATA),
            direction: DIRECTION_EGRESS,
            total_len: 100,
            captured_len: 5,
            _pad: 0,
            payload: [0; MAX_PAYLOAD],
        };
        event.payload[..5].copy_from_slice(b"GET /");
        let bytes = &as_bytes(&event)[..DATA_EVENT_HEADER_LEN + 5];
        let decoded = Event::decode(bytes).unwrap();
        let Event::Data {
            meta,
            direction,
            total_len,
            payload,
        } = decoded
        else {
            panic!("expected data, got {decoded:?}");
        };
        assert_eq!(meta.pid, 7);
        assert_eq!(meta.tid, 8);
        assert_eq!(meta.fd, 3);
        assert_eq!(direction, Direction::Egress);
        assert_eq!(total_len, 100);
        assert_eq!(payload, b"GET /");
    }

    #[test]
    fn rejects_truncated_and_unknown_records() {
        assert!(Event::decode(&[0u8; 3]).is_err());
        let unknown = header(99);
        assert!(Event::decode(as_bytes(&unknown)).is_err());
        let mut event = DataEvent {
            header: header(EVENT_DATA),
            direction: 0,
            total_len: 10,
            captured_len: 10,
            _pad: 0,
            payload: [0; MAX_PAYLOAD],
        };
        assert!(Event::decode(&as_bytes(&event)[..DATA_EVENT_HEADER_LEN + 9]).is_err());
        event.captured_len = MAX_PAYLOAD as u32 + 1;
        assert!(Event::decode(as_bytes(&event)).is_err());
    }

    #[test]
    fn decodes_connect_with_v4_mapped_peer() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[10, 1, 2, 3]);
        let event = ConnectEvent {
            header: header(EVENT_CONNECT),
            role: ROLE_SERVER,
            family: libc::AF_INET6 as u16,
            peer_port: 5555,
            peer_addr: addr,
            ..ConnectEvent::default()
        };
        assert_eq!(
            Event::decode(as_bytes(&event)).unwrap(),
            Event::Connect {
                meta: Meta {
                    pid: 7,
                    tid: 8,
                    fd: 3,
                    timestamp_ns: 42
                },
                role: Role::Server,
                peer: Some("10.1.2.3:5555".parse().unwrap()),
                local: None,
            }
        );
    }

    #[test]
    fn decodes_connect_with_local_address_from_the_socket() {
        let mut peer = [0u8; 16];
        peer[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut local = [0u8; 16];
        local[..4].copy_from_slice(&[10, 0, 0, 7]);
        let event = ConnectEvent {
            header: header(EVENT_CONNECT),
            role: sidecar_bpf::ROLE_UNKNOWN,
            family: libc::AF_INET as u16,
            peer_port: 40000,
            peer_addr: peer,
            local_addr: local,
            local_port: 8080,
            _pad: [0; 6],
        };
        let Event::Connect {
            role, peer, local, ..
        } = Event::decode(as_bytes(&event)).unwrap()
        else {
            panic!("not a connect event");
        };
        assert_eq!(role, Role::Unknown);
        assert_eq!(peer, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(local, Some("10.0.0.7:8080".parse().unwrap()));
    }

    pub(crate) fn pieces_event(
        header: EventHeader,
        pieces: &[(u32, &[u8])],
        total_len: u32,
    ) -> Vec<u8> {
        let mut event = PiecesEvent {
            header,
            direction: DIRECTION_EGRESS,
            total_len,
            captured_len: 0,
            piece_count: pieces.len() as u32,
            data: [0; MAX_PIECE_BYTES],
        };
        let mut used = 0;
        for (offset, bytes) in pieces {
            let head = Piece {
                offset: *offset,
                len: bytes.len() as u32,
            };
            event.data[used..used + 8].copy_from_slice(as_bytes(&head));
            event.data[used + 8..used + 8 + bytes.len()].copy_from_slice(bytes);
            used += 8 + bytes.len();
        }
        event.captured_len = used as u32;
        as_bytes(&event)[..PIECES_EVENT_HEADER_LEN + used].to_vec()
    }

    #[test]
    fn decodes_pieces_in_order() {
        let record = pieces_event(
            header(EVENT_PIECES),
            &[(0, b"head"), (16400, b"trailers")],
            20000,
        );
        let Event::Pieces {
            direction,
            total_len,
            pieces,
            ..
        } = Event::decode(&record).unwrap()
        else {
            panic!("not a pieces event");
        };
        assert_eq!(direction, Direction::Egress);
        assert_eq!(total_len, 20000);
        let got: Vec<(u64, &[u8])> = pieces.iter().collect();
        assert_eq!(got, vec![(0, &b"head"[..]), (16400, &b"trailers"[..])]);
    }

    #[test]
    fn rejects_pieces_that_overlap_leave_the_syscall_or_miss_bytes() {
        for (pieces, total) in [
            (&[(10, &b"abcd"[..]), (12, &b"ef"[..])][..], 100),
            (&[(98, &b"abcd"[..])][..], 100),
            (&[(20, &b"ab"[..]), (10, &b"cd"[..])][..], 100),
        ] {
            assert!(
                Event::decode(&pieces_event(header(EVENT_PIECES), pieces, total)).is_err(),
                "{pieces:?}"
            );
        }
        let mut short = pieces_event(header(EVENT_PIECES), &[(0, b"abcd")], 100);
        short.pop();
        assert!(Event::decode(&short).is_err());
    }
}
