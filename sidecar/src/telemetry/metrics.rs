//! Metrics: the histograms protocols' mappings record into (OTLP instruments and Prometheus
//! families, from one definition each) and the sidecar's own counters.

use opentelemetry::metrics::{Histogram as OtelHistogram, Meter};
use opentelemetry::{KeyValue, Value};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

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
pub struct SelfCounter(Counter<u64, AtomicU64>);

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
pub struct SelfGauge(Gauge<u64, AtomicU64>);

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

/// Registers observable instruments for the self metrics on an OTLP meter.
pub fn register_self_metrics(meter: &Meter, metrics: &SelfMetrics) {
    for info in &SELF_METRICS {
        let metrics = metrics.clone();
        let read = info.read;
        if info.is_gauge {
            meter
                .u64_observable_gauge(info.otel_name)
                .with_description(info.help)
                .with_callback(move |observer| observer.observe(read(&metrics), &[]))
                .build();
        } else {
            meter
                .u64_observable_counter(info.otel_name)
                .with_description(info.help)
                .with_callback(move |observer| observer.observe(read(&metrics), &[]))
                .build();
        }
    }
}

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

/// An OTLP histogram of one resource: floating-point seconds or integer bytes, as the
/// conventions type them.
#[derive(Debug)]
enum OtelHistogramOf {
    Seconds(OtelHistogram<f64>),
    Bytes(OtelHistogram<u64>),
}

