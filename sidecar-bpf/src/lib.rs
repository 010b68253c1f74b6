//! The kernel/user ABI of the OBI sidecar: every struct that crosses the ring buffer or a map,
//! the map and global names, and the per-architecture syscall table.
//!
//! Rules: `#[repr(C)]`, only fixed-width integers and byte arrays (no bool/enum/Option), padding
//! spelled out, and sizes asserted at compile time so both sides agree or fail to build.
#![no_std]

/// Bytes of a read or written buffer copied into an event: enough for a request or status line
/// and the usual headers (including `traceparent`) without copying bodies.
pub const MAX_PAYLOAD: usize = 1024;

/// Processes that can be selected at once.
pub const MAX_PIDS: u32 = 4096;
/// Sockets tracked across all selected processes.
pub const MAX_SOCKETS: u32 = 65536;
/// The programs wake the reader each time the queue grows across a multiple of this fraction of
/// the ring buffer (the loader sets [`names::WAKEUP_BYTES`]); otherwise the reader drains every
/// [`DRAIN_INTERVAL_MS`]. With the default 2 MiB ring that is 64 KiB, about 200 requests'
/// events per wakeup. Measured under nginx + wrk: an eighth (256 KiB) saves a little BPF time
/// but makes each drain a longer burst, and the app's p99 rose by half.
pub const WAKEUP_FRACTION: u32 = 32;
/// How often userspace drains the ring buffer without being woken.
pub const DRAIN_INTERVAL_MS: u64 = 20;
/// Default ring buffer size (a power-of-two multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 1 << 21;

/// Map and global names, shared so the loader cannot drift from the object.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const PIDS: &str = "PIDS";
    pub const SOCKETS: &str = "SOCKETS";
    pub const STATS: &str = "STATS";
    pub const SCRATCH: &str = "SCRATCH";
    pub const PIDNS_DEV: &str = "PIDNS_DEV";
    pub const PIDNS_INO: &str = "PIDNS_INO";
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    pub const SYS_EXIT: &str = "sys_exit";
    pub const SYS_EXIT_BTF: &str = "sys_exit_btf";
    pub const SOCK_RECV: &str = "sock_recv";
    pub const SOCK_SEND: &str = "sock_send";
    pub const SOCK_STATE: &str = "sock_state";
    // Pod-scoped capture (programs attached to the app containers' cgroups).
    pub const SKB_INGRESS: &str = "skb_ingress";
    pub const SKB_EGRESS: &str = "skb_egress";
    pub const TCP_OPS: &str = "tcp_ops";
    pub const SEGMENT_SCRATCH: &str = "SEGMENT_SCRATCH";
    pub const SEGMENT_H2: &str = "SEGMENT_H2";
    // TLS plaintext (uprobes attached per process).
    pub const SSL_ENTRY: &str = "ssl_entry";
    pub const SSL_RETURN: &str = "ssl_return";
    pub const TLS_THREADS: &str = "TLS_THREADS";
    pub const TLS_SESSIONS: &str = "TLS_SESSIONS";
    pub const TLS_CAPTURE: &str = "TLS_CAPTURE";
}

/// `EventHeader::kind`.
pub const EVENT_DATA: u32 = 1;
pub const EVENT_CONNECT: u32 = 2;
pub const EVENT_CLOSE: u32 = 3;
/// A [`PiecesEvent`]: bytes of a syscall copied as pieces at known offsets.
pub const EVENT_PIECES: u32 = 4;

/// `DataEvent::direction`: bytes the process read from the socket, or wrote to it.
pub const DIRECTION_INGRESS: u32 = 0;
pub const DIRECTION_EGRESS: u32 = 1;

/// `ConnectEvent::role` and `SocketState::role`. Unknown: the socket was first seen moving data
/// (socket tracepoints), so userspace tells the role from which side sends a request.
pub const ROLE_UNKNOWN: u32 = 0;
/// The process accepted the connection: it is the server.
pub const ROLE_SERVER: u32 = 1;
/// The process connected: it is the client.
pub const ROLE_CLIENT: u32 = 2;
/// Flag on `SocketState::role`: the entry replaced one whose close had not been seen.
pub const SOCKET_REUSED: u32 = 1 << 31;

