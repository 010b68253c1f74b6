//! Pod-scoped capture: programs attached to the cgroup of each app container, which the kernel
//! runs only for that cgroup's sockets. Nothing here runs for other pods' traffic, so there is no
//! PID filter and no selection lookup: the attach is the filter.
//!
//! `cgroup_skb` sees every skb of the cgroup's sockets with the IP header at offset 0: on egress
//! before GSO segmentation, on ingress after GRO. Both always return 1 (allow): app traffic is
//! never dropped or altered. `sock_ops` reports connect, establishment and close, and returns 1
//! without touching `reply`, so the kernel's own choices (initial RTO, ECN, ...) stand.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::generated,
    macros::{cgroup_skb, map, sock_ops},
    maps::{LruHashMap, PerCpuArray},
    programs::{SkBuffContext, SockOpsContext},
};
use sidecar_bpf::{
    DIRECTION_EGRESS, DIRECTION_INGRESS, EVENT_SEGMENT, EVENT_SEGMENT_PIECES, EVENT_TCP_CLOSE,
    EVENT_TCP_CONNECT, EVENT_TCP_ESTABLISHED, MAX_H2_SEGMENT_SOCKETS, MAX_PAYLOAD, MAX_PIECE_BYTES,
    ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, SEGMENT_EVENT_HEADER_LEN, SEGMENT_H2_COPY,
    SEGMENT_PIECES_EVENT_HEADER_LEN, SOCKET_H2, SOCKET_H2_KNOWN, SegmentEvent, SegmentH2,
    SegmentHeader, SegmentPiecesEvent, TCP_FIN, TCP_RST, TCP_SYN, TcpEvent,
};

use super::h2::{self, Cursor, Source};
use super::{USED_H2_SOCKETS, emit, mark_used, now, ns_ids, table_used, tls, tls_hooked};

/// What a `cgroup_skb` program returns to let the packet through.
const ALLOW: i32 = 1;
/// What a `sock_ops` program returns: success, so the kernel keeps its defaults (0 would make
/// it ignore the replies of other programs attached above this cgroup).
const SOCK_OPS_OK: u32 = 1;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const TCP_CLOSE: u32 = 7;
const IPV6_HEADER_LEN: u32 = 40;
const TCP_HEADER_LEN: usize = 20;

/// Per-CPU space to assemble a segment record before it is copied, trimmed, into the ring; one
/// slot per direction, as ingress runs in softirq, which can interrupt an egress program on the
/// same CPU.
#[map]
static SEGMENT_SCRATCH: PerCpuArray<SegmentEvent> = PerCpuArray::with_max_entries(2, 0);

/// The frame position of each HTTP/2 socket (the client preface seen, or frames found), by
/// cookie. Removed at close; the LRU bound covers sockets whose close was not seen.
#[map]
static SEGMENT_H2: LruHashMap<u64, SegmentH2> =
    LruHashMap::with_max_entries(MAX_H2_SEGMENT_SOCKETS, 0);

/// Per-CPU space to assemble a pieced segment record, with the walk's cursor; one slot per
/// direction, as [`SEGMENT_SCRATCH`].
#[map]
static SEGMENT_PIECES_SCRATCH: PerCpuArray<PiecesScratch> = PerCpuArray::with_max_entries(2, 0);

/// A pieced segment record with slack behind its data, for the verifier's worst case (as the
/// socket programs' `PiecesScratch`), and the state of a socket not in [`SEGMENT_H2`] yet (off
/// the stack, which the walk's calls nearly fill).
#[repr(C)]
struct PiecesScratch {
    event: SegmentPiecesEvent,
    slack: [u8; MAX_PIECE_BYTES],
    cursor: Cursor,
    fresh: SegmentH2,
}

/// An skb's TCP payload as the frame walk reads it: one buffer, at `offset` of the skb, read with
/// `bpf_skb_load_bytes` (linear and paged parts alike).
struct SkbPayload {
    skb: *mut __sk_buff,
    offset: u32,
    len: u32,
    lead: u64,
    split_len: u64,
    split: [u8; 8],
}

