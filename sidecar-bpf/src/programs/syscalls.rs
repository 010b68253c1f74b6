//! Capture on the kernel's socket tracepoints (preferred) or on `sys_exit`: programs that run
//! for the socket I/O of every task on the node and turn away all but the selected processes.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user, generated},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::LruHashMap,
    programs::{BtfTracePointContext, RawTracePointContext},
};
use sidecar_bpf::{
    ConnectEvent, DATA_EVENT_HEADER_LEN, DIRECTION_EGRESS, DIRECTION_INGRESS, DataEvent,
    EVENT_CLOSE, EVENT_CONNECT, EVENT_DATA, EVENT_PIECES, MAX_PAYLOAD, MAX_SOCKETS, PID_TLS,
    PIECES_EVENT_HEADER_LEN, PiecesEvent, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, SOCKET_H2,
    SOCKET_H2_KNOWN, SOCKET_REUSED, SOCKET_TLS, SocketKey, SocketState, arch::*, sock_common,
};

use super::h2::{self, MAX_REGIONS, Regions};
use super::{
    PIECES_SCRATCH, REGIONS, SCRATCH, copy_user, emit, header, now, selected, selected_flags, tls,
};

/// Steps of an HTTP/2 frame walk under `sys_exit` ([`h2::walk`]): that program also handles
/// accept, connect and close, and with a full walk the verifier's paths through it pass its
/// million instructions; a short walk still finds the frames of all but the busiest writes.
const SYS_EXIT_WALK_STEPS: u32 = 40;

/// Buffers a prefix copy gathers: enough for HTTP servers that write head and body apart.
const PREFIX_REGIONS: usize = 8;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = 115;
const MSG_PEEK: i32 = 2;

/// TCP sockets of selected processes, with their role. Filled here (on accept/connect, or on a
/// socket's first data) and by userspace for sockets that existed before the process was selected.
#[map]
static SOCKETS: LruHashMap<SocketKey, SocketState> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// The `struct pt_regs` of a syscall (handed over by `sys_exit`, or the current task's), read at
/// the offsets of `sidecar_bpf::arch`.
trait Regs {
    fn read<T: Copy + Default>(&self, offset: usize) -> T;
}

/// Under a raw tracepoint the pointer is opaque to the verifier: reads go through the helper.
struct ProbedRegs(*const u8);

impl Regs for ProbedRegs {
    fn read<T: Copy + Default>(&self, offset: usize) -> T {
        // SAFETY: the tracepoint's register pointer; the helper checks the read.
        unsafe { bpf_probe_read_kernel(self.0.add(offset).cast::<T>()) }.unwrap_or_default()
    }
}

/// Under a BTF tracepoint the verifier knows the pointer's type and checks each load against
/// the kernel's `struct pt_regs`, so fields are plain loads: no helper call per syscall.
struct BtfRegs(*const u8);

impl BtfRegs {
    /// The registers the current task entered its syscall with.
    fn current() -> Self {
        // SAFETY: helpers without memory arguments; the result is a `struct pt_regs` pointer the
        // verifier types through BTF.
        Self(
            unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) }
                as *const u8,
        )
    }
}

impl Regs for BtfRegs {
    fn read<T: Copy + Default>(&self, offset: usize) -> T {
        // SAFETY: a load inside `struct pt_regs`, bounds-checked by the verifier through BTF.
        unsafe { core::ptr::read(self.0.add(offset).cast::<T>()) }
    }
}

fn is_data(nr: u32) -> bool {
    matches!(
        nr,
        SYS_READ
            | SYS_WRITE
            | SYS_READV
            | SYS_WRITEV
            | SYS_RECVFROM
            | SYS_SENDTO
            | SYS_RECVMSG
            | SYS_SENDMSG
            | SYS_SENDFILE
    )
}

fn is_tracked(nr: u32) -> bool {
    is_data(nr) || matches!(nr, SYS_ACCEPT | SYS_ACCEPT4 | SYS_CONNECT | SYS_CLOSE)
}

/// A finished syscall of a selected process, read from the registers at exit.
struct Call {
    nr: u32,
    pid: u32,
    tid: u32,
    fd: i32,
    /// Buffer, iovec array, msghdr or sockaddr pointer, depending on `nr`.
    ptr: u64,
    /// The iovec count for readv/writev.
    aux: u64,
    ret: i64,
    /// Steps a frame walk of this call may take.
    walk_steps: u32,
    /// The process has TLS hooks (`PID_TLS`).
    tls: bool,
}

