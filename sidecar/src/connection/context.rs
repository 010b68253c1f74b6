//! Trace context, the same for every protocol: W3C `traceparent` values a parser found in the
//! bytes, the span ids given to each exchange, and which request each thread is serving, so that
//! a call the thread makes meanwhile (HTTP, gRPC, a database query) joins that request's trace.

use std::cell::RefCell;

use rand::{RngCore, SeedableRng, rngs::SmallRng};

use crate::transaction::SpanKind;

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

/// Which request each thread of the instrumented processes is serving.
#[derive(Debug, Default)]
pub struct TraceBook {
    /// (pid, tid) to the server span.
    serving: HashMap<(u32, u32), Serving>,
}

impl TraceBook {
    /// The context of an exchange that starts now on thread `tid` of `pid`: a server span
    /// continues a propagated `traceparent` or starts a trace, and its thread is serving it from
    /// now on; a client span honours a `traceparent` the app wrote, else joins the request its
    /// thread is serving, else starts a trace. `tid` is `None` when the capture does not know
    /// the thread: nothing can be joined then.
    pub fn start(
        &mut self,
        kind: SpanKind,
        pid: u32,
        tid: Option<u32>,
        propagated: Option<TraceParent>,
    ) -> TraceContext {
        match kind {
            SpanKind::Server => {
                let trace = propagated.map_or_else(root_context, child_of);
                if let Some(tid) = tid {
                    self.serving.insert(
                        (pid, tid),
                        Serving {
                            trace_id: trace.trace_id,
                            span_id: trace.span_id,
                            sampled: trace.sampled,
                        },
                    );
                }
                trace
            }
            SpanKind::Client => match (propagated, tid.and_then(|t| self.serving.get(&(pid, t)))) {
                (Some(tp), _) => child_of(tp),
                (None, Some(server)) => TraceContext {
                    trace_id: server.trace_id,
                    span_id: random_id(),
                    parent_span_id: Some(server.span_id),
                    sampled: server.sampled,
                },
                (None, None) => root_context(),
            },
        }
    }

    /// The exchange of `trace` is over (or dropped): its thread no longer serves it.
    pub fn end(&mut self, kind: SpanKind, pid: u32, tid: Option<u32>, trace: &TraceContext) {
        if kind != SpanKind::Server {
            return;
        }
        let Some(tid) = tid else { return };
        let key = (pid, tid);
        if self
            .serving
            .get(&key)
            .is_some_and(|s| s.span_id == trace.span_id)
        {
            self.serving.remove(&key);
        }
    }

    /// A process exited: none of its threads serve anything.
    pub fn forget_process(&mut self, pid: u32) {
        self.serving
            .retain(|&(serving_pid, _), _| serving_pid != pid);
    }

    /// Threads currently serving a request.
    pub fn serving(&self) -> usize {
        self.serving.len()
    }
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
        let server = book.start(SpanKind::Server, 1, Some(10), Some(TRACEPARENT));
        assert_eq!(server.trace_id, TRACEPARENT.trace_id);
        assert_eq!(server.parent_span_id, Some(TRACEPARENT.parent_id));
        let call = book.start(SpanKind::Client, 1, Some(10), None);
        assert_eq!(call.trace_id, server.trace_id);
        assert_eq!(call.parent_span_id, Some(server.span_id));
        // Another thread, another process, or an unknown thread: a trace of its own.
        for (pid, tid) in [(1, Some(11)), (2, Some(10)), (1, None)] {
            let other = book.start(SpanKind::Client, pid, tid, None);
            assert_ne!(other.trace_id, server.trace_id);
            assert_eq!(other.parent_span_id, None);
        }
        // A server span of an unknown thread is not remembered as served.
        book.start(SpanKind::Server, 1, None, None);
        assert_eq!(book.serving(), 1);
        // Ending someone else's span leaves the thread serving; ending its own frees it.
        book.end(SpanKind::Server, 1, Some(10), &call);
        assert_eq!(book.serving(), 1);
        book.end(SpanKind::Server, 1, Some(10), &server);
        assert_eq!(book.serving(), 0);
        book.start(SpanKind::Server, 3, Some(1), None);
        book.forget_process(3);
        assert_eq!(book.serving(), 0);
    }
}