impl Source for SkbPayload {
    #[inline(always)]
    fn total(&self) -> u64 {
        u64::from(self.len)
    }

    #[inline(always)]
    fn lead(&self) -> u64 {
        self.lead
    }

    #[inline(always)]
    fn split(&self) -> (u64, [u8; 8]) {
        (self.split_len, self.split)
    }

    #[inline(always)]
    fn count(&self) -> usize {
        1
    }

    #[inline(always)]
    fn buffer(&self, index: usize) -> Option<(u64, u64)> {
        (index == 0).then_some((u64::from(self.offset), u64::from(self.len)))
    }

    #[inline(always)]
    fn read(&self, dst: *mut u8, len: u32, at: u64) -> bool {
        // SAFETY: the program's own context; the caller bounds `dst` and `len` inside its
        // scratch slot, and the helper checks the offset against the skb.
        unsafe {
            generated::bpf_skb_load_bytes(
                self.skb.cast::<c_void>(),
                at as u32,
                dst.cast::<c_void>(),
                len,
            ) == 0
        }
    }
}

#[cgroup_skb(ingress)]
pub fn skb_ingress(ctx: SkBuffContext) -> i32 {
    on_skb(&ctx, DIRECTION_INGRESS);
    ALLOW
}

#[cgroup_skb(egress)]
pub fn skb_egress(ctx: SkBuffContext) -> i32 {
    on_skb(&ctx, DIRECTION_EGRESS);
    ALLOW
}

