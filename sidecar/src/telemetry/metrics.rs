//! Metrics: the histograms protocols' mappings record into, aggregated here (one table of
//! series per resource, read by both the OTLP export and the Prometheus endpoint), and the
//! sidecar's own counters.
//!
//! A transaction's metric attributes are encoded once into a reused buffer (as the `KeyValue`s
//! of an OTLP data point) and looked up once in its resource's table, under that resource's own
//! lock; the series found takes all of the transaction's measurements. A series is made (its
//! key copied, its buckets allocated) only the first time its attribute set is seen.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::Semantics;
use super::attributes::AttributeValue;
use crate::export::encode::{ATTRIBUTES_TAG, put_key_value};

/// OBI's default duration buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// OBI's default body size buckets, in bytes.
pub const SIZE_BUCKETS: [f64; 10] = [
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// A counter the run loop feeds: either increments, or a kernel total it read.
#[derive(Clone, Debug, Default)]
pub struct SelfCounter(pub(crate) Counter<u64, AtomicU64>);

impl SelfCounter {
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// Sets the counter to a cumulative total read elsewhere (e.g. a kernel per-CPU counter).
    /// Counters never go down: a smaller total is ignored. Meant for a single writer.
    pub fn set_total(&self, total: u64) {
        let current = self.0.get();
        if total > current {
            self.0.inc_by(total - current);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A gauge the run loop sets.
#[derive(Clone, Debug, Default)]
pub struct SelfGauge(pub(crate) Gauge<u64, AtomicU64>);

impl SelfGauge {
    pub fn set(&self, value: u64) {
        self.0.set(value);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// The sidecar's own health counters, exported with the protocols' metrics (Prometheus and OTLP).
#[derive(Clone, Debug, Default)]
pub struct SelfMetrics {
    /// Events read from the kernel ring buffer (set by the run loop).
    pub events_captured: SelfCounter,
    /// Events the kernel dropped because the ring buffer was full (set by the run loop).
    pub events_dropped: SelfCounter,
    /// Spans the collector accepted.
    pub spans_exported: SelfCounter,
    /// Spans lost: export queue full, or export failed.
    pub spans_dropped: SelfCounter,
    /// Lines the trace printer could not keep up with.
    pub printer_dropped: SelfCounter,
    /// Processes currently instrumented (set by the run loop).
    pub processes_instrumented: SelfGauge,
}

/// One self metric: OTLP name, Prometheus name, help, and how to read it.
pub struct SelfMetricInfo {
    pub otel_name: &'static str,
    pub prometheus_name: &'static str,
    pub help: &'static str,
    pub is_gauge: bool,
    pub read: fn(&SelfMetrics) -> u64,
}

impl std::fmt::Debug for SelfMetricInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.otel_name)
    }
}

/// The self metrics, in one table so that Prometheus and OTLP cannot drift apart.
pub const SELF_METRICS: [SelfMetricInfo; 6] = [
    SelfMetricInfo {
        otel_name: "obi.sidecar.events.captured",
        prometheus_name: "obi_sidecar_events_captured",
        help: "Events read from the kernel ring buffer",
        is_gauge: false,
        read: |m| m.events_captured.get(),
    },
    SelfMetricInfo {
        otel_name: "obi.sidecar.events.dropped",
        prometheus_name: "obi_sidecar_events_dropped",
        help: "Events the kernel dropped because the ring buffer was full",
        is_gauge: false,
        read: |m| m.events_dropped.get(),
    },
    SelfMetricInfo {
        otel_name: "obi.sidecar.spans.exported",
        prometheus_name: "obi_sidecar_spans_exported",
        help: "Spans accepted by the OTLP collector",
        is_gauge: false,
        read: |m| m.spans_exported.get(),
    },
    SelfMetricInfo {
        otel_name: "obi.sidecar.spans.dropped",
        prometheus_name: "obi_sidecar_spans_dropped",
        help: "Spans lost because the export queue was full or the export failed",
        is_gauge: false,
        read: |m| m.spans_dropped.get(),
    },
    SelfMetricInfo {
        otel_name: "obi.sidecar.printer.dropped",
        prometheus_name: "obi_sidecar_printer_dropped",
        help: "Trace printer lines dropped because stdout did not keep up",
        is_gauge: false,
        read: |m| m.printer_dropped.get(),
    },
    SelfMetricInfo {
        otel_name: "obi.sidecar.processes.instrumented",
        prometheus_name: "obi_sidecar_processes_instrumented",
        help: "Processes currently instrumented",
        is_gauge: true,
        read: |m| m.processes_instrumented.get(),
    },
];

/// Unit of a histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricUnit {
    Seconds,
    Bytes,
}

/// A histogram a protocol's mapping records into: its names, unit, buckets and the attributes
/// that make its series (each Prometheus series carries all of them, empty when absent, so a
/// family keeps one label set).
#[derive(Debug)]
pub struct HistogramDef {
    /// OTLP name (semantic conventions).
    pub name: &'static str,
    /// Prometheus family name, before the unit suffix the exposition adds.
    pub prometheus_name: &'static str,
    pub description: &'static str,
    pub unit: MetricUnit,
    pub buckets: &'static [f64],
    /// (attribute key, Prometheus label) of every series attribute.
    pub labels: &'static [(&'static str, &'static str)],
}

/// The attribute a series' overflow takes the place of its attributes with, as the SDKs do.
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

/// Series a metric keeps per resource by default (`OTEL_EBPF_METRICS_CARDINALITY_LIMIT`), as
/// the OpenTelemetry SDKs' default cardinality limit.
pub const DEFAULT_CARDINALITY_LIMIT: usize = 2000;

/// Counts of one histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    /// One per bucket bound, then one for values above every bound (OTLP and Prometheus both
    /// count a value into the first bucket whose bound is not below it).
    pub buckets: Box<[u64]>,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Counts {
    fn new(bounds: &[f64]) -> Self {
        Self {
            buckets: vec![0; bounds.len() + 1].into_boxed_slice(),
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, bounds: &[f64], value: f64) {
        let bucket = bounds.partition_point(|bound| *bound < value);
        if let Some(count) = self.buckets.get_mut(bucket) {
            *count += 1;
        }
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    fn reset(&mut self) {
        self.buckets.fill(0);
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }

    /// Adds another histogram's counts of the same buckets.
    pub fn merge(&mut self, other: &Counts) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// One histogram of a series: the totals, and with delta temporality what was recorded since
/// the last export.
#[derive(Debug)]
struct Histogram {
    def: &'static HistogramDef,
    total: Counts,
    since_export: Option<Counts>,
}

/// An attribute set and its histograms (one per definition the set was recorded into).
#[derive(Debug)]
struct Series {
    /// The attributes, encoded as the `attributes` field of a data point.
    attributes: Box<[u8]>,
    histograms: Vec<Histogram>,
}

impl Series {
    fn histogram_index(&self, def: &'static HistogramDef) -> Option<usize> {
        // A handful of definitions per series: a pointer scan beats hashing.
        self.histograms
            .iter()
            .position(|h| std::ptr::eq(h.def, def))
    }
}

/// A value a visitor of [`SeriesTable::collect`] gets: one data point.
#[derive(Debug)]
pub struct Point<'a> {
    pub def: &'static HistogramDef,
    /// Encoded as the `attributes` field of a data point (decode with the generated types).
    pub attributes: &'a [u8],
    pub counts: &'a Counts,
}

/// The series of one resource.
#[derive(Debug)]
pub struct SeriesTable {
    index: HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>,
    series: Vec<Series>,
    /// Series per definition, against the cardinality limit.
    per_def: Vec<(&'static HistogramDef, usize)>,
    overflow: Option<usize>,
    limit: usize,
    delta: bool,
    /// When the table was made: the start of cumulative points (Unix ns).
    created_unix_nano: u64,
    /// When the current delta interval started.
    interval_start_unix_nano: u64,
}

impl SeriesTable {
    /// A table keeping up to `limit` series per metric, made at `now_unix_nano`; `delta` also
    /// keeps what was recorded since the last export.
    pub fn new(limit: usize, delta: bool, now_unix_nano: u64) -> Self {
        Self {
            index: HashMap::default(),
            series: Vec::new(),
            per_def: Vec::new(),
            overflow: None,
            limit,
            delta,
            created_unix_nano: now_unix_nano,
            interval_start_unix_nano: now_unix_nano,
        }
    }

    /// The start time of cumulative points.
    pub fn created_unix_nano(&self) -> u64 {
        self.created_unix_nano
    }

    /// Ends the current delta interval at `now_unix_nano`; returns when it started.
    pub fn start_interval(&mut self, now_unix_nano: u64) -> u64 {
        std::mem::replace(&mut self.interval_start_unix_nano, now_unix_nano)
    }

    /// Records a transaction's measurements into the series of `key` (its metric attributes,
    /// encoded by the caller).
    pub fn record(&mut self, key: &[u8], mapped: &impl Semantics) {
        let mut found = self.index.get(key).copied();
        mapped.measurements(&mut |def, value| {
            if !value.is_finite() {
                return;
            }
            let (series, histogram) = self.histogram_for(&mut found, key, def);
            let histogram = &mut self.series[series].histograms[histogram];
            histogram.total.record(def.buckets, value);
            if let Some(since) = &mut histogram.since_export {
                since.record(def.buckets, value);
            }
        });
    }

    /// The series and histogram a measurement of `def` goes to: the key's own, made if the
    /// metric is within its limit, else the overflow series.
    fn histogram_for(
        &mut self,
        found: &mut Option<usize>,
        key: &[u8],
        def: &'static HistogramDef,
    ) -> (usize, usize) {
        if let Some(series) = *found
            && let Some(histogram) = self.series[series].histogram_index(def)
        {
            return (series, histogram);
        }
        let count = match self.per_def.iter().position(|(d, _)| std::ptr::eq(*d, def)) {
            Some(i) => &mut self.per_def[i].1,
            None => {
                self.per_def.push((def, 0));
                let last = self.per_def.len() - 1;
                &mut self.per_def[last].1
            }
        };
        let series = if *count < self.limit {
            *count += 1;
            match *found {
                Some(series) => series,
                None => {
                    let series = self.add_series(key.into());
                    self.index.insert(key.into(), series);
                    *found = Some(series);
                    series
                }
            }
        } else {
            match self.overflow {
                Some(series) => series,
                None => {
                    let mut attributes = Vec::new();
                    put_key_value(
                        &mut attributes,
                        ATTRIBUTES_TAG,
                        OVERFLOW_ATTRIBUTE,
                        AttributeValue::Bool(true),
                    );
                    let series = self.add_series(attributes.into());
                    self.overflow = Some(series);
                    series
                }
            }
        };
        let histograms = &mut self.series[series].histograms;
        if let Some(histogram) = histograms.iter().position(|h| std::ptr::eq(h.def, def)) {
            return (series, histogram);
        }
        histograms.push(Histogram {
            def,
            total: Counts::new(def.buckets),
            since_export: self.delta.then(|| Counts::new(def.buckets)),
        });
        (series, histograms.len() - 1)
    }

    fn add_series(&mut self, attributes: Box<[u8]>) -> usize {
        self.series.push(Series {
            attributes,
            histograms: Vec::new(),
        });
        self.series.len() - 1
    }

    /// Every point of `def`, totals since the table was made (Prometheus, cumulative export).
    pub fn totals(&self, def: &'static HistogramDef, visit: &mut dyn FnMut(Point<'_>)) {
        for series in &self.series {
            for histogram in series
                .histograms
                .iter()
                .filter(|h| std::ptr::eq(h.def, def))
            {
                visit(Point {
                    def,
                    attributes: &series.attributes,
                    counts: &histogram.total,
                });
            }
        }
    }

    /// Every point of `def` that got measurements since the last call, which starts a new
    /// interval (delta export). Without delta bookkeeping, nothing.
    pub fn take_deltas(&mut self, def: &'static HistogramDef, visit: &mut dyn FnMut(Point<'_>)) {
        for series in &mut self.series {
            for histogram in series
                .histograms
                .iter_mut()
                .filter(|h| std::ptr::eq(h.def, def))
            {
                if let Some(since) = &mut histogram.since_export {
                    if since.count > 0 {
                        visit(Point {
                            def,
                            attributes: &series.attributes,
                            counts: since,
                        });
                    }
                    since.reset();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::encode::KeyValueWriter;
    use crate::telemetry::attributes::Attributes;
    use crate::telemetry::http::tests::{facts_of, routes, transaction};
    use crate::telemetry::http::{self, SERVER_DURATION, SERVER_REQUEST_BODY_SIZE};
    use crate::transaction::SpanKind;

    #[test]
    fn self_counters() {
        let metrics = SelfMetrics::default();
        metrics.events_captured.add(3);
        metrics.events_captured.add(2);
        metrics.events_dropped.set_total(10);
        metrics.events_dropped.set_total(7);
        metrics.events_dropped.set_total(12);
        metrics.processes_instrumented.set(4);
        metrics.processes_instrumented.set(2);
        let read: Vec<u64> = SELF_METRICS.iter().map(|m| (m.read)(&metrics)).collect();
        assert_eq!(read, vec![5, 12, 0, 0, 0, 2]);
    }

    #[test]
    fn buckets_take_values_up_to_their_bound() {
        let bounds = [0.0, 1.0, 10.0];
        let mut counts = Counts::new(&bounds);
        for value in [-1.0, 0.0, 0.5, 1.0, 1.5, 10.0, 11.0] {
            counts.record(&bounds, value);
        }
        assert_eq!(&counts.buckets[..], &[2, 2, 2, 1]);
        assert_eq!((counts.count, counts.min, counts.max), (7, -1.0, 11.0));
        assert!((counts.sum - 23.0).abs() < 1e-12);
    }

    fn key(attributes: &[(&str, i64)]) -> Vec<u8> {
        let mut key = Vec::new();
        let mut text = String::new();
        let mut writer = KeyValueWriter {
            out: &mut key,
            text: &mut text,
            tag: ATTRIBUTES_TAG,
        };
        for (k, v) in attributes {
            writer.i64(k, *v);
        }
        key
    }

    fn totals(table: &SeriesTable, def: &'static HistogramDef) -> Vec<(Vec<u8>, u64)> {
        let mut points = Vec::new();
        table.totals(def, &mut |p| {
            points.push((p.attributes.to_vec(), p.counts.count))
        });
        points
    }

    #[test]
    fn one_series_per_attribute_set_and_an_overflow_beyond_the_limit() {
        let tx = transaction(SpanKind::Server, "GET", "/", 200);
        let (routes, mut scratch) = (routes(), String::new());
        let facts = facts_of(&tx, &routes, false, &mut scratch);
        let mut table = SeriesTable::new(2, false, 1);
        for id in [1, 2, 1, 3, 4, 2] {
            table.record(&key(&[("id", id)]), &facts);
        }
        let mut overflow = Vec::new();
        put_key_value(
            &mut overflow,
            ATTRIBUTES_TAG,
            OVERFLOW_ATTRIBUTE,
            AttributeValue::Bool(true),
        );
        let expected = vec![
            (key(&[("id", 1)]), 2),
            (key(&[("id", 2)]), 2),
            (overflow.clone(), 2),
        ];
        assert_eq!(totals(&table, &SERVER_DURATION), expected);
        // The request body size (12 bytes) went the same way; no response body was known.
        assert_eq!(totals(&table, &SERVER_REQUEST_BODY_SIZE), expected);
        assert!(totals(&table, &http::SERVER_RESPONSE_BODY_SIZE).is_empty());
        assert_eq!(table.series.len(), 3);
    }

    #[test]
    fn deltas_cover_one_interval_and_totals_all_of_them() {
        let tx = transaction(SpanKind::Server, "GET", "/", 200);
        let (routes, mut scratch) = (routes(), String::new());
        let facts = facts_of(&tx, &routes, false, &mut scratch);
        let mut table = SeriesTable::new(10, true, 1);
        let deltas = |table: &mut SeriesTable| {
            let mut points = Vec::new();
            table.take_deltas(&SERVER_DURATION, &mut |p| {
                points.push((p.attributes.to_vec(), p.counts.count, p.counts.sum))
            });
            points
        };
        table.record(&key(&[("id", 1)]), &facts);
        table.record(&key(&[("id", 1)]), &facts);
        table.record(&key(&[("id", 2)]), &facts);
        assert_eq!(
            deltas(&mut table),
            vec![(key(&[("id", 1)]), 2, 0.5), (key(&[("id", 2)]), 1, 0.25)]
        );
        // Nothing since: no points. Then only what came after.
        assert!(deltas(&mut table).is_empty());
        table.record(&key(&[("id", 2)]), &facts);
        assert_eq!(deltas(&mut table), vec![(key(&[("id", 2)]), 1, 0.25)]);
        assert_eq!(
            totals(&table, &SERVER_DURATION),
            vec![(key(&[("id", 1)]), 2), (key(&[("id", 2)]), 2)]
        );
    }
}