impl Call {
    fn read<R: Regs>(regs: &R, nr: u32, pid: u32, tid: u32, ret: i64) -> Self {
        Self {
            nr,
            pid,
            tid,
            fd: regs.read::<u64>(REG_ARG0) as i32,
            ptr: regs.read::<u64>(REG_ARG1),
            aux: regs.read::<u64>(REG_ARG2),
            ret,
            walk_steps: SYS_EXIT_WALK_STEPS,
            tls: false,
        }
    }

    /// The [`SOCKETS`] key of one of the calling process's descriptors.
    fn socket(&self, fd: i32) -> SocketKey {
        SocketKey { pid: self.pid, fd }
    }
}

/// Only `sys_exit` is hooked: at exit the saved registers still hold the arguments and the
/// buffers hold the bytes moved, so one program run per syscall does. A `sys_enter` program
/// would double the per-syscall cost every task on the node pays while the sidecar runs.
///
/// Preferred form: a BTF tracepoint (kernels with BTF), whose register reads are plain loads.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    // The tracepoint's arguments are (struct pt_regs *regs, long ret).
    on_exit(&BtfRegs(ctx.arg::<*const u8>(0)), ctx.arg::<i64>(1))
}

/// Fallback for kernels without BTF: the same program as a raw tracepoint.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    on_exit(&ProbedRegs(ctx.arg::<*const u8>(0)), ctx.arg::<i64>(1))
}

fn on_exit<R: Regs>(regs: &R, ret: i64) -> i32 {
    let nr = regs.read::<u32>(REG_SYSCALL_NR);
    if !is_tracked(nr) {
        return 0;
    }
    // Failed calls move nothing (EAGAIN reads are common); a non-blocking connect still counts.
    if ret < 0 && !(nr == SYS_CONNECT && ret == -EINPROGRESS) {
        return 0;
    }
    let Some((pid, tid, flags)) = selected_flags() else {
        return 0;
    };
    let call = Call {
        tls: flags & PID_TLS != 0,
        ..Call::read(regs, nr, pid, tid, ret)
    };
    match nr {
        SYS_CLOSE => on_close(&call),
        SYS_ACCEPT | SYS_ACCEPT4 => on_connected(&call, ret as i32, ROLE_SERVER),
        SYS_CONNECT => on_connected(&call, call.fd, ROLE_CLIENT),
        _ if ret > 0 => {
            if let Some(state) = SOCKETS.get_ptr_mut(call.socket(call.fd)) {
                // SAFETY: the entry was found just now; a concurrent update of it is benign.
                let state = unsafe { &mut *state };
                if !tls_ciphertext(&call, state) {
                    capture(&call, state);
                }
            }
        }
        _ => {}
    }
    0
}

