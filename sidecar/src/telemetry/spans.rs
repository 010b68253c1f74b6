//! What every protocol's span shares: the clock conversion from kernel timestamps, the sampling
//! decision, the instrumentation scope, and the SDK span built from a transaction's envelope
//! and the name, status and attributes its protocol's mapping gave it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind as OtelSpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample, SpanData};

use crate::config::TraceSampler;
use crate::transaction::{SpanKind, Transaction};

/// Converts `CLOCK_MONOTONIC` nanoseconds (kernel timestamps) to wall-clock time with an offset
/// measured once, so that durations stay exact and spans of one process never go back in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, in nanoseconds.
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own; both clocks exist on every Linux,
    // so it cannot fail with valid arguments.
    unsafe { libc::clock_gettime(clock, &mut now) };
    i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec)
}

impl WallClock {
    /// Measures the offset now; the monotonic read sits between two realtime reads and the
    /// midpoint is used, so the error is half the (sub-microsecond) gap.
    pub fn measure() -> Self {
        let before = clock_ns(libc::CLOCK_REALTIME);
        let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
        let after = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: before + (after - before) / 2 - monotonic,
        }
    }

    /// A clock with a known offset (tests, replays).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The current `CLOCK_MONOTONIC` reading, in the kernel's units.
    pub fn monotonic_now_ns() -> u64 {
        u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }

    pub fn to_system_time(&self, monotonic_ns: u64) -> SystemTime {
        let wall = i128::from(monotonic_ns) + self.offset_ns;
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall).unwrap_or(0))
    }
}

