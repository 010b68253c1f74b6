//! Per-connection state machine: turns the kernel's socket events into completed
//! [`HttpTransaction`]s, one per request, with trace context.
//!
//! A connection is keyed by (pid, fd). Its role says which direction carries requests: a server
//! reads requests and writes responses, a client the opposite. Each direction is split into
//! messages by a [`MessageReader`]; requests wait in a FIFO queue (pipelining) and each final
//! response completes the oldest one.

use std::cell::RefCell;
use std::collections::VecDeque;

/// Connection lookups happen for every captured syscall: a fast non-cryptographic hasher (the
/// keys are pids and fds the kernel hands us, not attacker-chosen strings).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::SocketAddr;

use rand::{RngCore, SeedableRng, rngs::SmallRng};

use crate::capture::events::{Direction, Event, Meta, Role};
use crate::protocol::http1::{self, Framing, Request, Response, TraceParent};
use crate::protocol::stream::{MessageReader, Segment, Step};
use crate::transaction::{HttpTransaction, SpanKind, TraceContext};

/// Longest head (request or status line plus header fields) buffered across syscalls.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Requests awaiting their responses on one connection (pipelining depth).
const MAX_PIPELINED: usize = 64;
/// Events of a connection of unknown role that may pass before a request shows its role.
const MAX_UNRECOGNIZED_EVENTS: u32 = 8;

/// Bounds on the tracker's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerLimits {
    /// Connections tracked at once; the least recently active one is evicted beyond this.
    pub max_connections: usize,
    /// Heap bytes held for split heads and queued requests, across all connections; the least
    /// recently active connections are evicted beyond this.
    pub max_buffered_bytes: usize,
}

impl Default for TrackerLimits {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_buffered_bytes: 4 << 20,
        }
    }
}

/// Counters of what the tracker gave up on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Connections dropped to stay within [`TrackerLimits`].
    pub evicted_connections: u64,
    /// Connections found not to carry HTTP/1.x (TLS, other protocols, protocol switches).
    pub abandoned_connections: u64,
    /// Requests dropped without a transaction: evicted with their connection, or beyond the
    /// pipelining depth.
    pub discarded_requests: u64,
}

type ConnKey = (u32, i32);

/// The server request a thread is serving, for client requests it sends meanwhile.
#[derive(Clone, Copy, Debug)]
struct Serving {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// Threads serving a request: (pid, tid) to the server span.
type ServingMap = HashMap<(u32, u32), Serving>;

/// One request and, as it arrives, its response.
#[derive(Debug)]
struct Exchange {
    method: String,
    target: String,
    host: Option<String>,
    minor_version: u8,
    tid: u32,
    start_ns: u64,
    /// The request body was read to its end (or its end is unknowable).
    request_done: bool,
    request_body_size: Option<u64>,
    /// Final status once the response head was seen; 0 before.
    status: u16,
    response_body_size: Option<u64>,
    trace: TraceContext,
}

impl Exchange {
    fn heap_bytes(&self) -> usize {
        self.method.capacity()
            + self.target.capacity()
            + self.host.as_ref().map_or(0, String::capacity)
    }
}

/// What reading a connection's data decided about the connection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Not (or no longer) HTTP/1.x: ignore its traffic from now on.
    Abandon,
}

#[derive(Debug)]
struct Conn {
    pid: u32,
    role: Role,
    abandoned: bool,
    /// A valid head was seen: later garbage is a capture gap to resync after, not a reason to
    /// give up on the connection.
    http_seen: bool,
    unrecognized_events: u32,
    requests: MessageReader<Request>,
    responses: MessageReader<Response>,
    pending: VecDeque<Exchange>,
    /// The response being read answers no known request; its body is skipped.
    orphan_response: bool,
    last_response_ns: u64,
    last_event_ns: u64,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    lru_seq: u64,
}

/// Where finished transactions and thread bookkeeping go while a connection is processed.
struct Sink<'a> {
    serving: &'a mut ServingMap,
    stats: &'a mut TrackerStats,
    out: &'a mut Vec<HttpTransaction>,
}

impl Conn {
    fn new(pid: u32, role: Role, peer: Option<SocketAddr>, lru_seq: u64) -> Self {
        Self {
            pid,
            role,
            abandoned: false,
            http_seen: false,
            unrecognized_events: 0,
            requests: MessageReader::default(),
            responses: MessageReader::default(),
            pending: VecDeque::new(),
            orphan_response: false,
            last_response_ns: 0,
            last_event_ns: 0,
            local: None,
            peer,
            lru_seq,
        }
    }

    fn heap_bytes(&self) -> usize {
        self.requests.buffered()
            + self.responses.buffered()
            + self.pending.capacity() * size_of::<Exchange>()
            + self.pending.iter().map(Exchange::heap_bytes).sum::<usize>()
    }

    fn kind(&self) -> SpanKind {
        if self.role == Role::Client {
            SpanKind::Client
        } else {
            SpanKind::Server
        }
    }

    /// Data moved by one syscall, stamped when the syscall returned.
    fn on_data(
        &mut self,
        meta: &Meta,
        direction: Direction,
        total_len: u32,
        payload: &[u8],
        sink: &mut Sink<'_>,
    ) -> Verdict {
        self.last_event_ns = meta.timestamp_ns;
        if self.role == Role::Unknown {
            // A connection older than the sidecar: whoever reads a request is the server. Bytes
            // before the first request (the tail of an exchange in progress) are skipped.
            if !payload.is_empty() && http1::parse_request(payload).is_ok() {
                self.role = match direction {
                    Direction::Ingress => Role::Server,
                    Direction::Egress => Role::Client,
                };
            } else {
                self.unrecognized_events += 1;
                return if self.unrecognized_events >= MAX_UNRECOGNIZED_EVENTS {
                    Verdict::Abandon
                } else {
                    Verdict::Keep
                };
            }
        }
        let carries_requests = (self.role == Role::Server) == (direction == Direction::Ingress);
        let mut seg = Segment::new(payload, u64::from(total_len));
        if carries_requests {
            self.read_requests(&mut seg, meta, sink)
        } else {
            let verdict = self.read_responses(&mut seg, meta.timestamp_ns, sink);
            self.last_response_ns = meta.timestamp_ns;
            verdict
        }
    }

