//! TLS plaintext from uprobes on the `SSL_*` functions of OpenSSL-compatible libraries. One entry
//! program and one return program serve every hooked function: the attach cookie names it.
//!
//! The plaintext is copied where the socket syscalls would copy ciphertext: `SSL_write*` at its
//! return (the buffer is the caller's and unchanged), `SSL_read*` at its return (once filled).
//! A session (`SSL*`) is tied to its socket by the socket calls its thread makes inside an
//! `SSL_*` call: the socket tracepoints of that call name the descriptor ([`on_socket_call`]),
//! a `cgroup_skb` egress in the thread's context names the cookie ([`on_egress`]). A library that
//! moves ciphertext through memory buffers (Node.js) makes no socket call inside: its thread
//! writes the records right after, so the thread's next write of a TLS record to a socket not
//! tied yet ties the last untied session it called into (`TlsThread::pending`). Data of a session
//! not tied yet goes out with no socket; userspace holds it until the tie.
//!
//! Uprobe programs run with preemption enabled, so they use scratch space of their own rather
//! than the socket programs' (which a preempting task's syscall could overwrite).

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_probe_read_user, generated},
    macros::{map, uprobe, uretprobe},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
use sidecar_bpf::{
    DIRECTION_EGRESS, DIRECTION_INGRESS, EVENT_TLS_CLOSE, EVENT_TLS_DATA, EVENT_TLS_TIE,
    MAX_PAYLOAD, MAX_TLS_SESSIONS, MAX_TLS_THREADS, SOCKET_H2, SOCKET_H2_KNOWN, SOCKET_TLS,
    STAT_DROPPED, SocketState, TLS_DATA_EVENT_HEADER_LEN, TLS_FN_FREE, TLS_FN_HANDSHAKE,
    TLS_FN_READ, TLS_FN_READ_EX, TLS_FN_SHUTDOWN, TLS_FN_WRITE, TLS_FN_WRITE_EX,
    TLS_SESSION_CLOSED, TlsDataEvent, TlsSession, TlsSessionEvent, TlsSessionKey, TlsThread,
    TlsThreadKey,
};

use super::h2::{self, Cursor, Regions};
use super::{USED_TLS_SOCKETS, copy_user, count, emit, header, mark_used, now, ns_ids, table_used};

/// Per thread: the call in flight and a pending tie.
#[map]
static TLS_THREADS: LruHashMap<TlsThreadKey, TlsThread> =
    LruHashMap::with_max_entries(MAX_TLS_THREADS, 0);

/// Per session: its socket once tied, and its HTTP/2 frame position.
#[map]
static TLS_SESSIONS: LruHashMap<TlsSessionKey, TlsSession> =
    LruHashMap::with_max_entries(MAX_TLS_SESSIONS, 0);

/// Cookies of sockets tied to a session, for the pod-scoped programs (the socket tracepoints
/// mark `SocketState` instead): a pending tie never takes a socket another session has.
#[map]
static TLS_SOCKETS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_TLS_SESSIONS, 0);

/// Entry 0 is non-zero once a process of the pod has TLS hooks (set by userspace): until then the
/// pod-scoped programs skip every TLS check.
#[map]
static TLS_CAPTURE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static TLS_SCRATCH: PerCpuArray<TlsScratch> = PerCpuArray::with_max_entries(1, 0);

/// A data event with slack behind its data (for the verifier's worst case, as `PiecesScratch`),
/// the walk's cursor and the one buffer a call moves.
#[repr(C)]
struct TlsScratch {
    /// Non-zero while a run on this CPU fills the slot (see [`capture`]).
    busy: u64,
    event: TlsDataEvent,
    slack: [u8; sidecar_bpf::MAX_PIECE_BYTES],
    cursor: Cursor,
    regions: Regions,
}

/// First bytes of a TLS record: content type (change_cipher_spec 20, alert 21, handshake 22,
/// application_data 23), then a 3.x version.
pub(super) fn is_record(head: &[u8; 3]) -> bool {
    (20..=23).contains(&head[0]) && head[1] == 3 && head[2] <= 4
}

fn thread_key(pid: u32, tid: u32) -> TlsThreadKey {
    (u64::from(pid) << 32) | u64::from(tid)
}

fn tied(session: &TlsSession) -> bool {
    session.fd >= 0 || session.cookie != 0
}

