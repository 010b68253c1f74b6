//! Pod-scoped capture: programs attached to the cgroup of each app container, which the kernel
//! runs only for that cgroup's sockets. Nothing here runs for other pods' traffic, so there is no
//! PID filter and no selection lookup: the attach is the filter.
//!
//! `cgroup_skb` sees every skb of the cgroup's sockets with the IP header at offset 0: on egress
//! before GSO segmentation, on ingress after GRO. Both always return 1 (allow): app traffic is
//! never dropped or altered. `sock_ops` reports connect, establishment and close, and returns 1
//! without touching `reply`, so the kernel's own choices (initial RTO, ECN, ...) stand.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::generated,
    macros::{cgroup_skb, map, sock_ops},
    maps::PerCpuArray,
    programs::{SkBuffContext, SockOpsContext},
};
use sidecar_bpf::{
    DIRECTION_EGRESS, DIRECTION_INGRESS, EVENT_SEGMENT, EVENT_TCP_CLOSE, EVENT_TCP_CONNECT,
    EVENT_TCP_ESTABLISHED, MAX_PAYLOAD, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN,
    SEGMENT_EVENT_HEADER_LEN, SegmentEvent, TCP_FIN, TCP_RST, TCP_SYN, TcpEvent,
};

use super::{emit, now, ns_ids, tls, tls_hooked};

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

/// Per-CPU space to assemble a segment record before it is copied, trimmed, into the ring.
#[map]
static SEGMENT_SCRATCH: PerCpuArray<SegmentEvent> = PerCpuArray::with_max_entries(1, 0);

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
    let Some(event) = SEGMENT_SCRATCH.get_ptr_mut(0) else {
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
    event.kind = EVENT_SEGMENT;
    event.direction = direction;
    event.pid = pid;
    event.tid = tid;
    // SAFETY: the program's own context; the helper reads the skb's socket.
    event.cookie = unsafe { generated::bpf_get_socket_cookie(skb.skb.cast::<c_void>()) };
    event.timestamp_ns = now();
    event.seq = seq;
    event.payload_len = payload_len;
    event.tcp_flags = flags;
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
        && ciphertext(skb.skb, pid, tid, event.cookie, payload_offset)
    {
        if flags & (TCP_FIN | TCP_RST) == 0 {
            return;
        }
        captured = 0;
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
    event.captured_len = captured;
    let size = SEGMENT_EVENT_HEADER_LEN + captured as usize;
    // SAFETY: `size` is at most size_of::<SegmentEvent>(); the bytes are the scratch slot's.
    let bytes =
        unsafe { core::slice::from_raw_parts((event as *const SegmentEvent).cast::<u8>(), size) };
    emit(bytes);
}

/// Whether the skb carries the ciphertext of a hooked TLS session (see [`on_skb`]).
fn ciphertext(skb: *mut __sk_buff, pid: u32, tid: u32, cookie: u64, payload_offset: u32) -> bool {
    if tls::tied_socket(cookie) {
        return true;
    }
    if pid == 0 || !tls_hooked(pid) {
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
    rc == 0 && tls::on_egress(pid, tid, cookie, &head)
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