    fn read_requests(
        &mut self,
        seg: &mut Segment<'_>,
        meta: &Meta,
        sink: &mut Sink<'_>,
    ) -> Verdict {
        loop {
            let step = match self.requests.next(seg, meta.timestamp_ns, MAX_HEAD_BYTES) {
                Ok(step) => step,
                Err(_) if !self.http_seen => return Verdict::Abandon,
                Err(_) => {
                    self.requests.lose();
                    return Verdict::Keep;
                }
            };
            match step {
                Step::NeedMore => return Verdict::Keep,
                Step::Head { head, started_ns } => {
                    let framing = head.framing();
                    self.requests.set_body(framing);
                    let empty = framing == Framing::Empty;
                    self.start_exchange(
                        RequestStart {
                            method: head.method,
                            target: head.target,
                            host: head.host,
                            minor_version: head.minor_version,
                            traceparent: head.traceparent,
                            request_body_size: empty.then_some(0),
                            request_done: empty,
                        },
                        meta,
                        started_ns,
                        sink,
                    );
                }
                Step::Truncated { line, started_ns } => {
                    // A request that is not wholly visible still gets its span; the response
                    // tells where it ended.
                    if let Some(line) = line {
                        self.start_exchange(
                            RequestStart {
                                method: line.method,
                                target: line.target,
                                host: None,
                                minor_version: line.minor_version,
                                traceparent: None,
                                request_body_size: None,
                                request_done: false,
                            },
                            meta,
                            started_ns,
                            sink,
                        );
                    }
                }
                Step::BodyDone { body_bytes } => {
                    if let Some(exchange) = self.pending.back_mut().filter(|e| !e.request_done) {
                        exchange.request_done = true;
                        exchange.request_body_size = Some(body_bytes);
                    }
                }
                Step::BodyLost => {
                    if let Some(exchange) = self.pending.back_mut() {
                        exchange.request_done = true;
                    }
                }
                Step::Resynced => {}
            }
        }
    }

    fn start_exchange(
        &mut self,
        start: RequestStart,
        meta: &Meta,
        started_ns: u64,
        sink: &mut Sink<'_>,
    ) {
        self.http_seen = true;
        // A new request while the previous response's end was unknown: that response is over.
        // If even its status was not seen, it still was answered when response bytes followed
        // the request: it ends with status 0 rather than taking a later request's response.
        if self.responses.is_lost() {
            self.responses.resync();
            self.orphan_response = false;
            if self
                .pending
                .front()
                .is_some_and(|e| e.status != 0 || self.last_response_ns > e.start_ns)
            {
                self.complete(self.last_response_ns, sink);
            }
        }
        if self.pending.len() >= MAX_PIPELINED
            && let Some(dropped) = self.pending.pop_front()
        {
            self.release(&dropped, sink.serving);
            sink.stats.discarded_requests += 1;
        }
        let kind = self.kind();
        let trace = match kind {
            SpanKind::Server => {
                let trace = server_context(start.traceparent);
                sink.serving.insert(
                    (self.pid, meta.tid),
                    Serving {
                        trace_id: trace.trace_id,
                        span_id: trace.span_id,
                        sampled: trace.sampled,
                    },
                );
                trace
            }
            SpanKind::Client => {
                client_context(start.traceparent, sink.serving.get(&(self.pid, meta.tid)))
            }
        };
        self.pending.push_back(Exchange {
            method: start.method,
            target: start.target,
            host: start.host,
            minor_version: start.minor_version,
            tid: meta.tid,
            start_ns: started_ns,
            request_done: start.request_done,
            request_body_size: start.request_body_size,
            status: 0,
            response_body_size: None,
            trace,
        });
    }

    fn read_responses(&mut self, seg: &mut Segment<'_>, ts: u64, sink: &mut Sink<'_>) -> Verdict {
        loop {
            let step = match self.responses.next(seg, ts, MAX_HEAD_BYTES) {
                Ok(step) => step,
                Err(_) if !self.http_seen => return Verdict::Abandon,
                Err(_) => {
                    self.responses.lose();
                    return Verdict::Keep;
                }
            };
            match step {
                Step::NeedMore => return Verdict::Keep,
                Step::Head { head, .. } => {
                    if head.is_interim() {
                        self.responses.set_body(Framing::Empty);
                        continue;
                    }
                    self.on_final_status(head.status);
                    let answered = !self.orphan_response;
                    // An orphan response's request is unknown: frame it as if it answered a GET.
                    let method = self
                        .pending
                        .front()
                        .filter(|_| answered)
                        .map_or("GET", |e| e.method.as_str());
                    let framing = head.framing(method);
                    if head.ends_http(method) {
                        if answered {
                            self.complete(ts, sink);
                        }
                        return Verdict::Abandon;
                    }
                    self.responses.set_body(framing);
                    if framing == Framing::Empty {
                        self.body_done(Some(0), ts, sink);
                    }
                }
                Step::Truncated { line, .. } => match line {
                    // An interim response has no body: the next syscall starts afresh.
                    Some((status, _)) if (100..200).contains(&status) && status != 101 => {
                        self.responses.resync();
                    }
                    Some((status, _)) => {
                        self.on_final_status(status);
                    }
                    None => {}
                },
                Step::BodyDone { body_bytes } => self.body_done(Some(body_bytes), ts, sink),
                Step::BodyLost => {}
                Step::Resynced => {
                    if self.orphan_response {
                        self.orphan_response = false;
                    } else if self.pending.front().is_some_and(|e| e.status != 0) {
                        self.complete(self.last_response_ns, sink);
                    }
                }
            }
        }
    }

    /// A final response head (or status line) for the oldest waiting request.
    fn on_final_status(&mut self, status: u16) {
        self.http_seen = true;
        // The response shows the request is over even if its end was not seen.
        if self.requests.is_lost() {
            self.requests.resync();
        }
        match self.pending.front_mut() {
            Some(exchange) => {
                exchange.status = status;
                exchange.request_done = true;
                self.orphan_response = false;
            }
            None => self.orphan_response = true,
        }
    }

    fn body_done(&mut self, size: Option<u64>, ts: u64, sink: &mut Sink<'_>) {
        if self.orphan_response {
            self.orphan_response = false;
            return;
        }
        if let Some(exchange) = self.pending.front_mut() {
            exchange.response_body_size = size;
            self.complete(ts, sink);
        }
    }

    /// The oldest exchange's response ended at `end_ns`: emit its transaction.
    fn complete(&mut self, end_ns: u64, sink: &mut Sink<'_>) {
        let Some(exchange) = self.pending.pop_front() else {
            return;
        };
        self.release(&exchange, sink.serving);
        let kind = self.kind();
        sink.out.push(HttpTransaction {
            kind,
            pid: self.pid,
            tid: exchange.tid,
            method: exchange.method,
            target: exchange.target,
            host: exchange.host,
            minor_version: exchange.minor_version,
            status: exchange.status,
            request_body_size: exchange.request_body_size,
            response_body_size: exchange.response_body_size,
            start_ns: exchange.start_ns,
            end_ns: end_ns.max(exchange.start_ns),
            local: self.local,
            peer: self.peer,
            trace: exchange.trace,
        });
    }