/// The OTLP histograms of one resource's meter provider, one per [`HistogramDef`].
#[derive(Debug)]
pub struct OtelInstruments {
    histograms: Vec<(&'static HistogramDef, OtelHistogramOf)>,
}

impl OtelInstruments {
    pub fn new(meter: &Meter, defs: &[&'static HistogramDef]) -> Self {
        let histograms = defs
            .iter()
            .map(|&def| {
                let histogram = match def.unit {
                    MetricUnit::Seconds => OtelHistogramOf::Seconds(
                        meter
                            .f64_histogram(def.name)
                            .with_unit("s")
                            .with_description(def.description)
                            .with_boundaries(def.buckets.to_vec())
                            .build(),
                    ),
                    MetricUnit::Bytes => OtelHistogramOf::Bytes(
                        meter
                            .u64_histogram(def.name)
                            .with_unit("By")
                            .with_description(def.description)
                            .with_boundaries(def.buckets.to_vec())
                            .build(),
                    ),
                };
                (def, histogram)
            })
            .collect();
        Self { histograms }
    }

    pub fn record(&self, def: &'static HistogramDef, value: f64, attributes: &[KeyValue]) {
        // A handful of definitions: a pointer scan beats hashing.
        let Some((_, histogram)) = self.histograms.iter().find(|(d, _)| std::ptr::eq(*d, def))
        else {
            return;
        };
        match histogram {
            OtelHistogramOf::Seconds(h) => h.record(value, attributes),
            OtelHistogramOf::Bytes(h) => h.record(value as u64, attributes),
        }
    }
}

/// Prometheus labels of a series: which service and container it belongs to (OTLP has those in
/// the resource), then the definition's labels in order.
type Labels = Vec<(&'static str, String)>;

/// Makes each new series' histogram with its definition's buckets.
#[derive(Clone, Copy, Debug)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

type HistogramFamily = Family<Labels, Histogram, Buckets>;

/// The Prometheus registry: the protocols' histograms and the self metrics.
#[derive(Debug)]
pub struct PrometheusMetrics {
    registry: Registry,
    families: Vec<(&'static HistogramDef, HistogramFamily)>,
}

/// A label value from an attribute value, as Prometheus text.
fn label_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.as_str().to_owned(),
        other => other.to_string(),
    }
}

impl PrometheusMetrics {
    pub fn new(self_metrics: &SelfMetrics, defs: &[&'static HistogramDef]) -> Self {
        let mut registry = Registry::default();
        let families = defs
            .iter()
            .map(|&def| {
                let family = HistogramFamily::new_with_constructor(Buckets(def.buckets));
                let unit = match def.unit {
                    MetricUnit::Seconds => Unit::Seconds,
                    MetricUnit::Bytes => Unit::Bytes,
                };
                registry.register_with_unit(
                    def.prometheus_name,
                    def.description,
                    unit,
                    family.clone(),
                );
                (def, family)
            })
            .collect();
        let counters = [
            (&SELF_METRICS[0], &self_metrics.events_captured),
            (&SELF_METRICS[1], &self_metrics.events_dropped),
            (&SELF_METRICS[2], &self_metrics.spans_exported),
            (&SELF_METRICS[3], &self_metrics.spans_dropped),
            (&SELF_METRICS[4], &self_metrics.printer_dropped),
        ];
        for (info, counter) in counters {
            registry.register(info.prometheus_name, info.help, counter.0.clone());
        }
        let gauge = &SELF_METRICS[5];
        registry.register(
            gauge.prometheus_name,
            gauge.help,
            self_metrics.processes_instrumented.0.clone(),
        );
        Self { registry, families }
    }

    /// Records `value` into the series of `attributes` of `def`'s family.
    pub fn record(
        &self,
        def: &'static HistogramDef,
        value: f64,
        attributes: &[KeyValue],
        service_name: &str,
        container: &str,
    ) {
        let Some((_, family)) = self.families.iter().find(|(d, _)| std::ptr::eq(*d, def)) else {
            return;
        };
        let mut labels: Labels = Vec::with_capacity(2 + def.labels.len());
        labels.push(("service_name", service_name.to_owned()));
        labels.push(("k8s_container_name", container.to_owned()));
        for &(key, label) in def.labels {
            let value = attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| label_value(&kv.value))
                .unwrap_or_default();
            labels.push((label, value));
        }
        family.get_or_create(&labels).observe(value);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would only mean a bug in a
        // label encoder, and then a partial page is still the most useful answer.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "encoding Prometheus metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Semantics;
    use crate::telemetry::http::tests::{facts_of, transaction};
    use crate::telemetry::http::{self, HttpFacts};
    use crate::telemetry::route::RouteMatcher;
    use crate::transaction::SpanKind;

    /// Records a transaction's facts as the telemetry does.
    fn record(prometheus: &PrometheusMetrics, facts: &HttpFacts, service: &str, container: &str) {
        let attributes = facts.metric_attributes();
        facts.measurements(&mut |def, value| {
            prometheus.record(def, value, &attributes, service, container);
        });
    }

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
    fn prometheus_exposition() {
        let self_metrics = SelfMetrics::default();
        self_metrics.spans_dropped.add(7);
        self_metrics.processes_instrumented.set(3);
        let prometheus = PrometheusMetrics::new(&self_metrics, &http::HISTOGRAMS);
        let tx = transaction(SpanKind::Server, "GET", "/users/42", 200);
        let facts = facts_of(&tx, &RouteMatcher::default(), false);
        record(&prometheus, &facts, "shop", "app");
        record(&prometheus, &facts, "shop", "app");
        let client = transaction(SpanKind::Client, "GET", "/x", 0);
        let facts = facts_of(&client, &RouteMatcher::default(), false);
        record(&prometheus, &facts, "shop", "");
        let text = prometheus.encode();
        let labels = r#"service_name="shop",k8s_container_name="app",http_request_method="GET",http_response_status_code="200",http_route="/users/*",server_port="8080""#;
        for line in [
            "# TYPE http_server_request_duration_seconds histogram".to_owned(),
            "# UNIT http_server_request_duration_seconds seconds".to_owned(),
            format!("http_server_request_duration_seconds_count{{{labels}}} 2"),
            format!("http_server_request_duration_seconds_sum{{{labels}}} 0.5"),
            format!(
                "http_server_request_duration_seconds_bucket{{le=\"0.25\",{labels}}} 2"
            ),
            format!("http_server_request_duration_seconds_bucket{{le=\"0.1\",{labels}}} 0"),
            format!("http_server_request_body_size_bytes_count{{{labels}}} 2"),
            format!("http_server_request_body_size_bytes_bucket{{le=\"32.0\",{labels}}} 2"),
            r#"http_client_request_duration_seconds_count{service_name="shop",k8s_container_name="",http_request_method="GET",http_response_status_code="",http_route="/x",server_port="51000"} 1"#.to_owned(),
            "obi_sidecar_spans_dropped_total 7".to_owned(),
            "obi_sidecar_spans_exported_total 0".to_owned(),
            "obi_sidecar_processes_instrumented 3".to_owned(),
            "# HELP http_server_request_duration_seconds Duration of HTTP server requests."
                .to_owned(),
            "# EOF".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // No response body size was known: no series for it.
        assert!(!text.contains("http_server_response_body_size_bytes_count"));
    }
}