/// Indexes of the per-CPU counters in [`names::STATS`].
pub const STAT_EVENTS: u32 = 0;
pub const STAT_DROPPED: u32 = 1;
pub const STAT_COUNT: u32 = 2;

/// Common prefix of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of `EVENT_*`.
    pub kind: u32,
    /// Thread group id (process id) as seen in the sidecar's PID namespace.
    pub pid: u32,
    /// Thread id as seen in the sidecar's PID namespace.
    pub tid: u32,
    /// The socket's file descriptor in `pid`.
    pub fd: i32,
    /// `CLOCK_MONOTONIC` nanoseconds when the syscall returned.
    pub timestamp_ns: u64,
}

/// Bytes moved through a socket by one read-like or write-like syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub header: EventHeader,
    /// `DIRECTION_*`.
    pub direction: u32,
    /// Bytes the syscall moved (its return value, saturated to u32).
    pub total_len: u32,
    /// Leading bytes of `payload` that hold data (at most [`MAX_PAYLOAD`]).
    pub captured_len: u32,
    pub _pad: u32,
    pub payload: [u8; MAX_PAYLOAD],
}

/// Size of a data event without its payload; a record is this plus `captured_len` bytes.
pub const DATA_EVENT_HEADER_LEN: usize = core::mem::offset_of!(DataEvent, payload);

/// A socket of a selected process that starts being tracked: accepted or connected (`sys_exit`
/// programs), or first seen moving data (socket tracepoints).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectEvent {
    pub header: EventHeader,
    /// `ROLE_SERVER` after accept, `ROLE_CLIENT` after connect, `ROLE_UNKNOWN` when first seen
    /// moving data.
    pub role: u32,
    /// Address family of the addresses (`AF_INET`, `AF_INET6`) or 0 when the caller passed none.
    pub family: u16,
    /// Peer port, host byte order.
    pub peer_port: u16,
    /// Peer address: 4 bytes for IPv4, 16 for IPv6, network order.
    pub peer_addr: [u8; 16],
    /// Local address, as `peer_addr`; only the socket tracepoints know it.
    pub local_addr: [u8; 16],
    /// Local port, host byte order; 0 when unknown.
    pub local_port: u16,
    pub _pad: [u8; 6],
}

/// A selected process closed a tracked socket.
pub type CloseEvent = EventHeader;

/// Pieces of a pieced capture per syscall: runs of captured bytes, which break where a DATA
/// payload is left out, so about one per DATA frame; a write with more leaves the rest
/// uncaptured and the frame position unknown until a later write starts at a frame.
pub const MAX_PIECES: usize = 128;
/// Bytes of a pieced event's data per syscall: the pieces' bytes and their [`Piece`] headers.
pub const MAX_PIECE_BYTES: usize = 8192;
/// Largest HTTP/2 frame payload the kernel follows (the protocol's default `SETTINGS_MAX_FRAME_SIZE`):
/// a frame header announcing more is taken for something else.
pub const MAX_H2_FRAME: u32 = 16384;

/// What precedes each piece's bytes in a [`PiecesEvent`]: `len` bytes at `offset` of what the
/// syscall moved.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub offset: u32,
    pub len: u32,
}

/// Bytes moved by one syscall on an HTTP/2 connection, captured frame by frame: the kernel walks
/// the frame headers through the whole buffer and copies every frame but DATA whole (HEADERS,
/// trailers, RST_STREAM, GOAWAY, ...), and only the 9-byte header of each DATA frame. So a
/// response's trailers or the next stream's HEADERS behind a large DATA frame are never lost to
/// the bounded copy of a plain [`DataEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PiecesEvent {
    pub header: EventHeader,
    /// `DIRECTION_*`.
    pub direction: u32,
    /// Bytes the syscall moved (its return value, saturated to u32).
    pub total_len: u32,
    /// Leading bytes of `data` in use.
    pub captured_len: u32,
    /// Pieces in `data` (at most [`MAX_PIECES`]), in increasing offsets.
    pub piece_count: u32,
    /// Each piece: its [`Piece`], then its bytes. Inline, so a record is only as long as what it
    /// holds.
    pub data: [u8; MAX_PIECE_BYTES],
}