/// Records one skb of a TCP socket: pure ACKs (most ingress skbs of a sender) are skipped after
/// reading the headers; segments with payload, FIN or RST become one record each.
fn on_skb(ctx: &SkBuffContext, direction: u32) {
    let skb = &ctx.skb;
    let len = skb.len();
    // `protocol` is the L3 protocol in network byte order, in the low 16 bits.
    let l4 = match u16::from_be(skb.protocol() as u16) {
        ETH_P_IP => {
            let Ok(ip) = skb.load::<[u8; 20]>(0) else {
                return;
            };
            // Fragments of TCP are not reassembled here (TCP avoids fragmentation anyway).
            let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            if ip[9] != IPPROTO_TCP || fragmented {
                return;
            }
            u32::from(ip[0] & 0x0f) * 4
        }
        ETH_P_IPV6 => {
            // Extension headers before TCP are rare enough to skip such segments.
            let Ok(next_header) = skb.load::<u8>(6) else {
                return;
            };
            if next_header != IPPROTO_TCP {
                return;
            }
            IPV6_HEADER_LEN
        }
        _ => return,
    };
    let Ok(tcp) = skb.load::<[u8; TCP_HEADER_LEN]>(l4 as usize) else {
        return;
    };
    let flags = u32::from(tcp[13]);
    let payload_offset = l4 + u32::from(tcp[12] >> 4) * 4;
    // skb->len, not the IP length: GSO and BIG TCP super-packets may carry 0 there.
    let payload_len = len.saturating_sub(payload_offset);
    if payload_len == 0 && flags & (TCP_FIN | TCP_RST) == 0 {
        return;
    }
    let mut seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    if flags & TCP_SYN != 0 {
        // Data on a SYN (TCP Fast Open) starts after the SYN's own sequence number.
        seq = seq.wrapping_add(1);
    }
    let Some(event) = SEGMENT_SCRATCH.get_ptr_mut(direction & 1) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot is this program's for the duration of the run.
    let event = unsafe { &mut *event };
    let (pid, tid) = if direction == DIRECTION_EGRESS && sender_is_current(skb.skb) {
        ns_ids().unwrap_or((0, 0))
    } else {
        // Ingress runs in softirq: the current task has nothing to do with the receiver.
        (0, 0)
    };
    let head = &mut event.header;
    head.kind = EVENT_SEGMENT;
    head.direction = direction;
    head.pid = pid;
    head.tid = tid;
    // SAFETY: the program's own context; the helper reads the skb's socket.
    head.cookie = unsafe { generated::bpf_get_socket_cookie(skb.skb.cast::<c_void>()) };
    head.timestamp_ns = now();
    head.seq = seq;
    head.payload_len = payload_len;
    head.tcp_flags = flags;
    let mut captured = payload_len;
    if captured > MAX_PAYLOAD as u32 {
        captured = MAX_PAYLOAD as u32;
    }
    // TLS ciphertext of a hooked session: its plaintext comes from the uprobes, so the segment
    // is not recorded at all, unless it ends a direction (then without its bytes). A socket is
    // known by its cookie once its session is tied; before that, by the egress its thread
    // sends inside a hooked `SSL_*` call (or the write that ties a memory-BIO session).
    if captured > 0
        && tls::capturing()
        && ciphertext(skb.skb, pid, tid, head.cookie, payload_offset)
    {
        if flags & (TCP_FIN | TCP_RST) == 0 {
            return;
        }
        captured = 0;
    }
    if captured > 0 && frames(skb.skb, &event.header, payload_offset, false) {
        return;
    }
    if captured > 0 {
        // The same value for 1..=MAX_PAYLOAD, written so the verifier sees that range: the
        // compiler turns a plain `captured > 0` test into one on the offsets it cannot follow.
        let n = ((captured - 1) & (MAX_PAYLOAD as u32 - 1)) + 1;
        // SAFETY: `n` is in 1..=MAX_PAYLOAD and `payload` has MAX_PAYLOAD bytes; the helper
        // copies from linear and paged parts of the skb alike.
        let rc = unsafe {
            generated::bpf_skb_load_bytes(
                skb.skb.cast::<c_void>(),
                payload_offset,
                event.payload.as_mut_ptr().cast::<c_void>(),
                n,
            )
        };
        if rc != 0 {
            captured = 0;
        }
    }
    // The client preface: from here on the socket is followed frame by frame, from the frames
    // behind the preface in this very skb (a client sends its first requests with it).
    if u64::from(captured) >= h2::PREFACE_LEN
        && h2::is_preface(&event.payload)
        && frames(skb.skb, &event.header, payload_offset, true)
    {
        return;
    }
    event.header.captured_len = captured;
    let size = SEGMENT_EVENT_HEADER_LEN + captured as usize;
    // SAFETY: `size` is at most size_of::<SegmentEvent>(); the bytes are the scratch slot's.
    let bytes =
        unsafe { core::slice::from_raw_parts((event as *const SegmentEvent).cast::<u8>(), size) };
    emit(bytes);
}