    /// The exchange no longer keeps its thread "serving".
    fn release(&self, exchange: &Exchange, serving: &mut ServingMap) {
        if self.kind() == SpanKind::Server {
            let key = (self.pid, exchange.tid);
            if serving
                .get(&key)
                .is_some_and(|s| s.span_id == exchange.trace.span_id)
            {
                serving.remove(&key);
            }
        }
    }

    /// The connection ended (closed, reused, or its process exited) at `close_ns`: a response
    /// delimited by the close is complete; requests without a response end with status 0.
    fn finish(&mut self, close_ns: u64, sink: &mut Sink<'_>) {
        if self.abandoned {
            return;
        }
        if let Some(read) = self.responses.until_close_bytes()
            && let Some(exchange) = self.pending.front_mut()
        {
            exchange.response_body_size = Some(read);
        }
        while let Some(exchange) = self.pending.front() {
            let end = if exchange.status != 0 {
                self.last_response_ns
            } else {
                close_ns
            };
            self.complete(end, sink);
        }
    }

    /// Stops tracking: the connection's traffic is ignored until it is closed or reused.
    fn abandon(&mut self, serving: &mut ServingMap) {
        self.discard(serving);
        self.abandoned = true;
        self.requests = MessageReader::default();
        self.responses = MessageReader::default();
        self.pending = VecDeque::new();
    }

    /// Drops queued requests without transactions; returns how many.
    fn discard(&mut self, serving: &mut ServingMap) -> usize {
        let dropped = std::mem::take(&mut self.pending);
        for exchange in &dropped {
            self.release(exchange, serving);
        }
        dropped.len()
    }
}

/// What is known of a request when it starts.
struct RequestStart {
    method: String,
    target: String,
    host: Option<String>,
    minor_version: u8,
    traceparent: Option<TraceParent>,
    request_body_size: Option<u64>,
    request_done: bool,
}