/// Size of a pieced event without its data; a record is this plus `captured_len` bytes.
pub const PIECES_EVENT_HEADER_LEN: usize = core::mem::offset_of!(PiecesEvent, data);

/// `SocketState::flags`: the socket carries HTTP/2 (its client preface was seen), so its
/// syscalls are captured frame by frame.
pub const SOCKET_H2: u32 = 1;
/// `SocketState::flags`, shifted left by the `DIRECTION_*` value: the frame position of that
/// direction is known, and `SocketState::h2_skip` holds it.
pub const SOCKET_H2_KNOWN: u32 = 2;

/// Key of [`names::SOCKETS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SocketKey {
    pub pid: u32,
    pub fd: i32,
}

/// Value of [`names::SOCKETS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketState {
    /// `ROLE_*`, possibly with [`SOCKET_REUSED`].
    pub role: u32,
    /// `SOCKET_H2*` bits.
    pub flags: u32,
    /// The kernel socket's cookie (unique, never reused) once a socket tracepoint saw it; 0 for
    /// entries of the `sys_exit` programs and for sockets handed over by userspace.
    pub cookie: u64,
    /// Per `DIRECTION_*`, for an HTTP/2 socket whose frame position is known: bytes at the start
    /// of the next syscall that still belong to the last frame seen.
    pub h2_skip: [u32; 2],
}

/// Offsets in the kernel's `struct sock_common` (the head of every `struct sock`). This head has
/// kept its layout since Linux 3.x; the socket tracepoints this is read under arrived in 6.3.
pub mod sock_common {
    pub const DADDR: usize = 0;
    pub const RCV_SADDR: usize = 4;
    pub const DPORT: usize = 12;
    pub const NUM: usize = 14;
    pub const FAMILY: usize = 16;
    pub const V6_DADDR: usize = 56;
    pub const V6_RCV_SADDR: usize = 72;
}

/// Value of [`names::PIDS`]: bits saying why and how a process is selected.
pub const PID_SELECTED: u32 = 1;
/// The process has TLS uprobes attached: its socket calls are looked at for TLS ties, and a
/// failed one too (an `SSL_read` that found nothing to read yet still names its socket).
pub const PID_TLS: u32 = 1 << 1;

const _: () = {
    assert!(core::mem::size_of::<EventHeader>() == 24);
    assert!(core::mem::size_of::<DataEvent>() == 40 + MAX_PAYLOAD);
    assert!(DATA_EVENT_HEADER_LEN == 40);
    assert!(core::mem::size_of::<ConnectEvent>() == 72);
    assert!(core::mem::size_of::<SocketKey>() == 8);
    assert!(core::mem::size_of::<SocketState>() == 24);
    assert!(core::mem::size_of::<Piece>() == 8);
    assert!(PIECES_EVENT_HEADER_LEN == 40);
    assert!(core::mem::size_of::<PiecesEvent>() == PIECES_EVENT_HEADER_LEN + MAX_PIECE_BYTES);
    assert!(MAX_PIECE_BYTES.is_power_of_two());
    assert!(MAX_PAYLOAD.is_power_of_two());
};

// ---------------------------------------------------------------------------------------------
// Pod-scoped capture: `cgroup_skb` (ingress, egress) and `sock_ops` programs attached to each app
// container's cgroup. The kernel runs them only for that cgroup's sockets, so they need no PID
// filter; connections are named by socket cookie, not by (pid, fd). Their records share the ring
// buffer and the `kind` field at offset 0 with the records above.
// ---------------------------------------------------------------------------------------------

/// `SegmentHeader::kind`: a [`SegmentEvent`], a TCP segment (one skb, possibly a GSO/GRO super-packet) with payload,
/// or with FIN or RST.
pub const EVENT_SEGMENT: u32 = 5;
/// `TcpEvent::kind`: `connect(2)` on a TCP socket of the cgroup (`BPF_SOCK_OPS_TCP_CONNECT_CB`,
/// run in the connecting task, so `pid`/`tid` name it). The SYN is not sent yet.
pub const EVENT_TCP_CONNECT: u32 = 6;
/// `TcpEvent::kind`: the handshake completed, actively (`role` client) or passively (server).
pub const EVENT_TCP_ESTABLISHED: u32 = 7;
/// `TcpEvent::kind`: an established socket entered `TCP_CLOSE` (after FIN/RST, or on its
/// replacement by a time-wait socket).
pub const EVENT_TCP_CLOSE: u32 = 8;

