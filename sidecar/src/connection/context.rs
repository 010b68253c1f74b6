//! Trace context, the same for every protocol: W3C `traceparent` values a parser found in the
//! bytes, the span ids given to each exchange, and which request each thread is serving, so that
//! a call the thread makes meanwhile (HTTP, gRPC, a database query) joins that request's trace.

use std::cell::RefCell;

use rand::{RngCore, SeedableRng, rngs::SmallRng};
use smallvec::SmallVec;

use crate::transaction::{SpanKind, Transaction};

/// Lookups happen for every exchange: a fast non-cryptographic hasher (keys are pids and tids
/// the kernel hands us, not attacker-chosen strings).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A W3C trace context `traceparent` value (version `00` layout), as a protocol carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub sampled: bool,
}

/// W3C trace context assigned to a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent span: from an incoming or app-written `traceparent`, or the server request the
    /// same thread was serving when it sent this one.
    pub parent_span_id: Option<[u8; 8]>,
    /// The sampled flag of an incoming `traceparent` (true when the trace starts here).
    pub sampled: bool,
}

/// Parses a `traceparent` value; `None` unless it is valid per W3C Trace Context.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    let value = value.trim_ascii();
    // version "-" trace-id "-" parent-id "-" flags; later versions may append "-" fields.
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    decode_hex(&value[3..35], &mut trace_id)?;
    let mut parent_id = [0u8; 8];
    decode_hex(&value[36..52], &mut parent_id)?;
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        sampled: flags & 1 == 1,
    })
}

/// Lowercase hex only, as the specification requires.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [hi, lo] => Some((hex_digit(*hi)? << 4) | hex_digit(*lo)?),
        _ => None,
    }
}

fn decode_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

/// The server request a thread is serving, for client calls it makes meanwhile.
#[derive(Clone, Copy, Debug)]
struct Serving {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl Serving {
    fn of(trace: &TraceContext) -> Self {
        Self {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            sampled: trace.sampled,
        }
    }

    /// The context of a client call made while serving this request.
    fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random_id(),
            parent_span_id: Some(self.span_id),
            sampled: self.sampled,
        }
    }
}

/// A client exchange that started on a thread while server exchanges of unknown thread were in
/// flight: the thread may have been serving one of them.
#[derive(Debug)]
struct Waiting {
    pid: u32,
    tid: u32,
    /// The newest server exchange of unknown thread when the call started: only it and older
    /// ones can be what the thread was serving.
    newest: u64,
    /// The request the thread was serving, once its response named the thread.
    parent: Option<Serving>,
    /// The call's transaction, held while its parent may still become known.
    done: Option<Transaction>,
}

/// How long a completed client call waits for the request it may belong to (`CLOCK_MONOTONIC`
/// ns after its end): a request in flight longer than this loses the link.
pub const MAX_WAIT_NS: u64 = 5_000_000_000;
/// Bounds on the bookkeeping for captures that do not see the serving thread: beyond them, new
/// exchanges are not linked rather than costing memory.
const MAX_UNTHREADED: usize = 65_536;
const MAX_WAITING: usize = 4096;

/// Which request each thread of the instrumented processes is serving.
///
/// A capture that sees the thread that reads a request (the tracepoint modes) links a client call
/// to the request its thread is serving when the call starts. One that sees requests arrive
/// without a thread (the pod-scoped mode: ingress runs in softirq) learns the serving thread only
/// from the response, which the serving thread writes after its calls are done: such a call is
/// held until a response on the same thread names the request (then it joins that request's
/// trace), or until every request that could have been its parent has ended without (then it
/// goes out as a trace of its own).
#[derive(Debug, Default)]
pub struct TraceBook {
    /// (pid, tid) to the server span.
    serving: HashMap<(u32, u32), Serving>,
    /// Server exchanges whose thread is not known yet, by connection, oldest first, with their
    /// start order: one in flight per connection for HTTP/1, so a hash map of inline lists (a
    /// tree keyed by (connection, order) was a sixth of the pod-scoped mode's userspace time).
    /// A list left empty stays, so that a keep-alive connection's next request finds its entry
    /// (one lookup per request and per response); empty ones are swept as they pile up.
    unthreaded: HashMap<u64, SmallVec<[(u64, Serving); 1]>>,
    /// Exchanges in `unthreaded`.
    unthreaded_len: usize,
    last_unthreaded: u64,
    /// Client exchanges that may still join a request of unknown thread, by span id.
    waiting: HashMap<[u8; 8], Waiting>,
}