/// Entry of every hooked function: remember the call (reads and writes), or end the session.
#[uprobe]
pub fn ssl_entry(ctx: ProbeContext) -> u32 {
    let function = attach_cookie(&ctx);
    let Some((pid, tid)) = ns_ids() else {
        return 0;
    };
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    if ssl == 0 {
        return 0;
    }
    if function == TLS_FN_SHUTDOWN || function == TLS_FN_FREE {
        end_session(pid, tid, ssl, function == TLS_FN_FREE);
        return 0;
    }
    let key = thread_key(pid, tid);
    let call = TlsThread {
        ssl,
        buf: ctx.arg(1).unwrap_or(0),
        len_ptr: if function == TLS_FN_READ_EX || function == TLS_FN_WRITE_EX {
            ctx.arg(3).unwrap_or(0)
        } else {
            0
        },
        cookie: 0,
        pending: 0,
        fd: -1,
        function,
    };
    match TLS_THREADS.get_ptr_mut(key) {
        Some(thread) => {
            // SAFETY: the entry was found just now; only this thread writes it.
            let thread = unsafe { &mut *thread };
            // A call left in flight is one whose return was never seen (the thread was
            // cancelled in it): this one replaces it. The hooked functions do not call each
            // other (`SSL_connect` and `SSL_accept` are not hooked; they call
            // `SSL_do_handshake`).
            *thread = TlsThread {
                pending: thread.pending,
                ..call
            };
        }
        None => {
            // A full table (LRU) drops the oldest thread's state: at worst one tie is missed.
            let _ = TLS_THREADS.insert(key, call, 0);
        }
    }
    0
}

/// Return of `SSL_read*`, `SSL_write*` and `SSL_do_handshake`: tie the session to the socket the
/// call used, and copy the plaintext.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    let function = attach_cookie(&ctx);
    let Some((pid, tid)) = ns_ids() else {
        return 0;
    };
    let Some(thread) = TLS_THREADS.get_ptr_mut(thread_key(pid, tid)) else {
        return 0;
    };
    // SAFETY: the entry was found just now; only this thread writes it.
    let thread = unsafe { &mut *thread };
    if thread.function != function {
        return 0;
    }
    thread.function = 0;
    let ssl = thread.ssl;
    let ret = ctx.ret::<i32>();
    let len = match function {
        TLS_FN_READ | TLS_FN_WRITE if ret > 0 => ret as u64,
        TLS_FN_READ_EX | TLS_FN_WRITE_EX if ret == 1 && thread.len_ptr != 0 => {
            // SAFETY: user memory read through the checked helper; a failure reads as nothing.
            unsafe { bpf_probe_read_user(thread.len_ptr as *const u64) }.unwrap_or(0)
        }
        _ => 0,
    };
    let key = TlsSessionKey { pid, _pad: 0, ssl };
    let Some(session) = session(&key) else {
        return 0;
    };
    let used_socket = thread.fd >= 0 || thread.cookie != 0;
    // A descriptor the call's own syscalls named is certain; a cookie from an egress skb in
    // the thread's context only ties a session not tied yet (see `on_egress`).
    if thread.fd >= 0 || (thread.cookie != 0 && !tied(session)) {
        session.fd = thread.fd;
        session.cookie = thread.cookie;
        if thread.cookie != 0 {
            tie_socket(thread.cookie, ssl);
        }
    }
    let writes = function != TLS_FN_READ && function != TLS_FN_READ_EX;
    // Plaintext in, no socket touched: a memory BIO, whose records the thread writes next.
    if !tied(session) && writes && !used_socket && (len > 0 || function == TLS_FN_HANDSHAKE) {
        thread.pending = ssl;
    } else if thread.pending == ssl {
        thread.pending = 0;
    }
    if len == 0 {
        return 0;
    }
    let direction = if writes {
        DIRECTION_EGRESS
    } else {
        DIRECTION_INGRESS
    };
    capture(pid, tid, ssl, session, direction, thread.buf, len);
    0
}

fn attach_cookie<C: EbpfContext>(ctx: &C) -> u32 {
    // SAFETY: the program's own context.
    unsafe { generated::bpf_get_attach_cookie(ctx.as_ptr()) as u32 }
}

/// The session's entry, made on its first data.
fn session(key: &TlsSessionKey) -> Option<&'static mut TlsSession> {
    if TLS_SESSIONS.get_ptr_mut(key).is_none() {
        let fresh = TlsSession {
            fd: -1,
            ..TlsSession::default()
        };
        TLS_SESSIONS.insert(key, fresh, 0).ok()?;
    }
    // SAFETY: the entry was found or inserted just now; only the session's threads write it.
    TLS_SESSIONS.get_ptr_mut(key).map(|s| unsafe { &mut *s })
}