/// TCP header flags as in `SegmentHeader::tcp_flags`.
pub const TCP_FIN: u32 = 0x01;
pub const TCP_SYN: u32 = 0x02;
pub const TCP_RST: u32 = 0x04;
pub const TCP_PSH: u32 = 0x08;
pub const TCP_ACK: u32 = 0x10;

/// What every record of one skb of a TCP socket in an attached cgroup starts with, as the
/// `cgroup_skb` hook saw it: on egress before segmentation (a GSO skb carries up to 64 KiB), on
/// ingress after GRO.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentHeader {
    /// [`EVENT_SEGMENT`] or [`EVENT_SEGMENT_PIECES`].
    pub kind: u32,
    /// `DIRECTION_INGRESS`: received by the socket; `DIRECTION_EGRESS`: sent by it.
    pub direction: u32,
    /// Egress only: the current task's process and thread ids in the sidecar's PID namespace,
    /// when that task is in the socket's cgroup and of that namespace; 0 otherwise (always 0 on
    /// ingress, which runs in softirq). A segment sent by the write itself names the writing
    /// thread; one the kernel sends later from softirq (the ACK-clocked rest of a large write,
    /// a retransmit) names the interrupted task, which the cgroup check turns away unless it is
    /// of the same container.
    pub pid: u32,
    pub tid: u32,
    /// The socket's cookie (unique while the kernel runs, never reused).
    pub cookie: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the hook ran.
    pub timestamp_ns: u64,
    /// Sequence number of the first payload byte (the SYN's own number is skipped).
    pub seq: u32,
    /// TCP payload bytes in the skb.
    pub payload_len: u32,
    /// Leading bytes of the record's payload or data that are in use.
    pub captured_len: u32,
    /// The TCP header's flags (`TCP_*`).
    pub tcp_flags: u32,
}

/// An skb with its payload's first `header.captured_len` bytes (at most [`MAX_PAYLOAD`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SegmentEvent {
    /// `kind` [`EVENT_SEGMENT`].
    pub header: SegmentHeader,
    pub payload: [u8; MAX_PAYLOAD],
}

/// Size of a segment event without its payload; a record is this plus `captured_len` bytes.
pub const SEGMENT_EVENT_HEADER_LEN: usize = core::mem::offset_of!(SegmentEvent, payload);

/// `SegmentHeader::kind`: a [`SegmentPiecesEvent`].
pub const EVENT_SEGMENT_PIECES: u32 = 12;

/// An skb of an HTTP/2 socket captured frame by frame, as [`PiecesEvent`] captures a syscall:
/// every frame but DATA whole, only the header of each DATA frame, with offsets in the skb's
/// payload. So frames behind large DATA frames in one 64 KiB skb are not lost to the bounded
/// copy of a [`SegmentEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SegmentPiecesEvent {
    /// `kind` [`EVENT_SEGMENT_PIECES`]; `captured_len`: bytes of `data` in use.
    pub header: SegmentHeader,
    /// Pieces in `data` (at most [`MAX_PIECES`]), in increasing offsets.
    pub piece_count: u32,
    pub _pad: u32,
    /// As `PiecesEvent::data`.
    pub data: [u8; MAX_PIECE_BYTES],
}

/// Size of a pieced segment event without its data; a record is this plus `captured_len` bytes.
pub const SEGMENT_PIECES_EVENT_HEADER_LEN: usize = core::mem::offset_of!(SegmentPiecesEvent, data);

/// Sockets of the attached cgroups whose HTTP/2 frame position is kept.
pub const MAX_H2_SEGMENT_SOCKETS: u32 = 16384;

/// `SegmentH2::flags`, shifted left by the `DIRECTION_*` value: the bytes `h2_skip` counts are
/// the rest of a frame whose payload is copied (not DATA): the next skb's walk copies them.
pub const SEGMENT_H2_COPY: u32 = 1 << 4;