impl TraceBook {
    /// The context of an exchange that starts now on thread `tid` of `pid`, on connection `conn`
    /// (any id unique among open connections): a server span continues a propagated
    /// `traceparent` or starts a trace, and its thread is serving it from now on; a client span
    /// honours a `traceparent` the app wrote, else joins the request its thread is serving, else
    /// starts a trace (which it may leave for a request whose thread is learned later, see
    /// [`TraceBook::thread_writes`]). `tid` is `None` when the capture does not know the thread.
    pub fn start(
        &mut self,
        kind: SpanKind,
        pid: u32,
        tid: Option<u32>,
        conn: u64,
        propagated: Option<TraceParent>,
    ) -> TraceContext {
        match kind {
            SpanKind::Server => {
                let trace = propagated.map_or_else(root_context, child_of);
                match tid {
                    Some(tid) => {
                        self.serving.insert((pid, tid), Serving::of(&trace));
                    }
                    None if self.unthreaded_len < MAX_UNTHREADED => {
                        self.last_unthreaded += 1;
                        let order = self.last_unthreaded;
                        self.unthreaded
                            .entry(conn)
                            .or_default()
                            .push((order, Serving::of(&trace)));
                        self.unthreaded_len += 1;
                    }
                    None => {}
                }
                trace
            }
            SpanKind::Client => {
                if let Some(tp) = propagated {
                    return child_of(tp);
                }
                let Some(tid) = tid else {
                    return root_context();
                };
                if let Some(server) = self.serving.get(&(pid, tid)) {
                    return server.child();
                }
                let trace = root_context();
                if self.unthreaded_len > 0 && self.waiting.len() < MAX_WAITING {
                    self.waiting.insert(
                        trace.span_id,
                        Waiting {
                            pid,
                            tid,
                            newest: self.last_unthreaded,
                            parent: None,
                            done: None,
                        },
                    );
                }
                trace
            }
        }
    }

    /// The exchange of `trace`, started on connection `conn`, ends without a transaction: its
    /// thread no longer serves it. Client calls that can no longer join a request go to `out`.
    pub fn end(
        &mut self,
        kind: SpanKind,
        pid: u32,
        tid: Option<u32>,
        conn: u64,
        trace: &TraceContext,
        out: &mut Vec<Transaction>,
    ) {
        match (kind, tid) {
            (SpanKind::Server, Some(tid)) => {
                let key = (pid, tid);
                if self
                    .serving
                    .get(&key)
                    .is_some_and(|s| s.span_id == trace.span_id)
                {
                    self.serving.remove(&key);
                }
            }
            (SpanKind::Server, None) => {
                let found = self
                    .unthreaded
                    .get(&conn)
                    .and_then(|list| list.iter().position(|(_, s)| s.span_id == trace.span_id));
                if let Some(index) = found {
                    self.remove_unthreaded(conn, index);
                    self.release_orphans(out);
                }
            }
            (SpanKind::Client, _) => {
                self.waiting.remove(&trace.span_id);
            }
        }
    }

    /// The exchange of `transaction` (on thread `tid`, connection `conn`) is complete: as
    /// [`TraceBook::end`], and its transaction goes to `out`, or is held while it may still join
    /// a request.
    pub fn complete(
        &mut self,
        mut transaction: Transaction,
        tid: Option<u32>,
        conn: u64,
        out: &mut Vec<Transaction>,
    ) {
        match transaction.kind {
            SpanKind::Server => {
                let (pid, trace) = (transaction.pid, transaction.trace);
                self.end(SpanKind::Server, pid, tid, conn, &trace, out);
            }
            SpanKind::Client => {
                if let Some(waiting) = self.waiting.get_mut(&transaction.trace.span_id) {
                    let Some(parent) = waiting.parent else {
                        waiting.done = Some(transaction);
                        return;
                    };
                    self.waiting.remove(&transaction.trace.span_id);
                    adopt(&mut transaction, &parent);
                }
            }
        }
        out.push(transaction);
    }

