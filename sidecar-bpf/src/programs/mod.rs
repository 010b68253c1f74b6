//! What every program of the object shares: the sidecar's PID namespace filter, the selected
//! processes, the ring buffer with its wakeup policy, counters, and bounded copies of user memory.
//! Each capture mode's programs live in a submodule of their own.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, bpf_pidns_info},
    helpers::{bpf_ktime_get_ns, generated},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use sidecar_bpf::{
    DataEvent, EventHeader, MAX_PAYLOAD, MAX_PIDS, MAX_PIECE_BYTES, PiecesEvent, STAT_COUNT,
    STAT_DROPPED, STAT_EVENTS,
};

mod cgroup;
mod h2;
mod syscalls;
mod tls;

/// The sidecar's PID namespace (device and inode of `/proc/self/ns/pid`), set by the loader.
#[unsafe(no_mangle)]
static PIDNS_DEV: u64 = 0;
#[unsafe(no_mangle)]
static PIDNS_INO: u64 = 0;
/// Queued bytes at which the reader is woken, set by the loader (0: the kernel's default, a
/// wakeup whenever the reader had caught up).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(sidecar_bpf::DEFAULT_RING_BYTES, 0);

/// Selected processes (namespace tgid), maintained by userspace.
#[map]
static PIDS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(MAX_PIDS, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Entries non-zero once a socket was put into one of two socket tables of the pod-scoped
/// programs, by `USED_*` index: until then the `cgroup_skb` programs skip looking sockets up in
/// that table, a hash lookup on every skb that pods without TLS sessions or HTTP/2 do not need.
/// Never cleared: a set-only flag needs no atomic update (the target has no 64-bit atomics in
/// `core`), and a cleared one could race with an insert.
#[map]
static USED: Array<u32> = Array::with_max_entries(2, 0);
/// [`USED`] index of the sockets tied to hooked TLS sessions (`TLS_SOCKETS`).
const USED_TLS_SOCKETS: u32 = 0;
/// [`USED`] index of the sockets followed frame by frame (`SEGMENT_H2`).
const USED_H2_SOCKETS: u32 = 1;

/// Whether a socket was ever put into the table of [`USED`] index `index`.
#[inline(always)]
fn table_used(index: u32) -> bool {
    USED.get(index).is_some_and(|used| *used != 0)
}

/// Notes that a socket was put into the table of [`USED`] index `index`.
#[inline(always)]
fn mark_used(index: u32) {
    if let Some(used) = USED.get_ptr_mut(index) {
        // SAFETY: an entry of an array map, valid for the program's run; written once (a
        // concurrent write stores the same value).
        unsafe {
            if *used == 0 {
                *used = 1;
            }
        }
    }
}

/// Per-CPU space to assemble a data event before it is copied, trimmed, into the ring buffer.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU space for the buffer list of the syscall being captured.
#[map]
static REGIONS: PerCpuArray<h2::Regions> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU space to assemble a pieced event (HTTP/2 frames) before it is copied, trimmed.
#[map]
static PIECES_SCRATCH: PerCpuArray<PiecesScratch> = PerCpuArray::with_max_entries(1, 0);

/// A pieced event with slack behind its data, as [`Scratch`] has for the same reason.
#[repr(C)]
struct PiecesScratch {
    event: PiecesEvent,
    slack: [u8; MAX_PIECE_BYTES],
    cursor: h2::Cursor,
}

/// A data event with slack behind its payload: gathering iovecs copies at a variable offset, and
/// the verifier proves bounds on the worst case (offset and length both up to MAX_PAYLOAD).
#[repr(C)]
struct Scratch {
    event: DataEvent,
    slack: [u8; MAX_PAYLOAD],
}

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

/// The current task's (tgid, pid) in the sidecar's namespace, if it is of a selected process.
fn selected() -> Option<(u32, u32)> {
    selected_flags().map(|(pid, tid, _)| (pid, tid))
}

/// As [`selected`], with the process's `PID_*` bits.
fn selected_flags() -> Option<(u32, u32, u32)> {
    let (pid, tid) = ns_ids()?;
    let flags = PIDS.get_ptr(pid)?;
    // SAFETY: the entry was found just now; a u32 read.
    Some((pid, tid, unsafe { *flags }))
}

/// Whether process `pid` (sidecar namespace) has TLS uprobes attached.
fn tls_hooked(pid: u32) -> bool {
    // SAFETY: a u32 read of an entry found just now.
    PIDS.get_ptr(pid)
        .is_some_and(|flags| unsafe { *flags } & sidecar_bpf::PID_TLS != 0)
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

/// The reader drains on a short timer (`sidecar_bpf::DRAIN_INTERVAL_MS`) and is woken only when
/// a record takes the queue across a multiple of [`WAKEUP_BYTES`], so under load one wakeup
/// carries hundreds of events. Forcing a wakeup for every record while the queue stayed above
/// the threshold (until the reader caught up) queued the kernel's wakeup work over and over:
/// measured under nginx + wrk, that cost the app 120-150 ns of BPF time per request.
fn wakeup_flags(size: u64) -> u64 {
    // SAFETY: a read of a frozen global.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if threshold == 0 {
        return 0;
    }
    let queued = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // Each record also takes an 8-byte header in the ring.
    if (queued + size + 8) / threshold > queued / threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

fn emit<T: ?Sized>(event: &T) {
    let size = core::mem::size_of_val(event) as u64;
    if EVENTS.output::<T>(event, wakeup_flags(size)).is_ok() {
        count(STAT_EVENTS);
    } else {
        count(STAT_DROPPED);
    }
}

fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}
