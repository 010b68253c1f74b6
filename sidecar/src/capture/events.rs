//! Decoding of ring buffer records (the ABI in `sidecar_bpf`) into borrowed, typed events:
//! [`Event`] for the tracepoint modes (connections named by pid and fd), [`PodEvent`] for the
//! pod-scoped mode (connections named by socket cookie).

use std::mem::offset_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sidecar_bpf::{
    ConnectEvent, DATA_EVENT_HEADER_LEN, DIRECTION_EGRESS, DataEvent, EVENT_CLOSE, EVENT_CONNECT,
    EVENT_DATA, EVENT_PIECES, EVENT_SEGMENT, EVENT_SEGMENT_PIECES, EVENT_TCP_CLOSE,
    EVENT_TCP_CONNECT, EVENT_TCP_ESTABLISHED, EVENT_TLS_CLOSE, EVENT_TLS_DATA, EVENT_TLS_TIE,
    EventHeader, MAX_PAYLOAD, MAX_PIECE_BYTES, MAX_PIECES, PIECES_EVENT_HEADER_LEN, Piece,
    PiecesEvent, ROLE_CLIENT, ROLE_SERVER, SEGMENT_EVENT_HEADER_LEN,
    SEGMENT_PIECES_EVENT_HEADER_LEN, SegmentHeader, SegmentPiecesEvent, TLS_DATA_EVENT_HEADER_LEN,
    TcpEvent, TlsDataEvent, TlsSessionEvent,
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
    /// Plaintext of one `SSL_read*` or `SSL_write*` call. `meta.fd` is the session's socket
    /// when the socket tracepoints tied it, else -1 (see `sidecar_bpf::TlsDataEvent`).
    TlsData {
        meta: Meta,
        session: TlsSession,
        direction: Direction,
        /// Bytes the call moved.
        total_len: u32,
        data: Payload<'a>,
    },
    /// A session's socket was learned after its first data (`meta.fd`, or -1 and a cookie).
    TlsTie { meta: Meta, session: TlsSession },
    /// `SSL_shutdown` or `SSL_free` ended a session.
    TlsClose { meta: Meta, session: TlsSession },
}

/// A TLS session as the kernel names it: its `SSL*` in its process, and its socket's cookie
/// once tied (0 before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsSession {
    pub ssl: u64,
    pub cookie: u64,
}

/// What a record holds of the bytes it stands for (a call's, an skb's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Their leading bytes.
    Prefix(&'a [u8]),
    /// HTTP/2 frames found through all of them.
    Pieces(Pieces<'a>),
}

impl<'a> Payload<'a> {
    /// Each run of captured bytes: its offset, and its bytes.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, &'a [u8])> + use<'a> {
        let (prefix, pieces) = match *self {
            Payload::Prefix(bytes) => (Some((0, bytes)), None),
            Payload::Pieces(pieces) => (None, Some(pieces.iter())),
        };
        prefix.into_iter().chain(pieces.into_iter().flatten())
    }
}

/// The pieces of a [`PiecesEvent`], checked: in increasing, non-overlapping offsets within what
/// the syscall moved, each [`Piece`] header followed by all its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pieces<'a> {
    data: &'a [u8],
}

impl<'a> Pieces<'a> {
    /// Each piece: its offset in what the syscall moved, and its bytes.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &'a [u8])> + use<'a> {
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

    /// The checked bytes: each piece's header, then its bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.data
    }

    /// Validates the pieces against their count and the length of what they were cut from.
    pub fn check(data: &'a [u8], count: usize, total_len: u32) -> Result<Self> {
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
            | Event::Close { meta }
            | Event::TlsData { meta, .. }
            | Event::TlsTie { meta, .. }
            | Event::TlsClose { meta, .. } => meta,
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
            EVENT_TLS_DATA => decode_tls_data(bytes, meta),
            EVENT_TLS_TIE | EVENT_TLS_CLOSE => {
                let event: TlsSessionEvent = read(bytes)?;
                let session = TlsSession {
                    ssl: event.ssl,
                    cookie: event.cookie,
                };
                Ok(if header.kind == EVENT_TLS_TIE {
                    Event::TlsTie { meta, session }
                } else {
                    Event::TlsClose { meta, session }
                })
            }
            _ => Err(Error::MalformedEvent("unknown event kind")),
        }
    }
}

