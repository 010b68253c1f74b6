//! The connection layer: what every protocol shares and none knows about. Connection identity
//! and lifetime, which side the instrumented process is on, each direction of a connection as an
//! ordered byte stream with gaps ([`stream::Chunk`]), protocol detection, memory and connection
//! bounds with eviction, and trace-context bookkeeping ([`context`]).
//!
//! Capture events come in ([`Connections::on_event`]); each connection's chunks go to the parser
//! of the protocol it was recognized as; completed [`Transaction`]s come out.

use std::net::SocketAddr;

use crate::capture::events::{Direction, Event, Role};
use crate::protocol::{self, Context, Parser, Side, Verdict};
use crate::transaction::{SpanKind, Transaction};

pub mod context;
pub mod reassembly;
pub mod segments;
pub mod stream;
mod tls;

use context::TraceBook;
use stream::Chunk;

/// Connection lookups happen for every captured syscall: a fast non-cryptographic hasher (the
/// keys are pids and fds the kernel hands us, not attacker-chosen strings).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The connections, by key and in order of last activity, least recent first, for eviction: a
/// touch relinks the entry its lookup found, so a chunk costs one lookup.
type ConnTable = hashlink::LinkedHashMap<ConnKey, Conn, foldhash::fast::RandomState>;

/// Chunks of a connection joined mid-stream that may pass before one is recognized.
pub const MAX_UNRECOGNIZED_CHUNKS: u32 = 8;

/// Bounds on the connection layer's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections tracked at once; the least recently active one is evicted beyond this.
    pub max_connections: usize,
    /// Heap bytes parsers hold (split messages, queued requests), across all connections; the
    /// least recently active connections are evicted beyond this.
    pub max_buffered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_buffered_bytes: 4 << 20,
        }
    }
}

/// Counters of what the connection layer gave up on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections dropped to stay within [`Limits`].
    pub evicted_connections: u64,
    /// Connections found not to carry a protocol the sidecar parses (TLS, unknown protocols,
    /// protocol switches), or whose parser gave up on them.
    pub abandoned_connections: u64,
    /// Requests dropped without a transaction: evicted or abandoned with their connection, or
    /// beyond a parser's bounds.
    pub discarded_requests: u64,
}

/// A connection as the capture identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnKey {
    /// A socket descriptor of a process (the tracepoint capture modes).
    Fd { pid: u32, fd: i32 },
    /// A kernel socket by its cookie (the pod-scoped capture), whose process may be learned
    /// only after its first bytes.
    Socket(u64),
}

impl ConnKey {
    fn fd(pid: u32, fd: i32) -> Self {
        Self::Fd { pid, fd }
    }
}

/// What the capture saw of a connection being set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// `Unknown` when the capture did not see who accepted and who connected.
    pub role: Role,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

/// What is known of a connection's protocol.
#[derive(Debug)]
enum State {
    /// Not recognized yet; `chunks` have passed unrecognized.
    Detecting {
        chunks: u32,
    },
    Parsing(Box<dyn Parser>),
    /// Not a protocol we parse: its traffic is ignored until it is closed or replaced.
    Abandoned,
}

#[derive(Debug)]
struct Conn {
    /// Unique among the connections ever tracked: the connection's id in the trace book.
    serial: u64,
    pid: u32,
    role: Role,
    /// Seen from its start (accepted or connected), so its first bytes start the protocol.
    from_start: bool,
    state: State,
    last_event_ns: u64,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    /// Its parser's heap bytes when last counted into [`Connections::buffered`].
    heap: usize,
    /// Its bytes are the plaintext of an instrumented TLS session (see [`tls`]).
    tls: bool,
}

/// What a parser needs besides its own state, borrowed from the [`Connections`].
struct Shared<'a> {
    traces: &'a mut TraceBook,
    stats: &'a mut Stats,
    out: &'a mut Vec<Transaction>,
}

impl Conn {
    /// A connection numbered after `last_serial`, which it advances. `pid` 0: the process is not
    /// known yet.
    fn new(last_serial: &mut u64, pid: u32, role: Role, peer: Option<SocketAddr>) -> Self {
        *last_serial += 1;
        Self {
            serial: *last_serial,
            pid,
            role,
            from_start: role != Role::Unknown,
            state: State::Detecting { chunks: 0 },
            last_event_ns: 0,
            local: None,
            peer,
            heap: 0,
            tls: false,
        }
    }

    fn heap_bytes(&self) -> usize {
        match &self.state {
            State::Parsing(parser) => parser.heap_bytes(),
            _ => 0,
        }
    }