/// Socket tracepoints (Linux 6.3+, with BTF): preferred over `sys_exit` because they run only
/// for socket I/O. A `sys_exit` hook puts every task of the node on the kernel's slow syscall
/// path and runs a program for each of its syscalls; these leave all other syscalls alone.
/// They fire inside the read-like or write-like syscall once the bytes are moved, and the
/// task's saved registers name the descriptor and buffers as at `sys_exit`.
///
/// Arguments of both: (struct sock *sk, int ret, int flags).
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv(ctx: BtfTracePointContext) -> i32 {
    // A peek leaves the bytes queued: they are captured when really read.
    if ctx.arg::<i32>(2) & MSG_PEEK != 0 {
        return 0;
    }
    on_sock_io(ctx.arg::<*const u8>(0), ctx.arg::<i32>(1))
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send(ctx: BtfTracePointContext) -> i32 {
    on_sock_io(ctx.arg::<*const u8>(0), ctx.arg::<i32>(1))
}

fn on_sock_io(sk: *const u8, ret: i32) -> i32 {
    // Most socket I/O on the node is other pods': one helper call turns it away.
    let Some((pid, tid, flags)) = selected_flags() else {
        return 0;
    };
    // A failed call still ties a TLS session to its socket (an `SSL_read` that found nothing
    // to read yet), in a process with TLS hooks.
    let tls = flags & PID_TLS != 0;
    if ret <= 0 && !tls {
        return 0;
    }
    let regs = BtfRegs::current();
    let nr = regs.read::<u32>(REG_SYSCALL_NR);
    // Socket I/O outside these syscalls (io_uring, sendmmsg, the kernel's own) has no buffer
    // in the registers to copy from.
    if !is_data(nr) {
        return 0;
    }
    let call = Call {
        walk_steps: h2::LOOP_HELPER,
        tls,
        ..Call::read(&regs, nr, pid, tid, i64::from(ret))
    };
    if let Some(state) = adopt(&call, sk) {
        // SAFETY: the entry was found or inserted just now; a concurrent update is benign.
        let state = unsafe { &mut *state };
        if !tls_ciphertext(&call, state) && ret > 0 {
            capture(&call, state);
        }
    }
    0
}

/// Whether the call moves TLS ciphertext: a call made inside a hooked `SSL_*` call (which ties
/// that session to this socket), the write that ties a memory-BIO session, or any call on a
/// socket tied before. Its plaintext comes from the uprobes; the ciphertext is never captured.
fn tls_ciphertext(call: &Call, state: &mut SocketState) -> bool {
    let egress = direction_of(call.nr) == DIRECTION_EGRESS;
    if call.tls
        && tls::on_socket_call(
            call.pid,
            call.tid,
            call.fd,
            egress,
            || first_bytes(call),
            state,
        )
    {
        return true;
    }
    state.flags & SOCKET_TLS != 0
}

/// The first bytes a write-like call moved (zeros when they cannot be read).
fn first_bytes(call: &Call) -> [u8; 3] {
    // SAFETY (all reads): user memory read through the checked helper; a failure reads as 0.
    let base = match call.nr {
        SYS_WRITE | SYS_SENDTO => call.ptr,
        // iov[0].iov_base.
        SYS_WRITEV => unsafe { bpf_probe_read_user(call.ptr as *const u64) }.unwrap_or(0),
        SYS_SENDMSG => {
            let iov = unsafe { bpf_probe_read_user((call.ptr + 16) as *const u64) }.unwrap_or(0);
            unsafe { bpf_probe_read_user(iov as *const u64) }.unwrap_or(0)
        }
        _ => 0,
    };
    unsafe { bpf_probe_read_user(base as *const [u8; 3]) }.unwrap_or_default()
}

/// TCP state changes (Linux 4.16+, BTF form): a close(2) of a tracked socket shows as one in
/// the closing task. Arguments: (struct sock *sk, int oldstate, int newstate).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn sock_state(ctx: BtfTracePointContext) -> i32 {
    let Some((pid, tid)) = selected() else {
        return 0;
    };
    let regs = BtfRegs::current();
    let nr = regs.read::<u32>(REG_SYSCALL_NR);
    if nr != SYS_CLOSE {
        return 0;
    }
    let call = Call::read(&regs, nr, pid, tid, 0);
    let key = call.socket(call.fd);
    // Softirq work done in this task's context changes other sockets' states too (on loopback,
    // the peer's), and another thread may already have the descriptor for a new socket: only
    // the socket the entry names counts (or any, for an entry not yet seen moving data).
    let cookie = socket_cookie(ctx.arg::<*const u8>(0));
    // SAFETY: a read of the entry found just now.
    if SOCKETS.get_ptr(key).is_some_and(|state| {
        let tracked = unsafe { (*state).cookie };
        tracked == cookie || tracked == 0
    }) {
        let _ = SOCKETS.remove(key);
        emit(&header(EVENT_CLOSE, call.pid, call.tid, call.fd, now()));
    }
    0
}

fn socket_cookie(sk: *const u8) -> u64 {
    // SAFETY: a BTF-typed socket pointer from the tracepoint; the helper takes no other memory.
    unsafe { generated::bpf_get_socket_cookie(sk as *mut c_void) }
}