fn decode_tls_data<'a>(bytes: &'a [u8], meta: Meta) -> Result<Event<'a>> {
    if bytes.len() < TLS_DATA_EVENT_HEADER_LEN {
        return Err(Error::MalformedEvent("TLS record shorter than its header"));
    }
    let field = |offset: usize| read::<u32>(bytes.get(offset..).unwrap_or_default());
    let wide = |offset: usize| read::<u64>(bytes.get(offset..).unwrap_or_default());
    let direction = field(offset_of!(TlsDataEvent, direction))?;
    let total_len = field(offset_of!(TlsDataEvent, total_len))?;
    let captured = field(offset_of!(TlsDataEvent, captured_len))? as usize;
    let count = field(offset_of!(TlsDataEvent, piece_count))? as usize;
    if captured > MAX_PIECE_BYTES
        || count > MAX_PIECES
        || (count == 0 && captured > MAX_PAYLOAD)
        || bytes.len() < TLS_DATA_EVENT_HEADER_LEN + captured
    {
        return Err(Error::MalformedEvent("TLS record shorter than its data"));
    }
    let data = &bytes[TLS_DATA_EVENT_HEADER_LEN..TLS_DATA_EVENT_HEADER_LEN + captured];
    Ok(Event::TlsData {
        meta,
        session: TlsSession {
            ssl: wide(offset_of!(TlsDataEvent, ssl))?,
            cookie: wide(offset_of!(TlsDataEvent, cookie))?,
        },
        direction: direction_of(direction),
        total_len,
        data: if count == 0 {
            Payload::Prefix(data)
        } else {
            Payload::Pieces(Pieces::check(data, count, total_len)?)
        },
    })
}

/// A task named by a pod-scoped record, ids in the sidecar's PID namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
}

impl Task {
    /// The ids of a record, where 0 means the kernel named no task of the namespace.
    fn of(pid: u32, tid: u32) -> Option<Self> {
        (pid != 0).then_some(Self { pid, tid })
    }
}

/// The flags of a TCP header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub fn fin(self) -> bool {
        u32::from(self.0) & sidecar_bpf::TCP_FIN != 0
    }

    pub fn rst(self) -> bool {
        u32::from(self.0) & sidecar_bpf::TCP_RST != 0
    }

    pub fn psh(self) -> bool {
        u32::from(self.0) & sidecar_bpf::TCP_PSH != 0
    }

    pub fn syn(self) -> bool {
        u32::from(self.0) & sidecar_bpf::TCP_SYN != 0
    }
}

/// A TCP connection as a `sock_ops` record names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConnection {
    /// The socket cookie, which the segments of this socket carry too.
    pub cookie: u64,
    /// `CLOCK_MONOTONIC` nanoseconds of the callback.
    pub timestamp_ns: u64,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// `snd_nxt` and `rcv_nxt`: where each direction's stream starts (establishment) or ends
    /// (close, a FIN counting one); 0 for a connect.
    pub send_next: u32,
    pub recv_next: u32,
}

/// One decoded record of the pod-scoped capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodEvent<'a> {
    /// One skb of a socket of an attached container, with payload, FIN or RST.
    Segment {
        cookie: u64,
        /// Ingress: the socket received it; egress: the socket sent it.
        direction: Direction,
        /// Sequence number of the first payload byte.
        seq: u32,
        /// Payload bytes of the skb; `payload` holds some of them.
        len: u32,
        flags: TcpFlags,
        timestamp_ns: u64,
        /// Egress only: the task running when the segment left, if of the sidecar's PID
        /// namespace (the writer for segments sent by the write itself; see `SegmentHeader`).
        task: Option<Task>,
        /// Offsets are in the skb's payload.
        payload: Payload<'a>,
    },
    /// `connect(2)` on a TCP socket of an attached container, in the connecting task.
    Connect {
        connection: TcpConnection,
        task: Option<Task>,
    },
    /// The handshake completed: `Client` after an active open, `Server` after a passive one.
    Established {
        connection: TcpConnection,
        role: Role,
    },
    /// An established socket entered `TCP_CLOSE`.
    Closed { connection: TcpConnection },
    /// A record of the TLS uprobes (`TlsData`, `TlsTie`, `TlsClose`), which share the ring with
    /// the cgroup programs: the session is tied by socket cookie, `meta.fd` is -1.
    Tls(Event<'a>),
}