/// `SSL_shutdown` or `SSL_free`: report the end once; forget the session when it is freed (the
/// allocator may hand its address to the next session).
fn end_session(pid: u32, tid: u32, ssl: u64, freed: bool) {
    let key = TlsSessionKey { pid, _pad: 0, ssl };
    let Some(session) = TLS_SESSIONS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: the entry was found just now.
    let session = unsafe { &mut *session };
    if session.flags & TLS_SESSION_CLOSED == 0 {
        session.flags |= TLS_SESSION_CLOSED;
        emit(&TlsSessionEvent {
            header: header(EVENT_TLS_CLOSE, pid, tid, session.fd, now()),
            ssl,
            cookie: session.cookie,
        });
    }
    if freed {
        if session.cookie != 0 {
            let _ = TLS_SOCKETS.remove(session.cookie);
        }
        let _ = TLS_SESSIONS.remove(key);
    }
}

/// A socket call of a thread of a selected process (socket tracepoints), succeeded or not, on
/// descriptor `fd` of socket `cookie`. True when the call moves the ciphertext of a hooked
/// session: the caller does not capture it.
pub(super) fn on_socket_call(
    pid: u32,
    tid: u32,
    fd: i32,
    egress: bool,
    head: impl FnOnce() -> [u8; 3],
    state: &mut SocketState,
) -> bool {
    let Some(thread) = TLS_THREADS.get_ptr_mut(thread_key(pid, tid)) else {
        return false;
    };
    // SAFETY: the entry was found just now; only this thread writes it.
    let thread = unsafe { &mut *thread };
    if thread.function != 0 {
        thread.fd = fd;
        thread.cookie = state.cookie;
        state.flags |= SOCKET_TLS;
        return true;
    }
    if egress && thread.pending != 0 && state.flags & SOCKET_TLS == 0 && is_record(&head()) {
        tie_pending(pid, tid, thread, fd, state.cookie);
        state.flags |= SOCKET_TLS;
        return true;
    }
    false
}

/// An egress skb of an attached container sent by thread `tid` itself (pod-scoped capture),
/// whose payload starts like a TLS record ([`is_record`]; others are another socket's segment
/// sent from softirq on this thread's time, or cleartext). True when it carries the ciphertext
/// of a hooked session.
pub(super) fn on_egress(pid: u32, tid: u32, cookie: u64) -> bool {
    let Some(thread) = TLS_THREADS.get_ptr_mut(thread_key(pid, tid)) else {
        return false;
    };
    // SAFETY: the entry was found just now; only this thread writes it (its egress runs in it).
    let thread = unsafe { &mut *thread };
    if thread.function != 0 {
        // The first segment of the call is its own; a later one may be another socket's, sent
        // from softirq in the thread's time.
        if thread.cookie == 0 {
            thread.cookie = cookie;
        }
        return thread.cookie == cookie;
    }
    if thread.pending != 0 && !tied_socket(cookie) {
        tie_pending(pid, tid, thread, -1, cookie);
        return true;
    }
    false
}

/// Whether any process of the pod has TLS hooks (pod-scoped capture).
pub(super) fn capturing() -> bool {
    TLS_CAPTURE.get(0).is_some_and(|on| *on != 0)
}

/// Whether socket `cookie` carries a hooked session (pod-scoped capture): its ciphertext, in
/// either direction and whoever sends it, is not captured.
pub(super) fn tied_socket(cookie: u64) -> bool {
    table_used(USED_TLS_SOCKETS) && TLS_SOCKETS.get_ptr(cookie).is_some()
}

/// Notes socket `cookie` as carrying session `ssl` (see [`super::USED`]).
fn tie_socket(cookie: u64, ssl: u64) {
    if TLS_SOCKETS.insert(cookie, ssl, 0).is_ok() {
        mark_used(USED_TLS_SOCKETS);
    }
}

/// Ties the thread's pending session to the socket it writes a record to, and says so.
fn tie_pending(pid: u32, tid: u32, thread: &mut TlsThread, fd: i32, cookie: u64) {
    let ssl = thread.pending;
    thread.pending = 0;
    let key = TlsSessionKey { pid, _pad: 0, ssl };
    let Some(session) = session(&key) else {
        return;
    };
    session.fd = fd;
    session.cookie = cookie;
    if cookie != 0 {
        tie_socket(cookie, ssl);
    }
    emit(&TlsSessionEvent {
        header: header(EVENT_TLS_TIE, pid, tid, fd, now()),
        ssl,
        cookie,
    });
}