/// Makes sure the call's descriptor is tracked as the socket `sk`: its entry, or `None` for
/// sockets that are not followed (not TCP/IP, or not connected).
fn adopt(call: &Call, sk: *const u8) -> Option<*mut SocketState> {
    let key = call.socket(call.fd);
    let cookie = socket_cookie(sk);
    if let Some(entry) = SOCKETS.get_ptr_mut(key) {
        // SAFETY: the entry was found just now; a concurrent update of it is benign.
        let state = unsafe { &mut *entry };
        if state.cookie == cookie {
            return Some(entry);
        }
        if state.cookie == 0 {
            // Handed over by userspace, which knew its role but not its cookie.
            state.cookie = cookie;
            return Some(entry);
        }
        // Otherwise the descriptor now names another socket: the old one's close was missed.
    }
    let read_sk = |offset: usize| -> [u8; 16] {
        // SAFETY: a read inside `struct sock_common` through the checked helper.
        unsafe { bpf_probe_read_kernel(sk.add(offset).cast::<[u8; 16]>()) }.unwrap_or_default()
    };
    // family (offset 16) and the address/port words before it, in two reads.
    let head = read_sk(sock_common::DADDR);
    let tail = read_sk(sock_common::FAMILY);
    let family = u16::from_ne_bytes([tail[0], tail[1]]);
    let dport = u16::from_be_bytes([head[sock_common::DPORT], head[sock_common::DPORT + 1]]);
    let local_port = u16::from_ne_bytes([head[sock_common::NUM], head[sock_common::NUM + 1]]);
    // An unconnected socket (a UDP sendto) has no peer to follow.
    if dport == 0 {
        return None;
    }
    let mut event = ConnectEvent {
        header: header(EVENT_CONNECT, call.pid, call.tid, call.fd, now()),
        role: ROLE_UNKNOWN,
        family,
        peer_port: dport,
        local_port,
        ..ConnectEvent::default()
    };
    match family {
        AF_INET => {
            event.peer_addr[..4].copy_from_slice(&head[sock_common::DADDR..sock_common::DADDR + 4]);
            event.local_addr[..4]
                .copy_from_slice(&head[sock_common::RCV_SADDR..sock_common::RCV_SADDR + 4]);
        }
        AF_INET6 => {
            event.peer_addr = read_sk(sock_common::V6_DADDR);
            event.local_addr = read_sk(sock_common::V6_RCV_SADDR);
        }
        _ => return None,
    }
    let state = SocketState {
        role: ROLE_UNKNOWN,
        cookie,
        ..SocketState::default()
    };
    let _ = SOCKETS.insert(key, state, 0);
    emit(&event);
    SOCKETS.get_ptr_mut(key)
}

/// A tracked socket closed: forget it and tell userspace.
fn on_close(call: &Call) {
    if call.ret != 0 {
        return;
    }
    let key = call.socket(call.fd);
    let Some(state) = SOCKETS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: the entry was found just now; a concurrent update of one u32 is benign.
    let state = unsafe { &mut *state };
    if state.role & SOCKET_REUSED != 0 {
        // Another thread got this fd from accept/connect after the close released it but before
        // this program ran: the entry belongs to the new socket. Keep it, consume the mark.
        state.role &= !SOCKET_REUSED;
        return;
    }
    let _ = SOCKETS.remove(key);
    emit(&header(EVENT_CLOSE, call.pid, call.tid, call.fd, now()));
}

/// A socket accepted (server) or connected (client): track it and tell userspace the peer.
fn on_connected(call: &Call, fd: i32, role: u32) {
    let mut event = ConnectEvent {
        header: header(EVENT_CONNECT, call.pid, call.tid, fd, now()),
        role,
        ..ConnectEvent::default()
    };
    let addr = call.ptr as *const u8;
    if !addr.is_null() {
        // SAFETY: user memory is read through the checked helper; a failed read leaves zeros.
        let family = unsafe { bpf_probe_read_user(addr.cast::<u16>()) }.unwrap_or(0);
        let port = unsafe { bpf_probe_read_user(addr.add(2).cast::<u16>()) }.unwrap_or(0);
        match family {
            AF_INET => {
                let ip = unsafe { bpf_probe_read_user(addr.add(4).cast::<[u8; 4]>()) };
                if let Ok(ip) = ip {
                    event.peer_addr[..4].copy_from_slice(&ip);
                }
            }
            AF_INET6 => {
                let ip = unsafe { bpf_probe_read_user(addr.add(8).cast::<[u8; 16]>()) };
                if let Ok(ip) = ip {
                    event.peer_addr = ip;
                }
            }
            // A connect to anything but an IP address (unix sockets, netlink) is not traffic we
            // parse; an accept without an address buffer still is.
            _ if role == ROLE_CLIENT => return,
            _ => {}
        }
        event.family = family;
        event.peer_port = u16::from_be(port);
    } else if role == ROLE_CLIENT {
        return;
    }
    let key = call.socket(fd);
    // Still tracked: the close of the fd's previous socket is either lost or, on another thread,
    // not yet seen by `on_close`; the mark keeps that late close from untracking this socket.
    let state = SocketState {
        role: if SOCKETS.get_ptr(key).is_some() {
            role | SOCKET_REUSED
        } else {
            role
        },
        ..SocketState::default()
    };
    let _ = SOCKETS.insert(key, state, 0);
    emit(&event);
}

