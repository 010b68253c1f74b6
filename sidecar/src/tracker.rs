//! Per-connection state machine: turns the kernel's socket events into completed
//! [`HttpTransaction`]s, one per request, with trace context.
//!
//! A connection is keyed by (pid, fd). Its role says which direction carries requests: a server
//! reads requests and writes responses, a client the opposite. Each direction is split into
//! messages by a [`MessageReader`]; requests wait in a FIFO queue (pipelining) and each final
//! response completes the oldest one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use crate::events::{Direction, Event, Meta, Role};
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

    /// Data moved by one syscall. `first_ns` is when its first byte moved (exit of a read, entry
    /// of a write), `last_ns` when its last byte did (exit).
    fn on_data(
        &mut self,
        meta: &Meta,
        direction: Direction,
        total_len: u32,
        first_ns: u64,
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
            self.read_requests(&mut seg, meta, first_ns, sink)
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
        first_ns: u64,
        sink: &mut Sink<'_>,
    ) -> Verdict {
        loop {
            let step = match self.requests.next(seg, first_ns, MAX_HEAD_BYTES) {
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
        if self.responses.is_lost() {
            self.responses.resync();
            self.orphan_response = false;
            if self.pending.front().is_some_and(|e| e.status != 0) {
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

/// Random non-zero ids (all-zero trace and span ids are invalid).
fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
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

/// Turns socket events into HTTP transactions. Single-threaded: owned by the event loop.
#[derive(Debug)]
pub struct Tracker {
    limits: TrackerLimits,
    conns: HashMap<ConnKey, Conn>,
    /// Connections by last activity, oldest first, for eviction.
    lru: BTreeMap<u64, ConnKey>,
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
            conns: HashMap::new(),
            lru: BTreeMap::new(),
            next_seq: 0,
            serving: HashMap::new(),
            buffered: 0,
            stats: TrackerStats::default(),
        }
    }

    /// Feeds one decoded kernel event; completed transactions are appended to `out`.
    pub fn on_event(&mut self, event: &Event<'_>, out: &mut Vec<HttpTransaction>) {
        match *event {
            Event::Connect { meta, role, peer } => {
                // A known (pid, fd) being connected again means its close was missed.
                self.end_connection((meta.pid, meta.fd), meta.timestamp_ns, out);
                let key = (meta.pid, meta.fd);
                self.insert(key, Conn::new(meta.pid, role, peer, 0));
            }
            Event::Close { meta } => {
                self.end_connection((meta.pid, meta.fd), meta.timestamp_ns, out);
            }
            Event::Data {
                meta,
                direction,
                total_len,
                start_ns,
                payload,
            } => {
                let key = (meta.pid, meta.fd);
                if !self.conns.contains_key(&key) {
                    self.insert(key, Conn::new(meta.pid, Role::Unknown, None, 0));
                }
                self.touch(key);
                let Some(conn) = self.conns.get_mut(&key) else {
                    return;
                };
                if conn.abandoned {
                    return;
                }
                let first_ns = match direction {
                    Direction::Ingress => meta.timestamp_ns,
                    Direction::Egress => start_ns,
                };
                let before = conn.heap_bytes();
                let mut sink = Sink {
                    serving: &mut self.serving,
                    stats: &mut self.stats,
                    out,
                };
                let verdict =
                    conn.on_data(&meta, direction, total_len, first_ns, payload, &mut sink);
                if verdict == Verdict::Abandon {
                    conn.abandon(&mut self.serving);
                    self.stats.abandoned_connections += 1;
                }
                let after = conn.heap_bytes();
                self.buffered = (self.buffered + after).saturating_sub(before);
                while self.buffered > self.limits.max_buffered_bytes && self.evict_oldest() {}
            }
        }
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
        self.serving.retain(|&(serving_pid, _), _| serving_pid != pid);
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
        conn.lru_seq = self.bump();
        self.lru.insert(conn.lru_seq, key);
        self.buffered += conn.heap_bytes();
        self.conns.insert(key, conn);
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn touch(&mut self, key: ConnKey) {
        let seq = self.bump();
        if let Some(conn) = self.conns.get_mut(&key) {
            self.lru.remove(&conn.lru_seq);
            conn.lru_seq = seq;
            self.lru.insert(seq, key);
        }
    }

    fn remove(&mut self, key: ConnKey) -> Option<Conn> {
        let conn = self.conns.remove(&key)?;
        self.lru.remove(&conn.lru_seq);
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
        let Some((_, key)) = self.lru.pop_first() else {
            return false;
        };
        if let Some(mut conn) = self.remove(key) {
            let dropped = conn.discard(&mut self.serving);
            self.stats.discarded_requests += dropped as u64;
            self.stats.evicted_connections += 1;
        }
        true
    }
}
