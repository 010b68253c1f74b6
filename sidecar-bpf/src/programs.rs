use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, bpf_pidns_info},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated,
    },
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use sidecar_bpf::{
    ConnectEvent, DATA_EVENT_HEADER_LEN, DIRECTION_EGRESS, DIRECTION_INGRESS, DataEvent,
    EVENT_CLOSE, EVENT_CONNECT, EVENT_DATA, EventHeader, InFlight, MAX_IN_FLIGHT, MAX_PAYLOAD,
    MAX_PIDS, MAX_SOCKETS, ROLE_CLIENT, ROLE_SERVER, STAT_COUNT, STAT_DROPPED, STAT_EVENTS,
    STAT_IN_FLIGHT_FULL, SocketKey, WAKEUP_BYTES, arch::*,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = 115;

/// The sidecar's PID namespace (device and inode of `/proc/self/ns/pid`), set by the loader.
#[unsafe(no_mangle)]
static PIDNS_DEV: u64 = 0;
#[unsafe(no_mangle)]
static PIDNS_INO: u64 = 0;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(sidecar_bpf::DEFAULT_RING_BYTES, 0);

/// Selected processes (namespace tgid), maintained by userspace.
#[map]
static PIDS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(MAX_PIDS, 0);

/// TCP sockets of selected processes, with their role. Filled here on accept/connect and by
/// userspace for sockets that existed before the process was selected.
#[map]
static SOCKETS: LruHashMap<SocketKey, u32> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// Arguments of syscalls between enter and exit, by kernel pid_tgid.
#[map]
static IN_FLIGHT: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(MAX_IN_FLIGHT, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Per-CPU space to assemble a data event before it is copied, trimmed, into the ring buffer.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// A data event with slack behind its payload: gathering iovecs copies at a variable offset, and
/// the verifier proves bounds on the worst case (offset and length both up to MAX_PAYLOAD).
#[repr(C)]
struct Scratch {
    event: DataEvent,
    slack: [u8; MAX_PAYLOAD],
}

/// iovec entries gathered per syscall: enough for HTTP servers that write head and body apart.
const MAX_IOVECS: u64 = 4;

fn count(stat: u32) {
    if let Some(slot) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// The current task's (tgid, pid) in the sidecar's PID namespace, or None for tasks of any other
/// namespace.
fn ns_ids() -> Option<(u32, u32)> {
    let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: reads of frozen globals and a helper writing into a local of the stated size.
    let ret = unsafe {
        let dev = core::ptr::read_volatile(&PIDNS_DEV);
        let ino = core::ptr::read_volatile(&PIDNS_INO);
        generated::bpf_get_ns_current_pid_tgid(
            dev,
            ino,
            &mut info,
            size_of::<bpf_pidns_info>() as u32,
        )
    };
    (ret == 0).then_some((info.tgid, info.pid))
}

fn reg(regs: *const u8, offset: usize) -> u64 {
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *`; the read is checked by the helper.
    unsafe { bpf_probe_read_kernel(regs.add(offset).cast::<u64>()) }.unwrap_or(0)
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

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let nr = ctx.arg::<u64>(1) as u32;
    if !is_tracked(nr) {
        return 0;
    }
    let Some((pid, tid)) = ns_ids() else {
        return 0;
    };
    if PIDS.get_ptr(pid).is_none() {
        return 0;
    }
    let regs = ctx.arg::<*const u8>(0);
    let fd = reg(regs, REG_ARG0) as i32;
    let key = SocketKey { pid, fd };
    let start_ns = unsafe { bpf_ktime_get_ns() };
    if nr == SYS_CLOSE {
        if SOCKETS.get_ptr(key).is_some() {
            let _ = SOCKETS.remove(key);
            let header = header(EVENT_CLOSE, pid, tid, fd, start_ns);
            emit(&header);
        }
        return 0;
    }
    if is_data(nr) && SOCKETS.get_ptr(key).is_none() {
        return 0;
    }
    let args = InFlight {
        start_ns,
        ptr: reg(regs, REG_ARG1),
        aux: reg(regs, REG_ARG2),
        syscall: nr,
        fd,
        pid,
        tid,
    };
    if IN_FLIGHT
        .insert(bpf_get_current_pid_tgid(), args, 0)
        .is_err()
    {
        count(STAT_IN_FLIGHT_FULL);
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs = ctx.arg::<*const u8>(0);
    let nr = reg(regs, REG_SYSCALL_NR) as u32;
    if !is_tracked(nr) || nr == SYS_CLOSE {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let Some(args) = IN_FLIGHT.get_ptr(id) else {
        return 0;
    };
    // SAFETY: the value was found just now; copy it out before removing the entry.
    let args = unsafe { *args };
    let _ = IN_FLIGHT.remove(id);
    if args.syscall != nr {
        return 0;
    }
    let ret = ctx.arg::<i64>(1);
    match nr {
        SYS_ACCEPT | SYS_ACCEPT4 if ret >= 0 => on_connected(&args, ret as i32, ROLE_SERVER),
        SYS_CONNECT if ret == 0 || ret == -EINPROGRESS => on_connected(&args, args.fd, ROLE_CLIENT),
        _ if ret > 0 && is_data(nr) => on_data(&args, ret as u64),
        _ => {}
    }
    0
}

fn header(kind: u32, pid: u32, tid: u32, fd: i32, timestamp_ns: u64) -> EventHeader {
    EventHeader {
        kind,
        pid,
        tid,
        fd,
        timestamp_ns,
    }
}

/// Wake the reader only once this much is queued: it also drains on a short timer
/// (`sidecar_bpf::DRAIN_INTERVAL_MS`), so under load one wakeup carries many events instead of
/// costing two context switches each.
fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

fn emit<T>(event: &T) {
    if EVENTS.output::<T>(event, wakeup_flags()).is_ok() {
        count(STAT_EVENTS);
    } else {
        count(STAT_DROPPED);
    }
}

/// A socket accepted (server) or connected (client): track it and tell userspace the peer.
fn on_connected(args: &InFlight, fd: i32, role: u32) {
    let mut event = ConnectEvent {
        header: header(EVENT_CONNECT, args.pid, args.tid, fd, unsafe {
            bpf_ktime_get_ns()
        }),
        role,
        ..ConnectEvent::default()
    };
    let addr = args.ptr as *const u8;
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
    let key = SocketKey { pid: args.pid, fd };
    let _ = SOCKETS.insert(key, role, 0);
    emit(&event);
}

/// Bytes moved through a tracked socket: copy a bounded prefix into the ring buffer.
fn on_data(args: &InFlight, ret: u64) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot is owned by this program for the duration of the run.
    let scratch = unsafe { &mut *scratch };
    let event = &mut scratch.event;
    let nr = args.syscall;
    event.header = header(EVENT_DATA, args.pid, args.tid, args.fd, unsafe {
        bpf_ktime_get_ns()
    });
    event.direction = match nr {
        SYS_READ | SYS_READV | SYS_RECVFROM | SYS_RECVMSG => DIRECTION_INGRESS,
        _ => DIRECTION_EGRESS,
    };
    event.total_len = if ret > u32::MAX as u64 {
        u32::MAX
    } else {
        ret as u32
    };
    event.start_ns = args.start_ns;
    event._pad = 0;
    let payload = event.payload.as_mut_ptr();
    let captured = match nr {
        SYS_READ | SYS_WRITE | SYS_RECVFROM | SYS_SENDTO => copy_user(payload, args.ptr, ret),
        SYS_READV | SYS_WRITEV => copy_iovecs(payload, args.ptr, args.aux, ret),
        SYS_RECVMSG | SYS_SENDMSG => {
            // struct msghdr: msg_iov at offset 16, msg_iovlen at 24.
            let iov = unsafe { bpf_probe_read_user((args.ptr + 16) as *const u64) }.unwrap_or(0);
            let count = unsafe { bpf_probe_read_user((args.ptr + 24) as *const u64) }.unwrap_or(0);
            copy_iovecs(payload, iov, count, ret)
        }
        // sendfile moves file bytes the process never sees: count them, copy nothing.
        _ => 0,
    };
    event.captured_len = captured as u32;
    let size = DATA_EVENT_HEADER_LEN + captured as usize;
    // SAFETY: `size` is at most size_of::<DataEvent>(); the bytes are the scratch slot's.
    let bytes =
        unsafe { core::slice::from_raw_parts((event as *const DataEvent).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flags()).is_ok() {
        count(STAT_EVENTS);
    } else {
        count(STAT_DROPPED);
    }
}

/// Copies up to `MAX_PAYLOAD` bytes (and at most `len`) from user memory; returns how many.
fn copy_user(dst: *mut u8, src: u64, len: u64) -> u64 {
    let mut n = len;
    if n > MAX_PAYLOAD as u64 {
        n = MAX_PAYLOAD as u64;
    }
    if src == 0 || n == 0 {
        return 0;
    }
    // SAFETY: `dst` points into the scratch slot with at least MAX_PAYLOAD bytes behind it.
    let rc = unsafe {
        generated::bpf_probe_read_user(dst.cast::<c_void>(), n as u32, src as *const c_void)
    };
    if rc == 0 { n } else { 0 }
}

/// Gathers the leading bytes of an iovec array (the first `MAX_IOVECS`), so a head written as
/// several pieces (status line, headers, body) is seen whole up to `MAX_PAYLOAD` bytes.
fn copy_iovecs(payload: *mut u8, iov: u64, count: u64, ret: u64) -> u64 {
    if iov == 0 {
        return 0;
    }
    let mut left = if ret > MAX_PAYLOAD as u64 {
        MAX_PAYLOAD as u64
    } else {
        ret
    };
    let mut offset = 0u64;
    for i in 0..MAX_IOVECS {
        if i >= count || left == 0 || offset >= MAX_PAYLOAD as u64 {
            break;
        }
        let entry = iov + i * 16;
        let base = unsafe { bpf_probe_read_user(entry as *const u64) }.unwrap_or(0);
        let len = unsafe { bpf_probe_read_user((entry + 8) as *const u64) }.unwrap_or(0);
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}