    fn kind(&self) -> SpanKind {
        if self.role == Role::Client {
            SpanKind::Client
        } else {
            SpanKind::Server
        }
    }

    /// Who sent bytes moving in `direction`, once the role is known.
    fn sender(&self, direction: Direction) -> Option<Side> {
        match (self.role, direction) {
            (Role::Unknown, _) => None,
            (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress) => {
                Some(Side::Client)
            }
            _ => Some(Side::Server),
        }
    }

    /// Runs `f` on the parser with a context for this connection, if it has one.
    fn with_parser(
        &mut self,
        shared: &mut Shared<'_>,
        f: impl FnOnce(&mut dyn Parser, &mut Context<'_>) -> Verdict,
    ) {
        let kind = self.kind();
        let State::Parsing(parser) = &mut self.state else {
            return;
        };
        let mut cx = Context {
            kind,
            pid: self.pid,
            conn: self.serial,
            local: self.local,
            peer: self.peer,
            from_start: self.from_start,
            tls: self.tls,
            traces: shared.traces,
            out: shared.out,
            discarded: &mut shared.stats.discarded_requests,
        };
        if f(parser.as_mut(), &mut cx) == Verdict::Abandon {
            parser.discard(&mut cx);
            self.state = State::Abandoned;
            shared.stats.abandoned_connections += 1;
        }
    }

    /// One chunk moving in `direction`, by process `pid` (0: not known).
    fn on_chunk(
        &mut self,
        pid: u32,
        direction: Direction,
        chunk: &Chunk<'_>,
        shared: &mut Shared<'_>,
    ) {
        self.last_event_ns = chunk.timestamp_ns;
        if self.role == Role::Server
            && direction == Direction::Egress
            && pid != 0
            && let Some(tid) = chunk.tid
        {
            // Before the parser sees the response, which may complete its exchange: the thread
            // that writes it is the one that served the request.
            shared
                .traces
                .thread_writes(self.serial, pid, tid, shared.out);
        }
        let sender = self.sender(direction);
        if let State::Detecting { chunks } = &mut self.state {
            let detected = if chunk.at_boundary {
                protocol::detect(chunk.visible, sender)
            } else {
                None
            };
            let Some((protocol, sender)) = detected else {
                // A connection seen from its start must say what it is at once, unless its first
                // bytes were not captured (then its start is lost); one joined mid-stream may
                // first show the tail of an exchange in progress.
                *chunks += 1;
                if chunk.visible.is_empty() {
                    self.from_start = false;
                }
                if self.from_start || *chunks >= MAX_UNRECOGNIZED_CHUNKS {
                    self.state = State::Abandoned;
                    shared.stats.abandoned_connections += 1;
                }
                return;
            };
            if self.role == Role::Unknown {
                self.role = match (sender, direction) {
                    (Side::Client, Direction::Ingress) | (Side::Server, Direction::Egress) => {
                        Role::Server
                    }
                    _ => Role::Client,
                };
            }
            self.state = State::Parsing((protocol.parser)());
        }
        let Some(side) = self.sender(direction) else {
            return;
        };
        self.with_parser(shared, |parser, cx| parser.feed(side, chunk, cx));
    }

    /// The connection ended at `end_ns`.
    fn finish(&mut self, end_ns: u64, shared: &mut Shared<'_>) {
        self.with_parser(shared, |parser, cx| {
            parser.finish(end_ns, cx);
            Verdict::Keep
        });
    }

    /// Drops the connection's exchanges in flight without transactions.
    fn discard(&mut self, shared: &mut Shared<'_>) {
        self.with_parser(shared, |parser, cx| {
            parser.discard(cx);
            Verdict::Keep
        });
    }
}

/// Every tracked connection. Single-threaded: owned by the event loop.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    conns: ConnTable,
    traces: TraceBook,
    /// Sum of the connections' heap bytes.
    buffered: usize,
    stats: Stats,
    next_serial: u64,
    /// Transactions the trace book released while a connection was evicted (where no output is
    /// at hand): they go out with the next call that has one.
    released: Vec<Transaction>,
    /// TLS plaintext of sessions whose socket is not known yet.
    held: tls::Held,
}

