//! What every protocol's span shares: the clock conversion from kernel timestamps, the sampling
//! decision and the instrumentation scope.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::TraceSampler;
use crate::transaction::Transaction;

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

    /// Nanoseconds since the Unix epoch of a `CLOCK_MONOTONIC` reading.
    pub fn to_unix_nanos(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(i128::from(monotonic_ns) + self.offset_ns).unwrap_or(0)
    }

    pub fn to_system_time(&self, monotonic_ns: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.to_unix_nanos(monotonic_ns))
    }
}

/// The current wall-clock time in nanoseconds since the Unix epoch.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether a trace id falls within `ratio`: its low 63 bits, read big-endian, against the
/// ratio of 2^63. The same decision as the OpenTelemetry SDKs' `TraceIdRatioBased`, so that
/// every service of a trace sampled by ratio keeps or drops it alike.
fn within_ratio(ratio: f64, trace_id: &[u8; 16]) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

/// Whether a transaction's span is kept. Parent-based samplers follow the parent's sampled flag
/// when there is a parent (the caller's decision, or the serving span's); the others, and
/// parent-based ones for a root, decide on the trace id alone.
pub fn is_sampled(sampler: TraceSampler, tx: &Transaction) -> bool {
    let root = match sampler {
        TraceSampler::AlwaysOn => return true,
        TraceSampler::AlwaysOff => return false,
        TraceSampler::TraceIdRatio(ratio) => return within_ratio(ratio, &tx.trace.trace_id),
        TraceSampler::ParentBasedAlwaysOn => 1.0,
        TraceSampler::ParentBasedAlwaysOff => 0.0,
        TraceSampler::ParentBasedTraceIdRatio(ratio) => ratio,
    };
    match tx.trace.parent_span_id {
        Some(_) => tx.trace.sampled,
        None => within_ratio(root, &tx.trace.trace_id),
    }
}

/// The name every span and metric of the sidecar is reported under (the instrumentation scope).
pub const SCOPE_NAME: &str = "obi-sidecar";
/// The scope's version.
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::http::tests::transaction;
    use crate::transaction::SpanKind;

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
            let got = [&root, &sampled_child, &unsampled_child].map(|tx| is_sampled(config, tx));
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
            let mut got = String::new();
            for _ in 0..want.len() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let mut tx = transaction(SpanKind::Server, "GET", "/", 200);
                tx.trace.trace_id[..8].copy_from_slice(&state.to_be_bytes());
                tx.trace.trace_id[8..].copy_from_slice(&state.rotate_left(29).to_be_bytes());
                got.push(if is_sampled(TraceSampler::TraceIdRatio(ratio), &tx) {
                    '1'
                } else {
                    '0'
                });
            }
            assert_eq!(got, want, "ratio {ratio}");
        }
    }
}