impl<'a> PodEvent<'a> {
    /// Decodes one ring buffer record of the pod-scoped programs.
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        let kind: u32 = read(bytes)?;
        match kind {
            EVENT_SEGMENT | EVENT_SEGMENT_PIECES => decode_segment(bytes, kind),
            EVENT_TCP_CONNECT | EVENT_TCP_ESTABLISHED | EVENT_TCP_CLOSE => {
                let event: TcpEvent = read(bytes)?;
                let connection = TcpConnection {
                    cookie: event.cookie,
                    timestamp_ns: event.timestamp_ns,
                    local: socket_addr(event.family, event.local_addr, event.local_port),
                    peer: socket_addr(event.family, event.peer_addr, event.peer_port),
                    send_next: event.send_next,
                    recv_next: event.recv_next,
                };
                Ok(match kind {
                    EVENT_TCP_CONNECT => PodEvent::Connect {
                        connection,
                        task: Task::of(event.pid, event.tid),
                    },
                    EVENT_TCP_ESTABLISHED => PodEvent::Established {
                        connection,
                        role: match event.role {
                            ROLE_SERVER => Role::Server,
                            ROLE_CLIENT => Role::Client,
                            _ => Role::Unknown,
                        },
                    },
                    _ => PodEvent::Closed { connection },
                })
            }
            EVENT_TLS_DATA | EVENT_TLS_TIE | EVENT_TLS_CLOSE => {
                Event::decode(bytes).map(PodEvent::Tls)
            }
            _ => Err(Error::MalformedEvent("unknown pod-scoped event kind")),
        }
    }
}