/// The buffers a data syscall moved, read from its arguments into the per-CPU [`REGIONS`]
/// slot (at most `max` of them: the prefix copy needs a few, a frame walk all); `None` for
/// sendfile, which moves file bytes the process never sees.
fn regions(call: &Call, max: u64) -> Option<&'static mut Regions> {
    let regions = REGIONS.get_ptr_mut(0)?;
    // SAFETY: the per-CPU slot is owned by this program for the duration of the run.
    let regions = unsafe { &mut *regions };
    let total = call.ret as u64;
    regions.total = total;
    regions.count = 0;
    regions.lead = 0;
    let (iov, count) = match call.nr {
        SYS_READ | SYS_WRITE | SYS_RECVFROM | SYS_SENDTO => {
            regions.vecs[0] = call.ptr;
            regions.vecs[1] = total;
            regions.count = 1;
            return Some(regions);
        }
        SYS_READV | SYS_WRITEV => (call.ptr, call.aux),
        SYS_RECVMSG | SYS_SENDMSG => {
            // struct msghdr: msg_iov at offset 16, msg_iovlen at 24.
            // SAFETY: user memory read through the checked helper; a failure reads as none.
            let iov = unsafe { bpf_probe_read_user((call.ptr + 16) as *const u64) }.unwrap_or(0);
            let count = unsafe { bpf_probe_read_user((call.ptr + 24) as *const u64) }.unwrap_or(0);
            (iov, count)
        }
        _ => return None,
    };
    if iov == 0 || count == 0 {
        return Some(regions);
    }
    let mut entries = if count > max { max } else { count };
    if entries > MAX_REGIONS as u64 {
        entries = MAX_REGIONS as u64;
    }
    // The used part of the array in one read instead of a helper call per field.
    // SAFETY: at most `MAX_REGIONS` entries of 16 bytes into an array of that size.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            regions.vecs.as_mut_ptr().cast::<c_void>(),
            (entries * 16) as u32,
            iov as *const c_void,
        )
    };
    if rc == 0 {
        regions.count = entries as usize;
    }
    Some(regions)
}

fn direction_of(nr: u32) -> u32 {
    match nr {
        SYS_READ | SYS_READV | SYS_RECVFROM | SYS_RECVMSG => DIRECTION_INGRESS,
        _ => DIRECTION_EGRESS,
    }
}

fn saturated(ret: i64) -> u32 {
    if ret > u32::MAX as i64 {
        u32::MAX
    } else {
        ret as u32
    }
}

/// Bytes moved through a tracked socket: HTTP/2 frame by frame ([`h2`]) when the socket speaks
/// it (or a write too long for the bounded copy starts like a frame), else a bounded prefix.
fn capture(call: &Call, state: &mut SocketState) {
    let direction = direction_of(call.nr);
    let dir = (direction & 1) as usize;
    let known = SOCKET_H2_KNOWN << dir;
    let h2 = state.flags & SOCKET_H2 != 0;
    let walking = h2 || call.ret as u64 > MAX_PAYLOAD as u64;
    let max = if walking { MAX_REGIONS } else { PREFIX_REGIONS } as u64;
    let Some(regions) = regions(call, max) else {
        if let Some((event, captured)) = fill_prefix(call, direction, None) {
            emit_filled(event, captured);
        }
        return;
    };
    if walking {
        let start = if state.flags & known != 0 {
            u64::from(state.h2_skip[dir & 1])
        } else {
            0
        };
        if capture_frames(call, regions, start, state) {
            return;
        }
        state.flags &= !known;
    }
    let Some((event, captured)) = fill_prefix(call, direction, Some(regions)) else {
        return;
    };
    // SAFETY: the scratch slot filled just now; `captured` is at most MAX_PAYLOAD.
    let prefix = unsafe { core::slice::from_raw_parts((*event).payload.as_ptr(), captured) };
    if !h2 && h2::is_preface(prefix) {
        // The client preface: from here on the socket is followed frame by frame, from the
        // frames behind the preface in this very syscall (a client sends its first requests
        // with it: more than the prefix holds under load).
        state.flags |= SOCKET_H2;
        // Under `sys_exit` a second walk site would take the verifier past its limit: there the
        // frames beyond the prefix of this one syscall are left to chance.
        if call.walk_steps == h2::LOOP_HELPER {
            regions.lead = h2::PREFACE_LEN;
            if capture_frames(call, regions, h2::PREFACE_LEN, state) {
                return;
            }
        }
    }
    emit_filled(event, captured);
}