/// Walks the frames of an skb into a pieced record, on a socket known to speak HTTP/2, for an
/// skb longer than the bounded copy (whose frames then have to account for every byte), or
/// behind the client preface (`preface`); false when the walk found nothing to go on (then a
/// prefix is copied instead).
///
/// The position a walk leaves is kept with the sequence number it is valid for. An skb that
/// starts there goes on from it; one whose bytes were all walked before (a retransmit) is copied
/// as a prefix and leaves the position alone; any other (out of order, overlapping) is walked
/// as if the position were unknown, and sets it only if it starts with a frame.
fn frames(skb: *mut __sk_buff, head: &SegmentHeader, payload_offset: u32, preface: bool) -> bool {
    // No socket followed yet, and the bounded copy takes the whole skb.
    if !preface && head.payload_len <= MAX_PAYLOAD as u32 && !table_used(USED_H2_SOCKETS) {
        return false;
    }
    let dir = (head.direction & 1) as usize;
    let Some(scratch) = SEGMENT_PIECES_SCRATCH.get_ptr_mut(head.direction & 1) else {
        return false;
    };
    // SAFETY: the per-CPU scratch slot is this program's for the duration of the run.
    let (event, cursor, fresh) = unsafe {
        (
            &mut (*scratch).event,
            &raw mut (*scratch).cursor,
            &mut (*scratch).fresh,
        )
    };
    let found = if table_used(USED_H2_SOCKETS) {
        SEGMENT_H2.get_ptr_mut(head.cookie)
    } else {
        None
    };
    let state = match found {
        // SAFETY: the entry was found just now. Ingress and egress may run at once; each writes
        // its own direction's fields, and a race on `flags` only forgets a position.
        Some(entry) => unsafe { &mut *entry },
        None => {
            *fresh = SegmentH2::default();
            &mut *fresh
        }
    };
    if preface {
        state.flags |= SOCKET_H2;
    } else if state.flags & SOCKET_H2 == 0 && head.payload_len <= MAX_PAYLOAD as u32 {
        return false;
    }
    let known = SOCKET_H2_KNOWN << dir;
    let copy = SEGMENT_H2_COPY << dir;
    let mut payload = SkbPayload {
        skb,
        offset: payload_offset,
        len: head.payload_len,
        lead: 0,
        split_len: 0,
        split: [0; 8],
    };
    let mut start = 0;
    if preface {
        payload.lead = h2::PREFACE_LEN;
        start = h2::PREFACE_LEN;
    } else if state.flags & known != 0 {
        // Bytes at the start of this skb that were walked before.
        let behind = state.seq[dir].wrapping_sub(head.seq) as i32;
        if behind == 0 {
            start = u64::from(state.h2_skip[dir]);
            if state.flags & copy != 0 {
                payload.lead = start;
            }
            payload.split_len = u64::from(state.split_len[dir]);
            payload.split = state.split[dir];
        } else if behind > 0 && behind as u32 >= head.payload_len {
            return false;
        }
    }
    let walk = h2::walk(&payload, start, &mut event.data, cursor, h2::LOOP_HELPER);
    let taken = walk.settle(&mut state.flags, &mut state.h2_skip, dir);
    if taken {
        state.seq[dir] = head.seq.wrapping_add(head.payload_len);
        state.split_len[dir] = 0;
        // An skb ends anywhere, often inside a frame header: the next one completes it.
        if walk.split > 0 && state.flags & SOCKET_H2 != 0 {
            state.flags |= known;
            state.h2_skip[dir] = 0;
            state.split_len[dir] = walk.split;
            state.split[dir] = walk.split_bytes;
        }
        if walk.copy {
            state.flags |= copy;
        } else {
            state.flags &= !copy;
        }
    } else {
        state.flags &= !known;
    }
    if found.is_none()
        && state.flags & SOCKET_H2 != 0
        && SEGMENT_H2.insert(head.cookie, fresh, 0).is_ok()
    {
        mark_used(USED_H2_SOCKETS);
    }
    if !taken {
        return false;
    }
    event.header = SegmentHeader {
        kind: EVENT_SEGMENT_PIECES,
        captured_len: walk.captured,
        ..*head
    };
    event.piece_count = walk.pieces;
    event._pad = 0;
    let mut size = SEGMENT_PIECES_EVENT_HEADER_LEN + walk.captured as usize;
    if size > size_of::<SegmentPiecesEvent>() {
        size = size_of::<SegmentPiecesEvent>();
    }
    // SAFETY: `size` is at most size_of::<SegmentPiecesEvent>(); the bytes are the scratch
    // slot's.
    let bytes = unsafe {
        core::slice::from_raw_parts((event as *const SegmentPiecesEvent).cast::<u8>(), size)
    };
    emit(bytes);
    true
}

/// Whether the skb carries the ciphertext of a hooked TLS session (see [`on_skb`]). The thread's
/// state is looked up only for egress that starts like a TLS record, the socket's only while
/// some socket is tied: a pod's cleartext skbs cost a 3-byte read.
fn ciphertext(skb: *mut __sk_buff, pid: u32, tid: u32, cookie: u64, payload_offset: u32) -> bool {
    if tls::tied_socket(cookie) {
        return true;
    }
    if pid == 0 {
        return false;
    }
    let mut head = [0u8; 3];
    // SAFETY: three bytes into a local through the checked helper.
    let rc = unsafe {
        generated::bpf_skb_load_bytes(
            skb.cast::<c_void>(),
            payload_offset,
            head.as_mut_ptr().cast::<c_void>(),
            3,
        )
    };
    rc == 0 && tls::is_record(&head) && tls_hooked(pid) && tls::on_egress(pid, tid, cookie)
}