thread_local! {
    /// Ids need uniqueness, not secrecy: a fast generator seeded from the OS instead of the
    /// cryptographic default, which showed up in profiles at one trace and span id per request.
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// Random non-zero ids (all-zero trace and span ids are invalid).
fn random_id<const N: usize>() -> [u8; N] {
    IDS.with_borrow_mut(|rng| {
        let mut id = [0; N];
        while id == [0; N] {
            rng.fill_bytes(&mut id);
        }
        id
    })
}

/// A server span continues an incoming valid `traceparent`, or starts a trace.
fn server_context(traceparent: Option<TraceParent>) -> TraceContext {
    match traceparent {
        Some(tp) => TraceContext {
            trace_id: tp.trace_id,
            span_id: random_id(),
            parent_span_id: Some(tp.parent_id),
            sampled: tp.sampled,
        },
        None => root_context(),
    }
}

/// A client span honours a `traceparent` the app wrote, else joins the request its thread is
/// serving, else starts a trace.
fn client_context(traceparent: Option<TraceParent>, serving: Option<&Serving>) -> TraceContext {
    match (traceparent, serving) {
        (Some(tp), _) => TraceContext {
            trace_id: tp.trace_id,
            span_id: random_id(),
            parent_span_id: Some(tp.parent_id),
            sampled: tp.sampled,
        },
        (None, Some(server)) => TraceContext {
            trace_id: server.trace_id,
            span_id: random_id(),
            parent_span_id: Some(server.span_id),
            sampled: server.sampled,
        },
        (None, None) => root_context(),
    }
}

fn root_context() -> TraceContext {
    TraceContext {
        trace_id: random_id(),
        span_id: random_id(),
        parent_span_id: None,
        sampled: true,
    }
}

/// An LRU entry still names its connection's latest activity (it is not stale).
fn is_live(conns: &HashMap<ConnKey, Conn>, seq: u64, key: ConnKey) -> bool {
    conns.get(&key).is_some_and(|c| c.lru_seq == seq)
}

/// Turns socket events into HTTP transactions. Single-threaded: owned by the event loop.
#[derive(Debug)]
pub struct Tracker {
    limits: TrackerLimits,
    conns: HashMap<ConnKey, Conn>,
    /// Connections by last activity, oldest first, for eviction. A touch appends a new entry
    /// instead of moving the old one (O(1) per event; a B-tree showed up in profiles): entries
    /// whose sequence number is no longer their connection's are stale, skipped on eviction and
    /// compacted away once they outnumber the live ones.
    lru: VecDeque<(u64, ConnKey)>,
    next_seq: u64,
    serving: ServingMap,
    /// Sum of the connections' `heap_bytes`.
    buffered: usize,
    stats: TrackerStats,
}

impl Tracker {
    pub fn new(limits: TrackerLimits) -> Self {
        Self {
            limits,
            conns: HashMap::default(),
            lru: VecDeque::new(),
            next_seq: 0,
            serving: HashMap::default(),
            buffered: 0,
            stats: TrackerStats::default(),
        }
    }

    /// Feeds one decoded kernel event; completed transactions are appended to `out`.
    pub fn on_event(&mut self, event: &Event<'_>, out: &mut Vec<HttpTransaction>) {
        match *event {
            Event::Connect {
                meta,
                role,
                peer,
                local,
            } => {
                let key = (meta.pid, meta.fd);
                // Addresses the lead resolved for this socket before its connect event.
                let resolved = self
                    .conns
                    .get(&key)
                    .filter(|c| c.role == Role::Unknown && c.last_event_ns == 0)
                    .map(|c| (c.local, c.peer));
                // A known (pid, fd) being connected again means its close was missed.
                self.end_connection(key, meta.timestamp_ns, out);
                let (resolved_local, resolved_peer) = resolved.unwrap_or_default();
                let mut conn = Conn::new(meta.pid, role, peer.or(resolved_peer), 0);
                conn.local = local.or(resolved_local);
                self.insert(key, conn);
            }
            Event::Close { meta } => {
                self.end_connection((meta.pid, meta.fd), meta.timestamp_ns, out);
            }
            Event::Data {
                meta,
                direction,
                total_len,
                payload,
            } => {
                let key = (meta.pid, meta.fd);
                if !self.conns.contains_key(&key) {
                    self.insert(key, Conn::new(meta.pid, Role::Unknown, None, 0));
                }
                let seq = self.bump();
                let Some(conn) = self.conns.get_mut(&key) else {
                    return;
                };
                Self::touch(&mut self.lru, seq, key, conn);
                if conn.abandoned {
                    return;
                }
                let before = conn.heap_bytes();
                let mut sink = Sink {
                    serving: &mut self.serving,
                    stats: &mut self.stats,
                    out,
                };
                let verdict = conn.on_data(&meta, direction, total_len, payload, &mut sink);
                if verdict == Verdict::Abandon {
                    conn.abandon(&mut self.serving);
                    self.stats.abandoned_connections += 1;
                }
                let after = conn.heap_bytes();
                self.buffered = (self.buffered + after).saturating_sub(before);
                while self.buffered > self.limits.max_buffered_bytes && self.evict_oldest() {}
            }
        }
        self.compact_lru();
    }

    /// The lead resolved a connection's addresses (from /proc) after the fact. Unknown
    /// connections are created, with an unknown role, so addresses found for sockets that
    /// predate the sidecar are kept for their first requests.
    pub fn set_addresses(
        &mut self,
        pid: u32,
        fd: i32,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    ) {
        let key = (pid, fd);
        if !self.conns.contains_key(&key) {
            self.insert(key, Conn::new(pid, Role::Unknown, None, 0));
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            if local.is_some() {
                conn.local = local;
            }
            if peer.is_some() {
                conn.peer = peer;
            }
        }
    }

    /// A process exited: its connections end as if closed.
    pub fn forget_process(&mut self, pid: u32, out: &mut Vec<HttpTransaction>) {
        let keys: Vec<ConnKey> = self.conns.keys().filter(|k| k.0 == pid).copied().collect();
        for key in keys {
            let ts = self.conns.get(&key).map_or(0, |c| c.last_event_ns);
            self.end_connection(key, ts, out);
        }
        self.serving
            .retain(|&(serving_pid, _), _| serving_pid != pid);
    }

    /// Connections currently tracked.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// What the tracker gave up on so far.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    fn insert(&mut self, key: ConnKey, mut conn: Conn) {
        while self.conns.len() >= self.limits.max_connections.max(1) && self.evict_oldest() {}
        let seq = self.bump();
        Self::touch(&mut self.lru, seq, key, &mut conn);
        self.buffered += conn.heap_bytes();
        self.conns.insert(key, conn);
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Marks `conn` (found under `key`) as the most recently active.
    fn touch(lru: &mut VecDeque<(u64, ConnKey)>, seq: u64, key: ConnKey, conn: &mut Conn) {
        conn.lru_seq = seq;
        lru.push_back((seq, key));
    }

    /// Drops stale LRU entries once they outnumber the live ones (amortized O(1) per touch).
    fn compact_lru(&mut self) {
        if self.lru.len() > 2 * self.conns.len() + 64 {
            let conns = &self.conns;
            self.lru.retain(|&(seq, key)| is_live(conns, seq, key));
        }
    }

    fn remove(&mut self, key: ConnKey) -> Option<Conn> {
        let conn = self.conns.remove(&key)?;
        self.buffered = self.buffered.saturating_sub(conn.heap_bytes());
        Some(conn)
    }

    fn end_connection(&mut self, key: ConnKey, ts: u64, out: &mut Vec<HttpTransaction>) {
        if let Some(mut conn) = self.remove(key) {
            let mut sink = Sink {
                serving: &mut self.serving,
                stats: &mut self.stats,
                out,
            };
            conn.finish(ts, &mut sink);
        }
    }

    /// Drops the least recently active connection; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        let key = loop {
            let Some((seq, key)) = self.lru.pop_front() else {
                return false;
            };
            if is_live(&self.conns, seq, key) {
                break key;
            }
        };
        if let Some(mut conn) = self.remove(key) {
            let dropped = conn.discard(&mut self.serving);
            self.stats.discarded_requests += dropped as u64;
            self.stats.evicted_connections += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http1::parse_traceparent;

    const PID: u32 = 100;
    const TID: u32 = 101;
    const FD: i32 = 5;
    /// What the kernel side copies of each syscall's data.
    const CAPTURE: usize = sidecar_bpf::MAX_PAYLOAD;

    fn golden(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/http1/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Feeds synthetic kernel events with a clock that advances 1000 ns per event.
    struct Sim {
        tracker: Tracker,
        out: Vec<HttpTransaction>,
        now: u64,
    }

    impl Sim {
        fn new() -> Self {
            Self::with_limits(TrackerLimits::default())
        }

        fn with_limits(limits: TrackerLimits) -> Self {
            Self {
                tracker: Tracker::new(limits),
                out: Vec::new(),
                now: 1_000_000,
            }
        }

        fn meta(&mut self, pid: u32, tid: u32, fd: i32) -> Meta {
            self.now += 1000;
            Meta {
                pid,
                tid,
                fd,
                timestamp_ns: self.now,
            }
        }

        fn connect(&mut self, fd: i32, role: Role) {
            let meta = self.meta(PID, TID, fd);
            let peer = Some("10.0.0.9:40000".parse().unwrap());
            self.tracker.on_event(
                &Event::Connect {
                    meta,
                    role,
                    peer,
                    local: None,
                },
                &mut self.out,
            );
        }

        fn close(&mut self, fd: i32) {
            let meta = self.meta(PID, TID, fd);
            self.tracker.on_event(&Event::Close { meta }, &mut self.out);
        }

        /// One syscall moving `bytes`, of which the kernel captures the first 1024.
        fn data(&mut self, tid: u32, fd: i32, direction: Direction, bytes: &[u8]) -> u64 {
            let meta = self.meta(PID, tid, fd);
            let event = Event::Data {
                meta,
                direction,
                total_len: bytes.len() as u32,
                payload: &bytes[..bytes.len().min(CAPTURE)],
            };
            self.tracker.on_event(&event, &mut self.out);
            meta.timestamp_ns
        }

        fn read(&mut self, fd: i32, bytes: &[u8]) -> u64 {
            self.data(TID, fd, Direction::Ingress, bytes)
        }

        fn write(&mut self, fd: i32, bytes: &[u8]) -> u64 {
            self.data(TID, fd, Direction::Egress, bytes)
        }

        fn take(&mut self) -> Vec<HttpTransaction> {
            std::mem::take(&mut self.out)
        }
    }

    /// The facts a test checks: method, target, status, request and response body sizes.
    type Summary = (String, String, u16, Option<u64>, Option<u64>);

    fn summary(txs: &[HttpTransaction]) -> Vec<Summary> {
        txs.iter()
            .map(|t| {
                (
                    t.method.clone(),
                    t.target.clone(),
                    t.status,
                    t.request_body_size,
                    t.response_body_size,
                )
            })
            .collect()
    }

    type Expected = &'static [(&'static str, &'static str, u16, Option<u64>, Option<u64>)];

    /// Golden captures (request stream, response stream) and the transactions they hold.
    const GOLDEN: &[(&str, Expected)] = &[
        (
            "python_get_1_0",
            &[("GET", "/hello.txt", 200, Some(0), Some(13))],
        ),
        (
            "python_head",
            &[("HEAD", "/hello.txt", 200, Some(0), Some(0))],
        ),
        (
            "python_404",
            &[("GET", "/missing?q=1", 404, Some(0), Some(335))],
        ),
        (
            "python_post_501",
            &[("POST", "/form", 501, Some(7), Some(357))],
        ),
        (
            "nginx_keepalive",
            &[
                ("GET", "/hello.txt", 200, Some(0), Some(13)),
                ("GET", "/missing", 404, Some(0), Some(153)),
                ("HEAD", "/hello.txt", 200, Some(0), Some(0)),
                ("GET", "/fail", 500, Some(0), Some(5)),
                ("GET", "/old", 301, Some(0), Some(169)),
                ("GET", "/empty", 204, Some(0), Some(0)),
            ],
        ),
        (
            "nginx_gzip_chunked",
            &[("GET", "/big.txt", 200, Some(0), Some(3183))],
        ),
        ("nginx_304", &[("GET", "/hello.txt", 304, Some(0), Some(0))]),
        (
            "nginx_traceparent",
            &[("GET", "/hello.txt", 200, Some(0), Some(13))],
        ),
        (
            "custom_100_continue",
            &[("POST", "/echo", 201, Some(1500), Some(1500))],
        ),
        (
            "custom_chunked_request",
            &[("POST", "/echo", 201, Some(1500), Some(1500))],
        ),
        (
            "custom_http10_close",
            &[("GET", "/stream", 200, Some(0), Some(420))],
        ),
    ];

    fn expected(rows: Expected) -> Vec<Summary> {
        rows.iter()
            .map(|&(m, t, s, q, r)| (m.into(), t.into(), s, q, r))
            .collect()
    }

    /// Plays a golden capture on one connection: the request stream split in two at
    /// `req_split`, then the response stream at `resp_split`, then a close.
    fn play(role: Role, name: &str, req_split: usize, resp_split: usize) -> Vec<HttpTransaction> {
        let (req, resp) = (
            golden(&format!("{name}.req")),
            golden(&format!("{name}.resp")),
        );
        let mut sim = Sim::new();
        sim.connect(FD, role);
        let (to_server, to_client) = match role {
            Role::Client => (Direction::Egress, Direction::Ingress),
            _ => (Direction::Ingress, Direction::Egress),
        };
        // Syscalls of at most the capture size: every byte is seen (uncaptured bytes are
        // covered by the tests below).
        for part in [&req[..req_split], &req[req_split..]] {
            for syscall in part.chunks(CAPTURE) {
                sim.data(TID, FD, to_server, syscall);
            }
        }
        for part in [&resp[..resp_split], &resp[resp_split..]] {
            for syscall in part.chunks(CAPTURE) {
                sim.data(TID, FD, to_client, syscall);
            }
        }
        sim.close(FD);
        sim.take()
    }

    #[test]
    fn golden_exchanges_as_server_and_client() {
        for &(name, rows) in GOLDEN {
            let len = golden(&format!("{name}.req")).len();
            for role in [Role::Server, Role::Client, Role::Unknown] {
                let txs = play(role, name, len, 0);
                assert_eq!(summary(&txs), expected(rows), "{name} as {role:?}");
                let kind = if role == Role::Client {
                    SpanKind::Client
                } else {
                    SpanKind::Server
                };
                assert!(txs.iter().all(|t| t.kind == kind), "{name} as {role:?}");
                assert!(
                    txs.iter()
                        .all(|t| t.host.as_deref() == Some("127.0.0.1:19000"))
                );
            }
        }
    }

    /// Every split of the request stream (server side), and every split of the response stream
    /// (client side), into two syscalls yields the same transactions.
    #[test]
    fn golden_exchanges_across_every_split() {
        for &(name, rows) in GOLDEN {
            let (req, resp) = (
                golden(&format!("{name}.req")),
                golden(&format!("{name}.resp")),
            );
            for split in 0..=req.len() {
                let txs = play(Role::Server, name, split, 0);
                assert_eq!(
                    summary(&txs),
                    expected(rows),
                    "{name} request split at {split}"
                );
            }
            for split in 0..=resp.len() {
                let txs = play(Role::Client, name, req.len(), split);
                assert_eq!(
                    summary(&txs),
                    expected(rows),
                    "{name} response split at {split}"
                );
            }
        }
    }

    #[test]
    fn keepalive_with_many_requests_and_exact_timestamps() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        for i in 0..200 {
            let start = sim.read(
                FD,
                format!("GET /items/{i} HTTP/1.1\r\nHost: svc\r\n\r\n").as_bytes(),
            );
            sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
            let end = sim.write(FD, b"hello");
            let txs = sim.take();
            assert_eq!(txs.len(), 1, "request {i}");
            assert_eq!(txs[0].target, format!("/items/{i}"));
            assert_eq!((txs[0].start_ns, txs[0].end_ns), (start, end));
            assert_eq!(txs[0].peer, Some("10.0.0.9:40000".parse().unwrap()));
        }
        sim.close(FD);
        assert!(sim.take().is_empty());
        assert_eq!(sim.tracker.connections(), 0);
    }

    #[test]
    fn client_timestamps_run_from_the_first_write_to_the_last_read() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Client);
        // Syscalls are stamped at exit: the request starts when its first write returns.
        let first = sim.write(FD, b"POST /up HTTP/1.1\r\nContent-Length: 4\r\n\r\n");
        sim.write(FD, b"body");
        sim.read(FD, b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n");
        let last = sim.read(FD, b"ok");
        let txs = sim.take();
        assert_eq!(
            summary(&txs),
            expected(&[("POST", "/up", 202, Some(4), Some(2))])
        );
        assert_eq!((txs[0].start_ns, txs[0].end_ns), (first, last));
        assert_eq!(txs[0].kind, SpanKind::Client);
    }

    #[test]
    fn requests_split_across_reads_start_at_the_first_byte() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        let start = sim.read(FD, b"GE");
        sim.read(FD, b"T /split HTTP/1.1\r\nHo");
        sim.read(FD, b"st: a\r\n");
        sim.read(FD, b"\r\n");
        let end = sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let txs = sim.take();
        assert_eq!(
            summary(&txs),
            expected(&[("GET", "/split", 200, Some(0), Some(0))])
        );
        assert_eq!((txs[0].start_ns, txs[0].end_ns), (start, end));
    }

    #[test]
    fn pipelined_requests_in_one_read() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        let req = golden("nginx_keepalive.req");
        let resp = golden("nginx_keepalive.resp");
        sim.read(FD, &req);
        for chunk in resp.chunks(100) {
            sim.write(FD, chunk);
        }
        let txs = sim.take();
        assert_eq!(summary(&txs), expected(GOLDEN[4].1));
        // Pipelined requests all started with the one read.
        assert!(txs.iter().all(|t| t.start_ns == txs[0].start_ns));
        assert!(txs.windows(2).all(|w| w[0].end_ns < w[1].end_ns));
    }

    #[test]
    fn hundred_continue_is_interim() {
        let req = golden("custom_100_continue.req");
        let resp = golden("custom_100_continue.resp");
        let (req_head, req_body) = req.split_at(177);
        let (interim, last) = resp.split_at(25);
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        sim.read(FD, req_head);
        sim.write(FD, interim);
        sim.read(FD, req_body);
        assert!(sim.take().is_empty());
        let mut end = 0;
        for syscall in last.chunks(CAPTURE) {
            end = sim.write(FD, syscall);
        }
        let txs = sim.take();
        assert_eq!(
            summary(&txs),
            expected(&[("POST", "/echo", 201, Some(1500), Some(1500))])
        );
        assert_eq!(txs[0].end_ns, end);
    }

    #[test]
    fn large_bodies_with_truncated_payloads_are_skipped_by_length() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Client);
        sim.write(FD, b"GET /download HTTP/1.1\r\nHost: files\r\n\r\n");
        // 1 MB response in 64 KiB reads; the body itself looks like HTTP to make sure it is
        // skipped by count and never parsed.
        let total = 1_000_000usize;
        let mut first = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
        let head_len = first.len();
        let filler = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n";
        let mut body = filler.iter().copied().cycle();
        first.extend(body.by_ref().take(65536 - head_len));
        sim.read(FD, &first);
        let mut left = total - (65536 - head_len);
        let mut end = 0;
        while left > 0 {
            let n = left.min(65536);
            let chunk: Vec<u8> = body.by_ref().take(n).collect();
            end = sim.read(FD, &chunk);
            left -= n;
        }
        let txs = sim.take();
        assert_eq!(
            summary(&txs),
            expected(&[("GET", "/download", 200, Some(0), Some(1_000_000))])
        );
        assert_eq!(txs[0].end_ns, end);
        // The connection is still in step for the next exchange.
        sim.write(FD, b"GET /next HTTP/1.1\r\n\r\n");
        sim.read(FD, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            summary(&sim.take()),
            expected(&[("GET", "/next", 404, Some(0), Some(0))])
        );
    }

    #[test]
    fn chunked_response_in_one_syscall_beyond_the_capture() {
        // nginx's gzip response written at once: only its head and first chunk-size line are
        // captured; the chunk data and the last chunk are counted from the syscall's length.
        let mut sim = Sim::new();
        sim.connect(FD, Role::Client);
        sim.write(FD, &golden("nginx_gzip_chunked.req"));
        let end = sim.read(FD, &golden("nginx_gzip_chunked.resp"));
        let txs = sim.take();
        assert_eq!(summary(&txs), expected(GOLDEN[5].1));
        assert_eq!(txs[0].end_ns, end);
    }

    #[test]
    fn head_responses_have_no_body_whatever_the_headers_say() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        sim.read(FD, b"HEAD /big HTTP/1.1\r\n\r\n");
        sim.write(
            FD,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        sim.read(FD, b"GET /small HTTP/1.1\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(
            summary(&sim.take()),
            expected(&[
                ("HEAD", "/big", 200, Some(0), Some(0)),
                ("GET", "/small", 200, Some(0), Some(1))
            ])
        );
    }

    #[test]
    fn close_delimited_response_ends_at_its_last_byte() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Client);
        sim.write(FD, b"GET /legacy HTTP/1.0\r\n\r\n");
        sim.read(
            FD,
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nabc",
        );
        let last = sim.read(FD, &[b'z'; 3000]);
        assert!(sim.take().is_empty());
        sim.close(FD);
        let txs = sim.take();
        assert_eq!(
            summary(&txs),
            expected(&[("GET", "/legacy", 200, Some(0), Some(3003))])
        );
        assert_eq!(txs[0].minor_version, 0);
        assert_eq!(txs[0].end_ns, last);
    }

    #[test]
    fn process_exit_flushes_its_connections() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        sim.read(FD, b"GET /a HTTP/1.0\r\n\r\n");
        sim.write(FD, b"HTTP/1.0 200 OK\r\n\r\npartial");
        sim.connect(FD + 1, Role::Server);
        sim.read(FD + 1, b"GET /b HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        sim.tracker.forget_process(PID + 1, &mut out);
        assert!(out.is_empty());
        sim.tracker.forget_process(PID, &mut out);
        out.sort_by(|a, b| a.target.cmp(&b.target));
        assert_eq!(
            summary(&out),
            expected(&[
                ("GET", "/a", 200, Some(0), Some(7)),
                ("GET", "/b", 0, Some(0), None)
            ])
        );
        assert_eq!(sim.tracker.connections(), 0);
    }

    #[test]
    fn fd_reuse_resets_the_connection() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        sim.read(FD, b"GET /abandoned HTTP/1.1\r\n\r\n");
        // The close was missed: a new accept on the same fd ends the old connection.
        sim.connect(FD, Role::Client);
        assert_eq!(
            summary(&sim.take()),
            expected(&[("GET", "/abandoned", 0, Some(0), None)])
        );
        sim.write(FD, b"GET /fresh HTTP/1.1\r\n\r\n");
        sim.read(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let txs = sim.take();
        assert_eq!(
            summary(&txs),
            expected(&[("GET", "/fresh", 200, Some(0), Some(0))])
        );
        assert_eq!(txs[0].kind, SpanKind::Client);
        // Closed and reused without a connect event: the role is inferred again.
        sim.close(FD);
        sim.read(FD, b"GET /inferred HTTP/1.1\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let txs = sim.take();
        assert_eq!(txs.len(), 1);
        assert_eq!(txs[0].kind, SpanKind::Server);
    }

    #[test]
    fn unknown_role_is_inferred_from_the_first_request() {
        let mut sim = Sim::new();
        // A connection that predates the sidecar, caught in the middle of a response body.
        sim.tracker
            .set_addresses(PID, FD, Some("10.0.0.1:8080".parse().unwrap()), None);
        sim.write(FD, b"tail of an earlier response body");
        sim.read(FD, b"GET /seen HTTP/1.1\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let txs = sim.take();
        assert_eq!(
            summary(&txs),
            expected(&[("GET", "/seen", 200, Some(0), Some(0))])
        );
        assert_eq!(txs[0].kind, SpanKind::Server);
        assert_eq!(txs[0].local, Some("10.0.0.1:8080".parse().unwrap()));
        // A process that writes a request is the client.
        sim.write(FD + 1, b"DELETE /x HTTP/1.1\r\n\r\n");
        sim.read(FD + 1, b"HTTP/1.1 204 No Content\r\n\r\n");
        let txs = sim.take();
        assert_eq!(txs[0].kind, SpanKind::Client);
        assert_eq!(txs[0].status, 204);
    }

    #[test]
    fn non_http_traffic_is_abandoned_cheaply() {
        let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n";
        let cases: [(Role, Direction, &[u8]); 5] = [
            (Role::Server, Direction::Ingress, tls_hello),
            (Role::Client, Direction::Egress, b"*1\r\n$4\r\nPING\r\n"),
            // MySQL-like server greeting: the server speaks first.
            (
                Role::Client,
                Direction::Ingress,
                b"J\x00\x00\x00\n8.0.36\x00",
            ),
            (
                Role::Server,
                Direction::Ingress,
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            ),
            (Role::Server, Direction::Ingress, &[0u8; 64]),
        ];
        for (role, direction, bytes) in cases {
            let mut sim = Sim::new();
            sim.connect(FD, role);
            sim.data(TID, FD, direction, bytes);
            assert_eq!(sim.tracker.stats().abandoned_connections, 1, "{bytes:?}");
            // Whatever follows is ignored, HTTP-looking or not.
            sim.read(FD, b"GET / HTTP/1.1\r\n\r\n");
            sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            sim.close(FD);
            assert!(sim.take().is_empty(), "{bytes:?}");
        }
        // Unknown-role binary traffic is given up on after a few events.
        let mut sim = Sim::new();
        for _ in 0..MAX_UNRECOGNIZED_EVENTS {
            sim.read(FD, b"\x00\x01binary");
        }
        assert_eq!(sim.tracker.stats().abandoned_connections, 1);
    }

    #[test]
    fn random_bytes_never_panic() {
        for seed in 0..300u32 {
            let mut sim = Sim::with_limits(TrackerLimits {
                max_connections: 4,
                max_buffered_bytes: 8192,
            });
            for i in 0..40u32 {
                let len = (rand::random::<u32>() % 1500) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rand::random()).collect();
                // Mix in HTTP so the parsers get past the first byte.
                if i % 3 == 0 {
                    bytes.splice(
                        0..0,
                        b"GET / HTTP/1.1\r\nContent-Length: 40\r\n".iter().copied(),
                    );
                }
                if i % 5 == 1 {
                    bytes.splice(
                        0..0,
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1"
                            .iter()
                            .copied(),
                    );
                }
                let fd = (seed + i) as i32 % 6;
                match rand::random::<u8>() % 8 {
                    0 => sim.connect(fd, Role::Server),
                    1 => sim.close(fd),
                    2..=4 => {
                        sim.read(fd, &bytes);
                    }
                    _ => {
                        sim.write(fd, &bytes);
                    }
                }
            }
            assert!(sim.tracker.connections() <= 4);
            assert!(sim.tracker.buffered <= 8192);
        }
    }

    #[test]
    fn incoming_traceparent_makes_the_server_span_a_child() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        sim.read(FD, &golden("nginx_traceparent.req"));
        sim.write(FD, &golden("nginx_traceparent.resp"));
        let txs = sim.take();
        let header =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let trace = txs[0].trace;
        assert_eq!(trace.trace_id, header.trace_id);
        assert_eq!(trace.parent_span_id, Some(header.parent_id));
        assert!(trace.sampled);
        assert_ne!(trace.span_id, header.parent_id);

        // Unsampled upstream decision is kept.
        sim.read(
            FD,
            b"GET / HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\r\n\r\n",
        );
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let txs = sim.take();
        assert!(!txs[0].trace.sampled);
        assert_eq!(
            txs[0].trace.parent_span_id,
            Some([0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31])
        );

        // No (or an invalid) traceparent: a new trace.
        sim.read(FD, b"GET / HTTP/1.1\r\ntraceparent: garbage\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let txs = sim.take();
        assert_eq!(txs[0].trace.parent_span_id, None);
        assert_ne!(txs[0].trace.trace_id, [0; 16]);
        assert_ne!(txs[0].trace.span_id, [0; 8]);
        assert!(txs[0].trace.sampled);
    }

    #[test]
    fn client_requests_while_serving_join_the_server_trace() {
        const SERVER_FD: i32 = 5;
        const CLIENT_FD: i32 = 6;
        const OTHER_TID: u32 = 202;
        let mut sim = Sim::new();
        sim.connect(SERVER_FD, Role::Server);
        sim.read(SERVER_FD, b"GET /call HTTP/1.1\r\n\r\n");
        // The serving thread calls a downstream service...
        sim.connect(CLIENT_FD, Role::Client);
        sim.write(CLIENT_FD, b"GET /downstream HTTP/1.1\r\n\r\n");
        sim.read(CLIENT_FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        // ...another thread makes an unrelated call...
        sim.data(
            OTHER_TID,
            CLIENT_FD + 1,
            Direction::Egress,
            b"GET /unrelated HTTP/1.1\r\n\r\n",
        );
        sim.data(
            OTHER_TID,
            CLIENT_FD + 1,
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        // ...and the app writes its own traceparent on a call from the serving thread.
        sim.write(
            CLIENT_FD,
            b"GET /propagated HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
        );
        sim.read(CLIENT_FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        sim.write(SERVER_FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        // After the response the thread is no longer serving.
        sim.write(CLIENT_FD, b"GET /after HTTP/1.1\r\n\r\n");
        sim.read(CLIENT_FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");

        let txs = sim.take();
        let by_target = |target: &str| txs.iter().find(|t| t.target == target).unwrap().trace;
        let server = by_target("/call");
        let downstream = by_target("/downstream");
        assert_eq!(downstream.trace_id, server.trace_id);
        assert_eq!(downstream.parent_span_id, Some(server.span_id));
        assert_ne!(downstream.span_id, server.span_id);
        let unrelated = by_target("/unrelated");
        assert_ne!(unrelated.trace_id, server.trace_id);
        assert_eq!(unrelated.parent_span_id, None);
        let propagated = by_target("/propagated");
        let header =
            parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(propagated.trace_id, header.trace_id);
        assert_eq!(propagated.parent_span_id, Some(header.parent_id));
        let after = by_target("/after");
        assert_ne!(after.trace_id, server.trace_id);
        assert_eq!(after.parent_span_id, None);
        assert!(sim.tracker.serving.is_empty());
    }

    #[test]
    fn protocol_switch_ends_tracking_after_its_transaction() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        sim.read(
            FD,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        sim.write(
            FD,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        );
        assert_eq!(
            summary(&sim.take()),
            expected(&[("GET", "/ws", 101, Some(0), None)])
        );
        sim.read(FD, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
        sim.read(FD, b"GET /not-http-anymore HTTP/1.1\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        sim.close(FD);
        assert!(sim.take().is_empty());
    }

    #[test]
    fn heads_beyond_the_capture_still_make_one_span_each() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        let mut ends = Vec::new();
        let mut txs = Vec::new();
        for i in 0..3 {
            let req = format!(
                "GET /cookie/{i} HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
                "c".repeat(3000)
            );
            sim.read(FD, req.as_bytes());
            // The response's end is unknown (its head is cut off): it is over when the next
            // request arrives, or the connection closes.
            let resp = format!(
                "HTTP/1.1 200 OK\r\nSet-Cookie: {}\r\nContent-Length: 2\r\n\r\nok",
                "s".repeat(2000)
            );
            ends.push(sim.write(FD, resp.as_bytes()));
            txs.extend(sim.take());
            assert_eq!(txs.len(), i, "after exchange {i}");
        }
        sim.close(FD);
        txs.extend(sim.take());
        assert_eq!(
            summary(&txs),
            expected(&[
                ("GET", "/cookie/0", 200, None, None),
                ("GET", "/cookie/1", 200, None, None),
                ("GET", "/cookie/2", 200, None, None),
            ])
        );
        let got: Vec<u64> = txs.iter().map(|t| t.end_ns).collect();
        assert_eq!(got, ends);
    }

    #[test]
    fn a_response_lost_whole_ends_with_status_zero_instead_of_shifting_later_ones() {
        let mut sim = Sim::new();
        sim.connect(FD, Role::Server);
        sim.read(FD, b"GET /first HTTP/1.1\r\n\r\n");
        // Only the body of a previous write was captured; the response head is not visible.
        let meta = sim.meta(PID, TID, FD);
        let sendfile = Event::Data {
            meta,
            direction: Direction::Egress,
            total_len: 4000,
            payload: &[],
        };
        sim.tracker.on_event(&sendfile, &mut sim.out);
        sim.read(FD, b"GET /second HTTP/1.1\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            summary(&sim.take()),
            expected(&[
                ("GET", "/first", 0, Some(0), None),
                ("GET", "/second", 404, Some(0), Some(0))
            ])
        );
    }

    #[test]
    fn addresses_resolved_before_the_connect_event_are_kept() {
        let mut sim = Sim::new();
        let local: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        sim.tracker.set_addresses(PID, FD, Some(local), None);
        sim.connect(FD, Role::Server);
        sim.read(FD, b"GET / HTTP/1.1\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let txs = sim.take();
        assert_eq!(txs[0].local, Some(local));
        assert_eq!(txs[0].peer, Some("10.0.0.9:40000".parse().unwrap()));
        // A reused fd does not inherit the previous socket's addresses.
        sim.close(FD);
        sim.connect(FD, Role::Server);
        sim.read(FD, b"GET / HTTP/1.1\r\n\r\n");
        sim.write(FD, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(sim.take()[0].local, None);
    }

    #[test]
    fn connection_limit_evicts_the_least_recently_active() {
        let mut sim = Sim::with_limits(TrackerLimits {
            max_connections: 4,
            max_buffered_bytes: 1 << 20,
        });
        for fd in 0..10 {
            sim.connect(fd, Role::Server);
            sim.read(fd, format!("GET /{fd} HTTP/1.1\r\n\r\n").as_bytes());
        }
        assert_eq!(sim.tracker.connections(), 4);
        assert_eq!(sim.tracker.stats().evicted_connections, 6);
        assert_eq!(sim.tracker.stats().discarded_requests, 6);
        // The oldest were dropped: their responses make no spans; the newest still do.
        sim.write(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        sim.write(9, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            summary(&sim.take()),
            expected(&[("GET", "/9", 200, Some(0), Some(0))])
        );
    }

    #[test]
    fn recent_activity_protects_an_old_connection_and_stale_entries_are_compacted() {
        let mut sim = Sim::with_limits(TrackerLimits {
            max_connections: 4,
            max_buffered_bytes: 1 << 20,
        });
        for fd in 0..4 {
            sim.connect(fd, Role::Server);
        }
        // fd 0 is the oldest connection but the most recently active one.
        for _ in 0..1000 {
            sim.read(0, b"GET /busy HTTP/1.1\r\n\r\n");
            sim.write(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        assert_eq!(sim.take().len(), 1000);
        assert!(
            sim.tracker.lru.len() <= 2 * 4 + 64 + 1,
            "{}",
            sim.tracker.lru.len()
        );
        sim.connect(4, Role::Server);
        sim.connect(5, Role::Server);
        assert_eq!(sim.tracker.stats().evicted_connections, 2);
        for (fd, kept) in [
            (0, true),
            (1, false),
            (2, false),
            (3, true),
            (4, true),
            (5, true),
        ] {
            assert_eq!(sim.tracker.conns.contains_key(&(PID, fd)), kept, "fd {fd}");
        }
    }

    #[test]
    fn buffered_bytes_stay_within_the_limit() {
        let limit = 16 * 1024;
        let mut sim = Sim::with_limits(TrackerLimits {
            max_connections: 1000,
            max_buffered_bytes: limit,
        });
        // Many connections each holding half a head.
        let partial = format!("GET /slow HTTP/1.1\r\nX-Pad: {}", "p".repeat(900));
        for fd in 0..100 {
            sim.connect(fd, Role::Server);
            sim.read(fd, partial.as_bytes());
            assert!(sim.tracker.buffered <= limit);
        }
        assert!(sim.tracker.stats().evicted_connections > 50);
        assert!(sim.tracker.connections() < 20);
        // The most recent one is intact and completes normally.
        sim.read(99, b"\r\n\r\n");
        sim.write(99, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            summary(&sim.take()),
            expected(&[("GET", "/slow", 200, Some(0), Some(0))])
        );
        // Accounting returns to zero when everything is closed.
        for fd in 0..100 {
            sim.close(fd);
        }
        assert_eq!(sim.tracker.buffered, 0);
    }
}