/// Walks the frames of an HTTP/2 syscall into a pieced event; false when the walk found nothing
/// to go on (then a prefix is copied instead). On a socket not yet known to speak HTTP/2 only a
/// walk that accounts for every byte of the syscall, over several frames, counts.
fn capture_frames(call: &Call, regions: &Regions, start: u64, state: &mut SocketState) -> bool {
    let Some(scratch) = PIECES_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the per-CPU scratch slot is owned by this program for the duration of the run.
    let (event, cursor) = unsafe { (&mut (*scratch).event, &raw mut (*scratch).cursor) };
    let walk = h2::walk(regions, start, &mut event.data, cursor, call.walk_steps);
    let direction = direction_of(call.nr);
    let dir = (direction & 1) as usize;
    if !walk.settle(&mut state.flags, &mut state.h2_skip, dir) {
        return false;
    }
    event.header = header(EVENT_PIECES, call.pid, call.tid, call.fd, now());
    event.direction = direction;
    event.total_len = saturated(call.ret);
    event.captured_len = walk.captured;
    event.piece_count = walk.pieces;
    let mut size = PIECES_EVENT_HEADER_LEN + walk.captured as usize;
    if size > size_of::<PiecesEvent>() {
        size = size_of::<PiecesEvent>();
    }
    // SAFETY: `size` is at most size_of::<PiecesEvent>(); the bytes are the scratch slot's.
    let bytes =
        unsafe { core::slice::from_raw_parts((event as *const PiecesEvent).cast::<u8>(), size) };
    emit(bytes);
    true
}

/// Copies a bounded prefix of what the syscall moved into the data event of the scratch slot;
/// returns the event and its captured length.
fn fill_prefix(
    call: &Call,
    direction: u32,
    regions: Option<&Regions>,
) -> Option<(*const DataEvent, usize)> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU scratch slot is owned by this program for the duration of the run.
    let scratch = unsafe { &mut *scratch };
    let event = &mut scratch.event;
    event.header = header(EVENT_DATA, call.pid, call.tid, call.fd, now());
    event.direction = direction;
    event.total_len = saturated(call.ret);
    event._pad = 0;
    let captured = regions.map_or(0, |regions| {
        copy_regions(event.payload.as_mut_ptr(), regions)
    });
    event.captured_len = captured as u32;
    Some((event as *const DataEvent, captured as usize))
}

/// Emits the data event [`fill_prefix`] filled.
fn emit_filled(event: *const DataEvent, captured: usize) {
    let size = DATA_EVENT_HEADER_LEN + captured;
    if size > size_of::<DataEvent>() {
        return;
    }
    // SAFETY: `size` is at most size_of::<DataEvent>(); the bytes are the scratch slot's.
    let bytes = unsafe { core::slice::from_raw_parts(event.cast::<u8>(), size) };
    emit(bytes);
}

/// Gathers the leading bytes of the buffers, so a head written as several pieces (status line,
/// headers, body) is seen whole up to `MAX_PAYLOAD` bytes.
fn copy_regions(payload: *mut u8, regions: &Regions) -> u64 {
    let mut left = if regions.total > MAX_PAYLOAD as u64 {
        MAX_PAYLOAD as u64
    } else {
        regions.total
    };
    let mut offset = 0u64;
    for i in 0..PREFIX_REGIONS {
        if i >= regions.count || left == 0 || offset >= MAX_PAYLOAD as u64 {
            break;
        }
        let (base, len) = (regions.vecs[2 * i], regions.vecs[2 * i + 1]);
        let want = if len < left { len } else { left };
        // SAFETY: offset < MAX_PAYLOAD and each copy is at most MAX_PAYLOAD bytes; the scratch
        // slot has MAX_PAYLOAD bytes of slack after the payload for the verifier's worst case.
        let copied = copy_user(unsafe { payload.add(offset as usize) }, base, want);
        if copied != want {
            break;
        }
        offset += copied;
        left -= copied;
    }
    offset
}