    /// Thread `tid` of `pid` writes on connection `conn`, which it serves: the oldest request of
    /// the connection whose thread was unknown is that thread's, and the client calls the thread
    /// made while serving it join its trace.
    pub fn thread_writes(&mut self, conn: u64, pid: u32, tid: u32, out: &mut Vec<Transaction>) {
        let Some(list) = self
            .unthreaded
            .get_mut(&conn)
            .filter(|list| !list.is_empty())
        else {
            return;
        };
        let (order, served) = list.remove(0);
        self.unthreaded_len -= 1;
        self.sweep_unthreaded();
        if self.waiting.is_empty() {
            return;
        }
        let mut joined = Vec::new();
        for (span_id, waiting) in &mut self.waiting {
            if waiting.parent.is_none()
                && (waiting.pid, waiting.tid) == (pid, tid)
                && waiting.newest >= order
            {
                waiting.parent = Some(served);
                if waiting.done.is_some() {
                    joined.push(*span_id);
                }
            }
        }
        for span_id in joined {
            if let Some(Waiting {
                done: Some(mut transaction),
                ..
            }) = self.waiting.remove(&span_id)
            {
                adopt(&mut transaction, &served);
                out.push(transaction);
            }
        }
        self.release_orphans(out);
    }

    /// Completed client calls that waited longer than [`MAX_WAIT_NS`] at `now_ns` go out as
    /// traces of their own.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Transaction>) {
        self.release(out, |w| {
            w.done
                .as_ref()
                .is_some_and(|t| now_ns.saturating_sub(t.end_ns) >= MAX_WAIT_NS)
        });
    }

    /// A process exited: none of its threads serve anything, and its held calls go out.
    pub fn forget_process(&mut self, pid: u32, out: &mut Vec<Transaction>) {
        self.serving
            .retain(|&(serving_pid, _), _| serving_pid != pid);
        self.release(out, |w| w.pid == pid);
    }

    /// Threads currently serving a request.
    pub fn serving(&self) -> usize {
        self.serving.len()
    }

    /// Client calls held while they may still join a request.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Removes the `index`th server exchange of unknown thread of connection `conn`.
    fn remove_unthreaded(&mut self, conn: u64, index: usize) {
        let Some(list) = self.unthreaded.get_mut(&conn) else {
            return;
        };
        if index >= list.len() {
            return;
        }
        list.remove(index);
        self.unthreaded_len -= 1;
        self.sweep_unthreaded();
    }

    /// Drops the empty lists once they outnumber the exchanges (amortized O(1) per start: a
    /// sweep leaves no more lists than exchanges).
    fn sweep_unthreaded(&mut self) {
        if self.unthreaded.len() > 2 * self.unthreaded_len + 64 {
            self.unthreaded.retain(|_, list| !list.is_empty());
        }
    }

    /// Calls none of whose possible parents is still in flight go out as they are.
    fn release_orphans(&mut self, out: &mut Vec<Transaction>) {
        if self.waiting.is_empty() {
            return;
        }
        // Each connection's list is oldest first: a walk over the connections with a request in
        // flight, paid only while calls wait (an ordered set of starts cost every request).
        let oldest = self
            .unthreaded
            .values()
            .filter_map(|list| list.first().map(|(order, _)| *order))
            .min()
            .unwrap_or(u64::MAX);
        self.release(out, |w| w.parent.is_none() && w.newest < oldest);
    }

    /// Stops holding the calls `which` picks: completed ones go to `out` unlinked, the others
    /// will go out when they complete.
    fn release(&mut self, out: &mut Vec<Transaction>, which: impl Fn(&Waiting) -> bool) {
        self.waiting.retain(|_, waiting| {
            if !which(waiting) {
                return true;
            }
            out.extend(waiting.done.take());
            false
        });
    }
}