/// The SDK sampler for a configured [`TraceSampler`].
pub fn sampler(config: TraceSampler) -> Sampler {
    match config {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TraceSampler::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TraceSampler::ParentBasedTraceIdRatio(ratio) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

fn otel_kind(kind: SpanKind) -> OtelSpanKind {
    match kind {
        SpanKind::Server => OtelSpanKind::Server,
        SpanKind::Client => OtelSpanKind::Client,
    }
}

/// Whether the span is kept: the sampler sees the transaction's parent (with its sampled flag)
/// as a remote parent, so `parentbased_*` samplers follow the caller's decision.
pub fn is_sampled(sampler: &Sampler, tx: &Transaction, name: &str) -> bool {
    let trace_id = TraceId::from_bytes(tx.trace.trace_id);
    let parent = tx.trace.parent_span_id.map(|parent| {
        let flags = if tx.trace.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            SpanId::from_bytes(parent),
            flags,
            true,
            TraceState::default(),
        ))
    });
    let result = sampler.should_sample(
        parent.as_ref(),
        trace_id,
        name,
        &otel_kind(tx.kind),
        &[],
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

/// The scope every span and metric of the sidecar is reported under.
pub fn instrumentation_scope() -> InstrumentationScope {
    InstrumentationScope::builder("obi-sidecar")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(opentelemetry_semantic_conventions::SCHEMA_URL)
        .build()
}

/// The span of a transaction, with ids and parent exactly as the connection layer assigned
/// them; `name`, `status` and `attributes` come from its protocol's mapping (the caller has
/// already made the name for the sampler).
pub fn span_data(
    tx: &Transaction,
    name: String,
    status: Status,
    attributes: Vec<KeyValue>,
    clock: &WallClock,
    scope: &InstrumentationScope,
) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(tx.trace.trace_id),
            SpanId::from_bytes(tx.trace.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: tx
            .trace
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes),
        // A server span's parent is the caller's span, in another process; a client span's
        // is the server span it was sent for, or a span of the app itself.
        parent_span_is_remote: tx.kind == SpanKind::Server && tx.trace.parent_span_id.is_some(),
        span_kind: otel_kind(tx.kind),
        name: name.into(),
        start_time: clock.to_system_time(tx.start_ns),
        end_time: clock.to_system_time(tx.end_ns.max(tx.start_ns)),
        attributes,
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::http::tests::{facts_of, routes, span_of, transaction};

    #[test]
    fn span_ids_and_times_come_from_the_transaction() {
        let tx = transaction(SpanKind::Server, "GET", "/", 200);
        let facts = facts_of(&tx, &routes(), false);
        assert!((facts.duration_seconds - 0.25).abs() < 1e-12);
        let clock = WallClock::with_offset(1_700_000_000_000_000_000);
        let span = span_of(&tx, facts, &clock);
        assert_eq!(span.span_context.trace_id().to_bytes(), [0x11; 16]);
        assert_eq!(span.span_context.span_id().to_bytes(), [0x22; 8]);
        assert_eq!(span.parent_span_id.to_bytes(), [0x33; 8]);
        assert_eq!(span.span_kind, OtelSpanKind::Server);
        assert_eq!(
            span.start_time,
            UNIX_EPOCH + Duration::from_nanos(1_700_000_001_000_000_000)
        );
        assert_eq!(
            span.end_time.duration_since(span.start_time).ok(),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn only_a_server_span_has_a_remote_parent() {
        let clock = WallClock::with_offset(0);
        let table = [
            (SpanKind::Server, true, true),
            (SpanKind::Server, false, false),
            (SpanKind::Client, true, false),
            (SpanKind::Client, false, false),
        ];
        for (kind, parent, remote) in table {
            let mut tx = transaction(kind, "GET", "/", 200);
            if !parent {
                tx.trace.parent_span_id = None;
            }
            let facts = facts_of(&tx, &routes(), false);
            let span = span_of(&tx, facts, &clock);
            assert_eq!(
                span.parent_span_is_remote, remote,
                "{kind:?} parent {parent}"
            );
        }
    }

    #[test]
    fn measured_clock_is_close_to_now() {
        let clock = WallClock::measure();
        let converted = clock.to_system_time(WallClock::monotonic_now_ns());
        let now = SystemTime::now();
        let skew = now
            .duration_since(converted)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap_or_default();
        assert!(skew < Duration::from_millis(50), "{skew:?}");
    }

    #[test]
    fn sampling_table() {
        let mut root = transaction(SpanKind::Server, "GET", "/", 200);
        root.trace.parent_span_id = None;
        let mut sampled_child = root.clone();
        sampled_child.trace.parent_span_id = Some([1; 8]);
        let mut unsampled_child = sampled_child.clone();
        unsampled_child.trace.sampled = false;
        let table = [
            (TraceSampler::AlwaysOn, [true, true, true]),
            (TraceSampler::AlwaysOff, [false, false, false]),
            (TraceSampler::ParentBasedAlwaysOn, [true, true, false]),
            (TraceSampler::ParentBasedAlwaysOff, [false, true, false]),
            (
                TraceSampler::ParentBasedTraceIdRatio(0.0),
                [false, true, false],
            ),
            (TraceSampler::TraceIdRatio(1.0), [true, true, true]),
            (TraceSampler::TraceIdRatio(0.0), [false, false, false]),
        ];
        for (config, want) in table {
            let sampler = sampler(config);
            let got =
                [&root, &sampled_child, &unsampled_child].map(|tx| is_sampled(&sampler, tx, "GET"));
            assert_eq!(got, want, "{config:?}");
        }
    }

    /// Trace-id ratio decisions for a fixed series of trace ids, as the opentelemetry SDK's
    /// `TraceIdRatioBased` sampler made them (recorded with opentelemetry_sdk 0.33.1).
    #[test]
    fn ratio_decisions_as_the_sdk_made_them() {
        let table = [
            (
                0.1,
                "0000000000000000000000100000100000000000000001000000000100101000",
            ),
            (
                0.5,
                "1010001000110101100110101010010011110110101101011101001101011110",
            ),
            (
                0.9,
                "1111111111110111110111111111111110111111111111111111111111111111",
            ),
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for (ratio, want) in table {
            let sampler = sampler(TraceSampler::TraceIdRatio(ratio));
            let mut got = String::new();
            for _ in 0..want.len() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let mut tx = transaction(SpanKind::Server, "GET", "/", 200);
                tx.trace.trace_id[..8].copy_from_slice(&state.to_be_bytes());
                tx.trace.trace_id[8..].copy_from_slice(&state.rotate_left(29).to_be_bytes());
                got.push(if is_sampled(&sampler, &tx, "GET") {
                    '1'
                } else {
                    '0'
                });
            }
            assert_eq!(got, want, "ratio {ratio}");
        }
    }
}