impl Connections {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            conns: ConnTable::default(),
            traces: TraceBook::default(),
            buffered: 0,
            stats: Stats::default(),
            next_serial: 0,
            released: Vec::new(),
            held: tls::Held::default(),
        }
    }

    /// Feeds one decoded event of the tracepoint capture modes; completed transactions are
    /// appended to `out`.
    pub fn on_event(&mut self, event: &Event<'_>, out: &mut Vec<Transaction>) {
        match *event {
            Event::Connect {
                meta,
                role,
                peer,
                local,
            } => self.open(
                ConnKey::fd(meta.pid, meta.fd),
                meta.pid,
                Opened { role, local, peer },
                meta.timestamp_ns,
                out,
            ),
            Event::Close { meta } => {
                self.close(ConnKey::fd(meta.pid, meta.fd), meta.timestamp_ns, out);
            }
            Event::Data {
                meta,
                direction,
                total_len,
                payload,
            } => {
                let chunk =
                    Chunk::of_call(payload, u64::from(total_len), meta.timestamp_ns, meta.tid);
                self.chunk(
                    ConnKey::fd(meta.pid, meta.fd),
                    meta.pid,
                    direction,
                    &chunk,
                    out,
                );
            }
            Event::Pieces {
                meta,
                direction,
                total_len,
                pieces,
            } => {
                let key = ConnKey::fd(meta.pid, meta.fd);
                self.pieces(key, &meta, direction, total_len, pieces, out);
            }
            Event::TlsData {
                meta,
                session,
                direction,
                total_len,
                data,
            } => self.tls_data(&meta, session, direction, total_len, data, out),
            Event::TlsTie { meta, session } => self.tls_tie(&meta, session, out),
            Event::TlsClose { meta, session } => self.held.forget(meta.pid, session.ssl),
        }
    }

    /// One captured call as pieces: one chunk per piece, each followed by the bytes up to the
    /// next piece; bytes before the first piece are a chunk of their own, with nothing visible.
    fn pieces(
        &mut self,
        key: ConnKey,
        meta: &crate::capture::events::Meta,
        direction: Direction,
        total_len: u32,
        pieces: crate::capture::events::Pieces<'_>,
        out: &mut Vec<Transaction>,
    ) {
        let like = Chunk::of_call(&[], 0, meta.timestamp_ns, meta.tid);
        stream::cut(pieces.iter(), 0, u64::from(total_len), like, &mut |chunk| {
            self.chunk(key, meta.pid, direction, &chunk, out);
        });
    }

    /// A connection starts being tracked, by process `pid` (0: not known yet), as `opened` says. A key already tracked means its end was
    /// missed: that connection ends first.
    pub fn open(
        &mut self,
        key: ConnKey,
        pid: u32,
        opened: Opened,
        timestamp_ns: u64,
        out: &mut Vec<Transaction>,
    ) {
        let Opened { role, local, peer } = opened;
        // Addresses the lead resolved for this socket before its connect event.
        let resolved = self
            .conns
            .get(&key)
            .filter(|c| c.role == Role::Unknown && c.last_event_ns == 0)
            .map(|c| (c.local, c.peer));
        self.end_connection(key, timestamp_ns, out);
        let (resolved_local, resolved_peer) = resolved.unwrap_or_default();
        let mut conn = Conn::new(&mut self.next_serial, pid, role, peer.or(resolved_peer));
        conn.local = local.or(resolved_local);
        self.insert(key, conn);
        self.after_call(out);
    }

    /// The connection ended at `timestamp_ns`.
    pub fn close(&mut self, key: ConnKey, timestamp_ns: u64, out: &mut Vec<Transaction>) {
        self.end_connection(key, timestamp_ns, out);
        self.after_call(out);
    }

    /// Stops tracking a connection without transactions: its exchanges in flight are dropped
    /// (its bytes turned out to belong to a process that is not instrumented).
    pub fn discard(&mut self, key: ConnKey, out: &mut Vec<Transaction>) {
        self.drop_connection(key);
        self.after_call(out);
    }

    /// Whether a connection is tracked.
    pub fn contains(&self, key: ConnKey) -> bool {
        self.conns.contains_key(&key)
    }

    /// Time passed (`now_ns`, `CLOCK_MONOTONIC`): client calls held too long for the request
    /// they may belong to go out on their own (see [`TraceBook`]).
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Transaction>) {
        self.traces.expire(now_ns, out);
        self.after_call(out);
    }

    /// The next chunk of a connection, moving in `direction`, by process `pid` (0: not known
    /// here; the connection keeps the process it knew, and takes a new one the capture names).
    /// A connection not seen before is tracked from here, with an unknown role.
    pub fn chunk(
        &mut self,
        key: ConnKey,
        pid: u32,
        direction: Direction,
        chunk: &Chunk<'_>,
        out: &mut Vec<Transaction>,
    ) {
        self.on_chunk(key, pid, direction, chunk, out);
        self.after_call(out);
    }

    /// Bytes of a connection moving in `direction`; a connection not seen before is tracked
    /// from here, with an unknown role.
    fn on_chunk(
        &mut self,
        key: ConnKey,
        pid: u32,
        direction: Direction,
        chunk: &Chunk<'_>,
        out: &mut Vec<Transaction>,
    ) {
        if self.full() && !self.conns.contains_key(&key) {
            self.evict_oldest();
        }
        let conn = match self.conns.entry(key) {
            hashlink::linked_hash_map::Entry::Occupied(mut entry) => {
                entry.to_back();
                entry.into_mut()
            }
            hashlink::linked_hash_map::Entry::Vacant(entry) => {
                entry.insert(Conn::new(&mut self.next_serial, pid, Role::Unknown, None))
            }
        };
        if pid != 0 {
            conn.pid = pid;
        }
        if matches!(conn.state, State::Abandoned) {
            return;
        }
        let mut shared = Shared {
            traces: &mut self.traces,
            stats: &mut self.stats,
            out,
        };
        conn.on_chunk(pid, direction, chunk, &mut shared);
        let heap = conn.heap_bytes();
        self.buffered = (self.buffered + heap).saturating_sub(conn.heap);
        conn.heap = heap;
        while self.buffered > self.limits.max_buffered_bytes && self.evict_oldest() {}
    }

    /// The lead resolved a connection's addresses (from /proc) after the fact. Unknown
    /// connections are created, with an unknown role, so addresses found for sockets that
    /// predate the sidecar are kept for their first requests.
    pub fn set_addresses(
        &mut self,
        key: ConnKey,
        pid: u32,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    ) {
        if !self.conns.contains_key(&key) {
            let conn = Conn::new(&mut self.next_serial, pid, Role::Unknown, None);
            self.insert(key, conn);
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
    pub fn forget_process(&mut self, pid: u32, out: &mut Vec<Transaction>) {
        let keys: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.pid == pid)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let ts = self.conns.get(&key).map_or(0, |c| c.last_event_ns);
            self.end_connection(key, ts, out);
        }
        self.traces.forget_process(pid, out);
        self.after_call(out);
    }

    /// Connections currently tracked.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// What the connection layer gave up on so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Heap bytes the parsers hold, across all connections.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Threads serving a request right now.
    pub fn serving_threads(&self) -> usize {
        self.traces.serving()
    }

    /// Client calls held while they may still join the request they were made for.
    pub fn waiting_calls(&self) -> usize {
        self.traces.waiting()
    }

    /// What every call with an output ends with: what evictions released.
    fn after_call(&mut self, out: &mut Vec<Transaction>) {
        out.append(&mut self.released);
    }

    /// Tracks a new connection (no parser yet, so no heap bytes), as the most recently active.
    fn insert(&mut self, key: ConnKey, conn: Conn) {
        while self.full() && self.evict_oldest() {}
        self.conns.insert(key, conn);
    }

    /// A new connection would take the table past [`Limits::max_connections`].
    fn full(&self) -> bool {
        self.conns.len() >= self.limits.max_connections.max(1)
    }

    fn remove(&mut self, key: ConnKey) -> Option<Conn> {
        let conn = self.conns.remove(&key)?;
        self.uncount(&conn);
        Some(conn)
    }

    /// Takes a connection that leaves the table out of [`Connections::buffered`].
    fn uncount(&mut self, conn: &Conn) {
        self.buffered = self.buffered.saturating_sub(conn.heap);
    }

    fn end_connection(&mut self, key: ConnKey, ts: u64, out: &mut Vec<Transaction>) {
        if let Some(mut conn) = self.remove(key) {
            let mut shared = Shared {
                traces: &mut self.traces,
                stats: &mut self.stats,
                out,
            };
            conn.finish(ts, &mut shared);
        }
    }

    /// Drops the least recently active connection; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some((_, conn)) = self.conns.pop_front() else {
            return false;
        };
        self.uncount(&conn);
        self.discard_exchanges(conn);
        self.stats.evicted_connections += 1;
        true
    }

    /// Drops a connection's exchanges without transactions; false when it was not tracked.
    fn drop_connection(&mut self, key: ConnKey) -> bool {
        let Some(conn) = self.remove(key) else {
            return false;
        };
        self.discard_exchanges(conn);
        true
    }

    /// Ends a connection taken out of the table without transactions.
    fn discard_exchanges(&mut self, mut conn: Conn) {
        // The parser hands over no transactions; the trace book may release other connections'
        // held calls, which go out with the next call.
        let mut shared = Shared {
            traces: &mut self.traces,
            stats: &mut self.stats,
            out: &mut self.released,
        };
        conn.discard(&mut shared);
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