/// Value of [`names::SEGMENT_H2`], by socket cookie: what the `cgroup_skb` programs know of an
/// HTTP/2 socket's frames. An skb is walked from the kept position only when it starts at the
/// sequence number the position is valid for; any other (a retransmit, one out of order) is
/// walked as if the position were unknown, so it cannot move the position off the frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentH2 {
    /// `SOCKET_H2*` bits, as `SocketState::flags`, and [`SEGMENT_H2_COPY`].
    pub flags: u32,
    pub _pad: u32,
    /// Per `DIRECTION_*`, as `SocketState::h2_skip`: bytes at `seq` that still belong to the
    /// last frame.
    pub h2_skip: [u32; 2],
    /// Per direction: the sequence number the position is valid for (the byte after the last
    /// skb walked).
    pub seq: [u32; 2],
    /// Per direction: bytes of a frame header the last skb ended inside (0 to 8; segments are
    /// cut anywhere), and those bytes.
    pub split_len: [u32; 2],
    pub split: [[u8; 8]; 2],
}

/// A `sock_ops` callback of a TCP socket in an attached cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpEvent {
    /// [`EVENT_TCP_CONNECT`], [`EVENT_TCP_ESTABLISHED`] or [`EVENT_TCP_CLOSE`].
    pub kind: u32,
    /// `ROLE_CLIENT` (connect, active establishment), `ROLE_SERVER` (passive), `ROLE_UNKNOWN`
    /// (close).
    pub role: u32,
    /// [`EVENT_TCP_CONNECT`] only: the connecting task's process and thread ids in the sidecar's
    /// PID namespace (0 if it is of another namespace). 0 for the other kinds, which run in
    /// softirq.
    pub pid: u32,
    pub tid: u32,
    pub cookie: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the callback ran.
    pub timestamp_ns: u64,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Ports, host byte order.
    pub local_port: u16,
    pub peer_port: u16,
    pub _pad: u16,
    /// Addresses: 4 bytes for IPv4, 16 for IPv6, network order.
    pub local_addr: [u8; 16],
    pub peer_addr: [u8; 16],
    /// `snd_nxt` and `rcv_nxt`: at establishment the sequence numbers of the first payload byte
    /// each way (where each direction's stream starts), at close where each ended (a FIN counts
    /// one). 0 for [`EVENT_TCP_CONNECT`].
    pub send_next: u32,
    pub recv_next: u32,
}

const _: () = {
    assert!(core::mem::size_of::<SegmentHeader>() == 48);
    assert!(core::mem::size_of::<SegmentEvent>() == 48 + MAX_PAYLOAD);
    assert!(SEGMENT_EVENT_HEADER_LEN == 48);
    assert!(SEGMENT_PIECES_EVENT_HEADER_LEN == 56);
    assert!(core::mem::size_of::<SegmentPiecesEvent>() == 56 + MAX_PIECE_BYTES);
    assert!(core::mem::size_of::<SegmentH2>() == 48);
    assert!(SEGMENT_H2_COPY & (SOCKET_H2 | SOCKET_H2_KNOWN | SOCKET_H2_KNOWN << 1) == 0);
    assert!(core::mem::size_of::<TcpEvent>() == 80);
    assert!(core::mem::offset_of!(SegmentEvent, header) == 0);
    assert!(core::mem::offset_of!(SegmentPiecesEvent, header) == 0);
    assert!(core::mem::offset_of!(TcpEvent, kind) == 0);
};

// ---------------------------------------------------------------------------------------------
// TLS plaintext: uprobes on the `SSL_*` functions of OpenSSL-compatible libraries (OpenSSL 1.1
// and 3, BoringSSL, executables with one linked in), attached per process with `uprobe_multi`
// links. Their records share the ring buffer, and `EventHeader` as their head, with the records
// above. A session is named by its `SSL*` in its process; the socket it rides on is learned in
// the kernel (the "tie") from a socket call the same thread makes inside an `SSL_*` call (the
// socket tracepoints give its descriptor, a `cgroup_skb` egress its cookie), or, for libraries
// that move ciphertext through memory buffers (Node.js), from the next write of a TLS record by
// the thread that last called into an untied session.
// ---------------------------------------------------------------------------------------------