/// A held client call joins the request its thread was serving.
fn adopt(transaction: &mut Transaction, parent: &Serving) {
    transaction.trace.trace_id = parent.trace_id;
    transaction.trace.parent_span_id = Some(parent.span_id);
    transaction.trace.sampled = parent.sampled;
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

/// A span continuing a propagated context.
fn child_of(tp: TraceParent) -> TraceContext {
    TraceContext {
        trace_id: tp.trace_id,
        span_id: random_id(),
        parent_span_id: Some(tp.parent_id),
        sampled: tp.sampled,
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

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: TraceParent = TraceParent {
        trace_id: [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ],
        parent_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        sampled: true,
    };

    #[test]
    fn traceparent_validation() {
        let valid = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(valid), Some(TRACEPARENT));
        let unsampled =
            parse_traceparent(b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ");
        assert_eq!(unsampled.map(|t| t.sampled), Some(false));
        // A later version may append fields.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"[..],
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn client_calls_join_the_request_their_thread_serves() {
        let mut book = TraceBook::default();
        let mut out = Vec::new();
        let server = book.start(SpanKind::Server, 1, Some(10), 1, Some(TRACEPARENT));
        assert_eq!(server.trace_id, TRACEPARENT.trace_id);
        assert_eq!(server.parent_span_id, Some(TRACEPARENT.parent_id));
        let call = book.start(SpanKind::Client, 1, Some(10), 2, None);
        assert_eq!(call.trace_id, server.trace_id);
        assert_eq!(call.parent_span_id, Some(server.span_id));
        // Another thread, another process, or an unknown thread: a trace of its own.
        for (pid, tid) in [(1, Some(11)), (2, Some(10)), (1, None)] {
            let other = book.start(SpanKind::Client, pid, tid, 3, None);
            assert_ne!(other.trace_id, server.trace_id);
            assert_eq!(other.parent_span_id, None);
        }
        // Ending someone else's span leaves the thread serving; ending its own frees it.
        book.end(SpanKind::Server, 1, Some(10), 1, &call, &mut out);
        assert_eq!(book.serving(), 1);
        book.end(SpanKind::Server, 1, Some(10), 1, &server, &mut out);
        assert_eq!(book.serving(), 0);
        book.start(SpanKind::Server, 3, Some(1), 4, None);
        book.forget_process(3, &mut out);
        assert_eq!(book.serving(), 0);
        // Nothing was held: no request of unknown thread was in flight.
        assert_eq!(book.waiting(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn a_server_span_of_unknown_thread_is_not_served_but_makes_calls_wait() {
        let mut book = TraceBook::default();
        let mut out = Vec::new();
        let server = book.start(SpanKind::Server, 1, None, 1, None);
        assert_eq!(book.serving(), 0);
        let call = book.start(SpanKind::Client, 1, Some(10), 2, None);
        assert_eq!(call.parent_span_id, None);
        assert_eq!(book.waiting(), 1);
        // Dropped, the call waits no more; the server span's end leaves nothing behind.
        book.end(SpanKind::Client, 1, Some(10), 2, &call, &mut out);
        book.end(SpanKind::Server, 1, None, 1, &server, &mut out);
        assert_eq!(book.waiting(), 0);
        assert!(book.unthreaded.values().all(SmallVec::is_empty));
        assert_eq!(book.unthreaded_len, 0);
        // Calls that start with nothing of unknown thread in flight never wait.
        book.start(SpanKind::Client, 1, Some(10), 3, None);
        assert_eq!(book.waiting(), 0);
    }

    #[test]
    fn the_lists_of_connections_gone_do_not_pile_up() {
        let mut book = TraceBook::default();
        let mut out = Vec::new();
        // One request in flight all along, on connection 0; 10,000 short-lived connections.
        let kept = book.start(SpanKind::Server, 1, None, 0, None);
        for conn in 1..=10_000 {
            let trace = book.start(SpanKind::Server, 1, None, conn, None);
            if conn % 2 == 0 {
                book.end(SpanKind::Server, 1, None, conn, &trace, &mut out);
            } else {
                book.thread_writes(conn, 1, 10, &mut out);
            }
            assert!(book.unthreaded.len() <= 2 * book.unthreaded_len + 65);
        }
        assert_eq!(book.unthreaded_len, 1);
        // The one in flight is still there, and still the oldest.
        let (_, served) = book.unthreaded[&0][0];
        assert_eq!(served.span_id, kept.span_id);
        assert!(out.is_empty());
    }
}