/// Whether the task running now can be the one sending: it is in the socket's cgroup. Segments
/// the kernel sends from softirq (the rest of a large write, clocked out by ACKs; retransmits)
/// run on whatever task was interrupted; on loopback that is typically the peer, reading. Two
/// helper calls, paid only for segments that are recorded.
fn sender_is_current(skb: *mut __sk_buff) -> bool {
    // SAFETY: helpers on the program's own context, or without arguments.
    unsafe { generated::bpf_get_current_cgroup_id() == generated::bpf_skb_cgroup_id(skb) }
}

/// Connection lifecycle. The state callback is switched on per socket at establishment; it only
/// makes the kernel call this program on state changes.
#[sock_ops]
pub fn tcp_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            // connect(2) itself: the one callback that runs in the connecting task.
            let (pid, tid) = ns_ids().unwrap_or((0, 0));
            emit_tcp(&ctx, EVENT_TCP_CONNECT, ROLE_CLIENT, pid, tid);
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => established(&ctx, ROLE_CLIENT),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => established(&ctx, ROLE_SERVER),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => {
            emit_tcp(&ctx, EVENT_TCP_CLOSE, ROLE_UNKNOWN, 0, 0);
            // SAFETY: the program's own context; the helper reads its socket.
            let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.ops.cast::<c_void>()) };
            let _ = SEGMENT_H2.remove(cookie);
        }
        _ => {}
    }
    SOCK_OPS_OK
}

fn established(ctx: &SockOpsContext, role: u32) {
    // Keep the flags other programs set; failure only costs the close event.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    emit_tcp(ctx, EVENT_TCP_ESTABLISHED, role, 0, 0);
}

fn emit_tcp(ctx: &SockOpsContext, kind: u32, role: u32, pid: u32, tid: u32) {
    let family = ctx.family();
    let mut event = TcpEvent {
        kind,
        role,
        pid,
        tid,
        // SAFETY: the program's own context; the helper reads its socket.
        cookie: unsafe { generated::bpf_get_socket_cookie(ctx.ops.cast::<c_void>()) },
        timestamp_ns: now(),
        family: family as u16,
        local_port: ctx.local_port() as u16,
        // The remote port is in network byte order, in the upper half of the word on the
        // little-endian targets this object is built for (bpfel).
        peer_port: u16::from_be((ctx.remote_port() >> 16) as u16),
        ..TcpEvent::default()
    };
    match family {
        AF_INET => {
            event.local_addr[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
            event.peer_addr[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
        }
        AF_INET6 => {
            // SAFETY: the program's own context, read in place.
            let ops = unsafe { &*ctx.ops };
            event.local_addr = words(&ops.local_ip6);
            event.peer_addr = words(&ops.remote_ip6);
        }
        _ => return,
    }
    if kind != EVENT_TCP_CONNECT {
        // SAFETY: fields of the program's context, readable for full sockets, which these
        // callbacks have.
        unsafe {
            event.send_next = (*ctx.ops).snd_nxt;
            event.recv_next = (*ctx.ops).rcv_nxt;
        }
    }
    emit(&event);
}

/// An IPv6 address as the context holds it (four words, network order) in bytes. The kernel
/// allows only 4-byte loads of these fields, so each word is read on its own (a copy of the
/// array compiles to 8-byte loads the verifier refuses).
fn words(addr: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, word) in addr.iter().enumerate() {
        // SAFETY: a 4-byte load of a context field the caller borrowed.
        let word = unsafe { core::ptr::read_volatile(word) };
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
    }
    out
}