/// A [`TlsDataEvent`]: plaintext an `SSL_read*` returned or an `SSL_write*` took.
pub const EVENT_TLS_DATA: u32 = 9;
/// A [`TlsSessionEvent`]: a session's socket was learned after its last data record.
pub const EVENT_TLS_TIE: u32 = 10;
/// A [`TlsSessionEvent`]: `SSL_shutdown` or `SSL_free` ended a session.
pub const EVENT_TLS_CLOSE: u32 = 11;

/// The hooked functions, as the attach cookie (`bpf_get_attach_cookie`) of each probe names
/// them: one entry program and one return program serve all of them.
pub const TLS_FN_READ: u32 = 1;
pub const TLS_FN_READ_EX: u32 = 2;
pub const TLS_FN_WRITE: u32 = 3;
pub const TLS_FN_WRITE_EX: u32 = 4;
/// `SSL_do_handshake` (which `SSL_connect` and `SSL_accept` call): no data, but its socket calls
/// tie the session before its first record.
pub const TLS_FN_HANDSHAKE: u32 = 5;
pub const TLS_FN_SHUTDOWN: u32 = 6;
pub const TLS_FN_FREE: u32 = 7;

/// Threads with a TLS call in flight or a tie pending, across the selected processes.
pub const MAX_TLS_THREADS: u32 = 8192;
/// TLS sessions followed at once.
pub const MAX_TLS_SESSIONS: u32 = 16384;

/// `SocketState::flags`: the socket carries an instrumented TLS session; its ciphertext is
/// never captured.
pub const SOCKET_TLS: u32 = 1 << 3;

/// Plaintext of one `SSL_read`, `SSL_read_ex`, `SSL_write` or `SSL_write_ex` call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsDataEvent {
    /// `fd`: the socket's descriptor when the socket tracepoints tied the session, else -1.
    /// `timestamp_ns`: when the call returned.
    pub header: EventHeader,
    /// The session: its `SSL*` in the process.
    pub ssl: u64,
    /// The socket's cookie when the session is tied, else 0.
    pub cookie: u64,
    /// `DIRECTION_INGRESS` (read) or `DIRECTION_EGRESS` (written).
    pub direction: u32,
    /// Plaintext bytes the call moved.
    pub total_len: u32,
    /// Leading bytes of `data` in use.
    pub captured_len: u32,
    /// 0: `data` holds a prefix of the plaintext (at most [`MAX_PAYLOAD`] bytes); otherwise
    /// `data` holds this many pieces, as in [`PiecesEvent`] (an HTTP/2 session, walked frame by
    /// frame).
    pub piece_count: u32,
    pub data: [u8; MAX_PIECE_BYTES],
}

/// Size of a TLS data event without its data; a record is this plus `captured_len` bytes.
pub const TLS_DATA_EVENT_HEADER_LEN: usize = core::mem::offset_of!(TlsDataEvent, data);

/// A session's tie or end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsSessionEvent {
    /// `kind`: [`EVENT_TLS_TIE`] or [`EVENT_TLS_CLOSE`]; `fd`: as in [`TlsDataEvent`].
    pub header: EventHeader,
    pub ssl: u64,
    /// As in [`TlsDataEvent`].
    pub cookie: u64,
}

/// Key of the kernel's thread table: ids in the sidecar's PID namespace, `pid << 32 | tid`.
pub type TlsThreadKey = u64;

/// What the kernel keeps per thread of a hooked process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsThread {
    /// The session of the call in flight.
    pub ssl: u64,
    /// Its plaintext buffer, and where an `_ex` function writes the byte count.
    pub buf: u64,
    pub len_ptr: u64,
    /// The socket a socket call inside the call named: its cookie (0: none yet).
    pub cookie: u64,
    /// An untied session whose ciphertext this thread is expected to write next (its last call
    /// moved plaintext but made no socket call: a memory BIO).
    pub pending: u64,
    /// The socket's descriptor, when a socket tracepoint saw the call (-1: none).
    pub fd: i32,
    /// `TLS_FN_*` of the call in flight; 0 when none.
    pub function: u32,
}