/// A [`sidecar_bpf::SegmentEvent`] or a [`SegmentPiecesEvent`] (`kind`).
fn decode_segment(bytes: &[u8], kind: u32) -> Result<PodEvent<'_>> {
    let pieced = kind == EVENT_SEGMENT_PIECES;
    let header_len = if pieced {
        SEGMENT_PIECES_EVENT_HEADER_LEN
    } else {
        SEGMENT_EVENT_HEADER_LEN
    };
    if bytes.len() < header_len {
        return Err(Error::MalformedEvent(
            "segment record shorter than its header",
        ));
    }
    // Read field by field, as data records are: the record is trimmed to what it holds.
    let field = |offset: usize| read::<u32>(bytes.get(offset..).unwrap_or_default());
    let wide = |offset: usize| read::<u64>(bytes.get(offset..).unwrap_or_default());
    let captured = field(offset_of!(SegmentHeader, captured_len))? as usize;
    let len = field(offset_of!(SegmentHeader, payload_len))?;
    let bound = if pieced { MAX_PIECE_BYTES } else { MAX_PAYLOAD };
    let data = bytes
        .get(header_len..header_len + captured)
        .filter(|_| captured <= bound)
        .ok_or(Error::MalformedEvent(
            "segment record shorter than its payload",
        ))?;
    let payload = if pieced {
        let count = field(offset_of!(SegmentPiecesEvent, piece_count))? as usize;
        if count > MAX_PIECES {
            return Err(Error::MalformedEvent("segment record with too many pieces"));
        }
        Payload::Pieces(Pieces::check(data, count, len)?)
    } else {
        if captured > len as usize {
            return Err(Error::MalformedEvent(
                "segment record holds more than the segment",
            ));
        }
        Payload::Prefix(data)
    };
    Ok(PodEvent::Segment {
        cookie: wide(offset_of!(SegmentHeader, cookie))?,
        direction: direction_of(field(offset_of!(SegmentHeader, direction))?),
        seq: field(offset_of!(SegmentHeader, seq))?,
        len,
        flags: TcpFlags(field(offset_of!(SegmentHeader, tcp_flags))? as u8),
        timestamp_ns: wide(offset_of!(SegmentHeader, timestamp_ns))?,
        task: Task::of(
            field(offset_of!(SegmentHeader, pid))?,
            field(offset_of!(SegmentHeader, tid))?,
        ),
        payload,
    })
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
    use sidecar_bpf::SegmentEvent;

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
    fn decodes_tls_records() {
        let mut event = TlsDataEvent {
            header: header(EVENT_TLS_DATA),
            ssl: 0xabc,
            cookie: 9,
            direction: DIRECTION_EGRESS,
            total_len: 70_000,
            captured_len: 4,
            piece_count: 0,
            data: [0; MAX_PIECE_BYTES],
        };
        event.data[..4].copy_from_slice(b"GET ");
        let bytes = &as_bytes(&event)[..TLS_DATA_EVENT_HEADER_LEN + 4];
        let decoded = Event::decode(bytes).unwrap();
        assert_eq!(
            decoded,
            Event::TlsData {
                meta: Meta {
                    pid: 7,
                    tid: 8,
                    fd: 3,
                    timestamp_ns: 42
                },
                session: TlsSession {
                    ssl: 0xabc,
                    cookie: 9
                },
                direction: Direction::Egress,
                total_len: 70_000,
                data: Payload::Prefix(b"GET "),
            }
        );
        // Cut short of its data, or a prefix longer than a prefix may be: refused.
        assert!(Event::decode(&bytes[..bytes.len() - 1]).is_err());
        event.captured_len = MAX_PAYLOAD as u32 + 1;
        assert!(Event::decode(as_bytes(&event)).is_err());
        // Pieces are checked as the socket programs' are.
        event.captured_len = size_of::<Piece>() as u32 + 2;
        event.piece_count = 1;
        event.data[..8].copy_from_slice(&[0, 0, 0, 0, 2, 0, 0, 0]);
        let Event::TlsData {
            data: Payload::Pieces(pieces),
            ..
        } = Event::decode(as_bytes(&event)).unwrap()
        else {
            panic!("expected pieces");
        };
        assert_eq!(pieces.iter().count(), 1);
        event.piece_count = 2;
        assert!(Event::decode(as_bytes(&event)).is_err());
        let session = TlsSessionEvent {
            header: header(EVENT_TLS_TIE),
            ssl: 5,
            cookie: 6,
        };
        assert!(matches!(
            Event::decode(as_bytes(&session)).unwrap(),
            Event::TlsTie {
                session: TlsSession { ssl: 5, cookie: 6 },
                ..
            }
        ));
        assert!(Event::decode(&as_bytes(&session)[..30]).is_err());
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

    fn segment_header(kind: u32) -> SegmentHeader {
        SegmentHeader {
            kind,
            direction: DIRECTION_EGRESS,
            pid: 5,
            tid: 6,
            cookie: 77,
            timestamp_ns: 42,
            seq: u32::MAX,
            payload_len: 3000,
            captured_len: 4,
            tcp_flags: sidecar_bpf::TCP_PSH | sidecar_bpf::TCP_ACK,
        }
    }

    #[test]
    fn decodes_a_trimmed_segment_record() {
        let mut event = SegmentEvent {
            header: segment_header(EVENT_SEGMENT),
            payload: [0; MAX_PAYLOAD],
        };
        event.payload[..4].copy_from_slice(b"HTTP");
        let bytes = &as_bytes(&event)[..SEGMENT_EVENT_HEADER_LEN + 4];
        assert_eq!(
            PodEvent::decode(bytes).unwrap(),
            PodEvent::Segment {
                cookie: 77,
                direction: Direction::Egress,
                seq: u32::MAX,
                len: 3000,
                flags: TcpFlags(0x18),
                timestamp_ns: 42,
                task: Some(Task { pid: 5, tid: 6 }),
                payload: Payload::Prefix(b"HTTP"),
            }
        );
        // Ingress segments name no task.
        event.header.direction = sidecar_bpf::DIRECTION_INGRESS;
        event.header.pid = 0;
        event.header.tid = 0;
        let Ok(PodEvent::Segment {
            direction, task, ..
        }) = PodEvent::decode(&as_bytes(&event)[..SEGMENT_EVENT_HEADER_LEN + 4])
        else {
            panic!("not a segment");
        };
        assert_eq!((direction, task), (Direction::Ingress, None));
        // Truncated, or claiming more than it carries or than the segment's length.
        assert!(PodEvent::decode(&as_bytes(&event)[..SEGMENT_EVENT_HEADER_LEN + 3]).is_err());
        assert!(PodEvent::decode(&as_bytes(&event)[..SEGMENT_EVENT_HEADER_LEN - 1]).is_err());
        event.header.payload_len = 2;
        assert!(PodEvent::decode(as_bytes(&event)).is_err());
        event.header.payload_len = 5000;
        event.header.captured_len = MAX_PAYLOAD as u32 + 1;
        assert!(PodEvent::decode(as_bytes(&event)).is_err());
    }

    /// A pieced segment record of `len` payload bytes holding `pieces`, its count and captured
    /// length as given (None: right).
    fn pieced_segment(
        pieces: &[(u32, &[u8])],
        len: u32,
        count: Option<u32>,
        captured: Option<u32>,
    ) -> Vec<u8> {
        // The data is laid out as a syscall's pieced record lays it out.
        let syscall = pieces_event(header(EVENT_PIECES), pieces, len);
        let data = &syscall[PIECES_EVENT_HEADER_LEN..];
        let mut event = SegmentPiecesEvent {
            header: SegmentHeader {
                payload_len: len,
                captured_len: captured.unwrap_or(data.len() as u32),
                ..segment_header(EVENT_SEGMENT_PIECES)
            },
            piece_count: count.unwrap_or(pieces.len() as u32),
            _pad: 0,
            data: [0; MAX_PIECE_BYTES],
        };
        event.data[..data.len()].copy_from_slice(data);
        as_bytes(&event)[..SEGMENT_PIECES_EVENT_HEADER_LEN + data.len()].to_vec()
    }

    #[test]
    fn decodes_pieced_segment_records_and_refuses_bad_ones() {
        let frames: &[(u32, &[u8])] = &[(0, b"headers"), (16_393, b"data hdr"), (40_000, b"")];
        let record = pieced_segment(frames, 65_000, None, None);
        let Ok(PodEvent::Segment {
            cookie,
            seq,
            len,
            payload: Payload::Pieces(pieces),
            ..
        }) = PodEvent::decode(&record)
        else {
            panic!("not a pieced segment: {:?}", PodEvent::decode(&record));
        };
        assert_eq!((cookie, seq, len), (77, u32::MAX, 65_000));
        assert_eq!(
            pieces.iter().collect::<Vec<_>>(),
            frames
                .iter()
                .map(|&(o, b)| (u64::from(o), b))
                .collect::<Vec<_>>()
        );
        // No piece at all (an skb inside one DATA payload) is a valid record.
        assert!(matches!(
            PodEvent::decode(&pieced_segment(&[], 100, None, None)),
            Ok(PodEvent::Segment { payload: Payload::Pieces(p), .. }) if p.iter().count() == 0
        ));
        // (name, pieces, payload length, count, captured length)
        type Case<'a> = (
            &'a str,
            &'a [(u32, &'a [u8])],
            u32,
            Option<u32>,
            Option<u32>,
        );
        let bad: &[Case<'_>] = &[
            ("past the skb", &[(95, b"0123456789")], 100, None, None),
            ("overlapping", &[(0, b"abcd"), (2, b"cd")], 100, None, None),
            ("out of order", &[(50, b"ab"), (10, b"cd")], 100, None, None),
            ("count too high", &[(0, b"ab")], 100, Some(2), None),
            (
                "count too low",
                &[(0, b"ab"), (10, b"cd")],
                100,
                Some(1),
                None,
            ),
            (
                "too many pieces",
                &[(0, b"ab")],
                100,
                Some(MAX_PIECES as u32 + 1),
                None,
            ),
            ("data cut short", &[(0, b"ab")], 100, None, Some(11)),
            (
                "data cut inside a piece",
                &[(0, b"abcd")],
                100,
                None,
                Some(9),
            ),
            (
                "more than the data",
                &[(0, b"ab")],
                100,
                None,
                Some(MAX_PIECE_BYTES as u32 + 1),
            ),
        ];
        for &(name, pieces, len, count, captured) in bad {
            assert!(
                PodEvent::decode(&pieced_segment(pieces, len, count, captured)).is_err(),
                "{name}"
            );
        }
        // Shorter than its fixed part.
        assert!(PodEvent::decode(&record[..SEGMENT_PIECES_EVENT_HEADER_LEN - 1]).is_err());
    }

    #[test]
    fn decodes_tcp_lifecycle_records() {
        let mut local = [0u8; 16];
        local[..4].copy_from_slice(&[10, 0, 0, 7]);
        let mut peer = [0u8; 16];
        peer[..4].copy_from_slice(&[10, 0, 0, 9]);
        let mut event = TcpEvent {
            kind: EVENT_TCP_ESTABLISHED,
            role: ROLE_SERVER,
            cookie: 9,
            timestamp_ns: 1,
            family: libc::AF_INET as u16,
            local_port: 8080,
            peer_port: 40000,
            local_addr: local,
            peer_addr: peer,
            send_next: 100,
            recv_next: 200,
            ..TcpEvent::default()
        };
        let connection = TcpConnection {
            cookie: 9,
            timestamp_ns: 1,
            local: Some("10.0.0.7:8080".parse().unwrap()),
            peer: Some("10.0.0.9:40000".parse().unwrap()),
            send_next: 100,
            recv_next: 200,
        };
        assert_eq!(
            PodEvent::decode(as_bytes(&event)).unwrap(),
            PodEvent::Established {
                connection,
                role: Role::Server
            }
        );
        event.kind = EVENT_TCP_CLOSE;
        assert_eq!(
            PodEvent::decode(as_bytes(&event)).unwrap(),
            PodEvent::Closed { connection }
        );
        event.kind = EVENT_TCP_CONNECT;
        event.role = ROLE_CLIENT;
        event.pid = 3;
        event.tid = 4;
        let Ok(PodEvent::Connect { task, .. }) = PodEvent::decode(as_bytes(&event)) else {
            panic!("not a connect");
        };
        assert_eq!(task, Some(Task { pid: 3, tid: 4 }));
        assert!(PodEvent::decode(&as_bytes(&event)[..79]).is_err());
        event.kind = EVENT_DATA;
        assert!(PodEvent::decode(as_bytes(&event)).is_err());
    }
}