/// Copies the plaintext of one call into a data record: HTTP/2 frame by frame when the session
/// speaks it (or a buffer too long for the bounded copy starts like frames), else a prefix.
///
/// Uprobe programs can be preempted (they run with migration disabled, not preemption), so a
/// thread that runs the program on this CPU while another's run is preempted mid-copy would share
/// the per-CPU slot: the slot is claimed for the run, and a run that finds it claimed drops its
/// copy (counted with the ring buffer's drops) rather than corrupt the other's.
fn capture(
    pid: u32,
    tid: u32,
    ssl: u64,
    session: &mut TlsSession,
    direction: u32,
    buf: u64,
    len: u64,
) {
    let Some(scratch) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU slot, claimed below before any other use; volatile so the claim is
    // neither merged with nor moved across the copies it guards.
    let scratch = unsafe { &mut *scratch };
    if unsafe { core::ptr::read_volatile(&scratch.busy) } != 0 {
        count(STAT_DROPPED);
        return;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&mut scratch.busy, 1) };
    fill(scratch, pid, tid, ssl, session, direction, buf, len);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&mut scratch.busy, 0) };
}

/// [`capture`] into the claimed slot (inlined: a BPF call takes at most five arguments).
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "capture's arguments and the slot"
)]
fn fill(
    scratch: &mut TlsScratch,
    pid: u32,
    tid: u32,
    ssl: u64,
    session: &mut TlsSession,
    direction: u32,
    buf: u64,
    len: u64,
) {
    let event = &mut scratch.event;
    event.header = header(EVENT_TLS_DATA, pid, tid, session.fd, now());
    event.ssl = ssl;
    event.cookie = session.cookie;
    event.direction = direction;
    event.total_len = if len > u64::from(u32::MAX) {
        u32::MAX
    } else {
        len as u32
    };
    let regions = &mut scratch.regions;
    regions.vecs[0] = buf;
    regions.vecs[1] = len;
    regions.count = 1;
    regions.total = len;
    regions.lead = 0;
    let dir = (direction & 1) as usize;
    let known = SOCKET_H2_KNOWN << dir;
    let h2 = session.flags & SOCKET_H2 != 0;
    if h2 || len > MAX_PAYLOAD as u64 {
        let start = if session.flags & known != 0 {
            u64::from(session.h2_skip[dir & 1])
        } else {
            0
        };
        if frames(scratch, start, session, dir) {
            return;
        }
        session.flags &= !known;
    }
    let event = &mut scratch.event;
    let captured = copy_user(event.data.as_mut_ptr(), buf, len);
    // SAFETY: `captured` bytes of the scratch slot were filled just now (at most MAX_PAYLOAD).
    let prefix = unsafe { core::slice::from_raw_parts(event.data.as_ptr(), captured as usize) };
    if !h2 && h2::is_preface(prefix) {
        // The client preface: the session is HTTP/2 (chosen by ALPN), followed frame by frame
        // from the frames behind the preface in this very call.
        session.flags |= SOCKET_H2;
        scratch.regions.lead = h2::PREFACE_LEN;
        if frames(scratch, h2::PREFACE_LEN, session, dir) {
            return;
        }
        // The walk wrote over the prefix.
        copy_user(scratch.event.data.as_mut_ptr(), buf, len);
    }
    emit_data(&mut scratch.event, captured as u32, 0);
}

/// Walks the frames of the call into the scratch event and emits it; false when the walk found
/// nothing to go on (as `syscalls::capture_frames`).
fn frames(scratch: &mut TlsScratch, start: u64, session: &mut TlsSession, dir: usize) -> bool {
    let cursor = &raw mut scratch.cursor;
    let walk = h2::walk(
        &scratch.regions,
        start,
        &mut scratch.event.data,
        cursor,
        h2::LOOP_HELPER,
    );
    if !walk.settle(&mut session.flags, &mut session.h2_skip, dir) {
        return false;
    }
    emit_data(&mut scratch.event, walk.captured, walk.pieces);
    true
}

fn emit_data(event: &mut TlsDataEvent, captured: u32, pieces: u32) {
    event.captured_len = captured;
    event.piece_count = pieces;
    let mut size = TLS_DATA_EVENT_HEADER_LEN + captured as usize;
    if size > size_of::<TlsDataEvent>() {
        size = size_of::<TlsDataEvent>();
    }
    // SAFETY: `size` is at most size_of::<TlsDataEvent>(); the bytes are the scratch slot's.
    let bytes =
        unsafe { core::slice::from_raw_parts((event as *const TlsDataEvent).cast::<u8>(), size) };
    emit(bytes);
}