/// Key of the kernel's session table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsSessionKey {
    /// Process id in the sidecar's PID namespace.
    pub pid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// What the kernel keeps per session.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsSession {
    /// The socket, once tied: its descriptor (socket tracepoints; -1 otherwise) and cookie.
    pub fd: i32,
    /// `SOCKET_H2*` bits of the plaintext stream, and [`TLS_SESSION_CLOSED`].
    pub flags: u32,
    pub cookie: u64,
    /// As `SocketState::h2_skip`, for the plaintext.
    pub h2_skip: [u32; 2],
}

/// `TlsSession::flags`: the session's end was reported.
pub const TLS_SESSION_CLOSED: u32 = 1 << 8;

const _: () = {
    assert!(TLS_DATA_EVENT_HEADER_LEN == 56);
    assert!(core::mem::size_of::<TlsDataEvent>() == 56 + MAX_PIECE_BYTES);
    assert!(core::mem::size_of::<TlsSessionEvent>() == 40);
    assert!(core::mem::size_of::<TlsThread>() == 48);
    assert!(core::mem::size_of::<TlsSessionKey>() == 16);
    assert!(core::mem::size_of::<TlsSession>() == 24);
    assert!(core::mem::offset_of!(TlsDataEvent, header) == 0);
    assert!(SOCKET_TLS & (SOCKET_H2 | SOCKET_H2_KNOWN << 1 | SOCKET_H2_KNOWN) == 0);
};

/// Syscall numbers and `struct pt_regs` offsets of the architecture the object is built for.
/// The raw `sys_exit` tracepoint hands over the saved registers, not typed arguments; the
/// argument registers named here still hold the arguments when the syscall returns.
#[cfg(bpf_target_arch = "x86_64")]
pub mod arch {
    pub const SYS_READ: u32 = 0;
    pub const SYS_WRITE: u32 = 1;
    pub const SYS_CLOSE: u32 = 3;
    pub const SYS_READV: u32 = 19;
    pub const SYS_WRITEV: u32 = 20;
    pub const SYS_SENDFILE: u32 = 40;
    pub const SYS_CONNECT: u32 = 42;
    pub const SYS_ACCEPT: u32 = 43;
    pub const SYS_SENDTO: u32 = 44;
    pub const SYS_RECVFROM: u32 = 45;
    pub const SYS_SENDMSG: u32 = 46;
    pub const SYS_RECVMSG: u32 = 47;
    pub const SYS_ACCEPT4: u32 = 288;
    /// Offsets in `struct pt_regs` of the syscall arguments (rdi, rsi, rdx) and the number
    /// (`orig_ax`, read as its low 32 bits like every `REG_SYSCALL_NR`).
    pub const REG_ARG0: usize = 112;
    pub const REG_ARG1: usize = 104;
    pub const REG_ARG2: usize = 96;
    pub const REG_SYSCALL_NR: usize = 120;
}

#[cfg(bpf_target_arch = "aarch64")]
pub mod arch {
    pub const SYS_CLOSE: u32 = 57;
    pub const SYS_READ: u32 = 63;
    pub const SYS_WRITE: u32 = 64;
    pub const SYS_READV: u32 = 65;
    pub const SYS_WRITEV: u32 = 66;
    pub const SYS_SENDFILE: u32 = 71;
    pub const SYS_ACCEPT: u32 = 202;
    pub const SYS_CONNECT: u32 = 203;
    pub const SYS_SENDTO: u32 = 206;
    pub const SYS_RECVFROM: u32 = 207;
    pub const SYS_SENDMSG: u32 = 211;
    pub const SYS_RECVMSG: u32 = 212;
    pub const SYS_ACCEPT4: u32 = 242;
    /// `orig_x0` (x0 itself holds the return value at exit), `regs[1..2]`, and `syscallno`;
    /// `orig_x0` follows `regs[31]`, `sp`, `pc` and `pstate`.
    pub const REG_ARG0: usize = 272;
    pub const REG_ARG1: usize = 8;
    pub const REG_ARG2: usize = 16;
    pub const REG_SYSCALL_NR: usize = 280;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding; any bit pattern
    // is valid.
    unsafe impl aya::Pod for super::SocketKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TlsThread {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TlsSessionKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TlsSession {}
}
