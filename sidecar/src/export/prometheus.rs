//! The Prometheus endpoint: `/metrics` in the OpenMetrics text format, the histograms read from
//! the same series tables the OTLP export reads, and the sidecar's own counters.
//!
//! Prometheus series are named by service and container, not by process: the series of
//! processes that share both (nginx workers) are summed when scraped, and a retired process's
//! totals are kept in an archive, so that no series ever goes backwards.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use prost::Message as _;
use tokio::sync::watch;

use crate::telemetry::metrics::{
    Counts, HistogramDef, MetricUnit, OVERFLOW_ATTRIBUTE, Point, SELF_METRICS, SelfMetrics,
};
use crate::telemetry::{HISTOGRAMS, Pipeline, Pipelines, lock};

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a Prometheus series.
type Labels = Vec<(Cow<'static, str>, String)>;

/// A series: which histogram (its index in `HISTOGRAMS`) and its labels.
type SeriesKey = (usize, Labels);

/// A label value from a decoded attribute value, as Prometheus text.
fn label_value(value: Option<&any_value::Value>) -> String {
    match value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The labels of a point: service and container (OTLP has those in the resource), each of the
/// definition's labels (empty when absent, so a family keeps one label set), then any other
/// attribute (the overflow marker) with its dots made underscores.
fn labels(pipeline: &Pipeline, point: &Point<'_>) -> Labels {
    let attributes = HistogramDataPoint::decode(point.attributes)
        .map(|p| p.attributes)
        .unwrap_or_default();
    let value_of = |key: &str| {
        label_value(
            attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref()?.value.as_ref()),
        )
    };
    let mut labels: Labels = Vec::with_capacity(2 + point.def.labels.len());
    labels.push(("service_name".into(), pipeline.service_name.clone()));
    labels.push(("k8s_container_name".into(), pipeline.container().to_owned()));
    for &(key, label) in point.def.labels {
        labels.push((label.into(), value_of(key)));
    }
    for kv in &attributes {
        if !point.def.labels.iter().any(|(key, _)| *key == kv.key) {
            labels.push((
                kv.key.replace('.', "_").into(),
                label_value(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            ));
        }
    }
    labels
}

fn add(series: &mut BTreeMap<SeriesKey, Counts>, key: SeriesKey, counts: &Counts) {
    match series.get_mut(&key) {
        Some(total) => total.merge(counts),
        None => {
            series.insert(key, counts.clone());
        }
    }
}

/// Totals of retired processes, by series.
#[derive(Debug)]
struct Archive {
    series: BTreeMap<SeriesKey, Counts>,
    /// Series per histogram kept, as for a live process; more go to an overflow series.
    limit: usize,
}

/// The histograms, encoded at each scrape from the live series and the archive.
#[derive(Debug)]
struct Histograms {
    pipelines: Arc<Pipelines>,
    archive: Arc<Mutex<Archive>>,
}

impl Histograms {
    fn merged(&self) -> BTreeMap<SeriesKey, Counts> {
        let mut merged = lock(&self.archive).series.clone();
        for pipeline in self.pipelines.live() {
            let Some(series) = &pipeline.series else {
                continue;
            };
            let table = lock(series);
            for (index, &def) in HISTOGRAMS.iter().enumerate() {
                table.totals(def, &mut |point| {
                    add(
                        &mut merged,
                        (index, labels(&pipeline, &point)),
                        point.counts,
                    );
                });
            }
        }
        merged
    }
}

fn prometheus_unit(def: &HistogramDef) -> Unit {
    match def.unit {
        MetricUnit::Seconds => Unit::Seconds,
        MetricUnit::Bytes => Unit::Bytes,
    }
}

impl Collector for Histograms {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let merged = self.merged();
        for (index, &def) in HISTOGRAMS.iter().enumerate() {
            let mut series = merged
                .range((index, Vec::new())..(index + 1, Vec::new()))
                .peekable();
            // As Prometheus clients leave out a labelled family with no children yet: a page
            // of a pod without databases names no database histograms.
            if series.peek().is_none() {
                continue;
            }
            let unit = prometheus_unit(def);
            // As the registry writes the help of what it holds.
            let help = format!("{}.", def.description);
            let mut family = encoder.encode_descriptor(
                def.prometheus_name,
                &help,
                Some(&unit),
                MetricType::Histogram,
            )?;
            for ((_, labels), counts) in series {
                let mut buckets: Vec<(f64, u64)> = def
                    .buckets
                    .iter()
                    .copied()
                    .zip(counts.buckets.iter().copied())
                    .collect();
                // The encoder writes `+Inf` for this bound.
                buckets.push((f64::MAX, counts.buckets.last().copied().unwrap_or(0)));
                family
                    .encode_family(labels)?
                    .encode_histogram::<NoLabelSet>(counts.sum, counts.count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

/// The Prometheus registry: the histograms and the self metrics.
#[derive(Debug)]
pub(crate) struct PrometheusMetrics {
    registry: Registry,
    archive: Arc<Mutex<Archive>>,
}

impl PrometheusMetrics {
    pub(crate) fn new(self_metrics: &SelfMetrics, pipelines: Arc<Pipelines>, limit: usize) -> Self {
        let mut registry = Registry::default();
        let archive = Arc::new(Mutex::new(Archive {
            series: BTreeMap::new(),
            limit,
        }));
        registry.register_collector(Box::new(Histograms {
            pipelines,
            archive: archive.clone(),
        }));
        let counters = [
            &self_metrics.events_captured,
            &self_metrics.events_dropped,
            &self_metrics.spans_exported,
            &self_metrics.spans_dropped,
            &self_metrics.printer_dropped,
        ];
        for (info, counter) in SELF_METRICS.iter().zip(counters) {
            registry.register(info.prometheus_name, info.help, counter.0.clone());
        }
        if let Some(gauge) = SELF_METRICS.iter().find(|info| info.is_gauge) {
            registry.register(
                gauge.prometheus_name,
                gauge.help,
                self_metrics.processes_instrumented.0.clone(),
            );
        }
        Self { registry, archive }
    }

    /// Keeps a retired pipeline's totals.
    pub(crate) fn archive(&self, pipeline: &Pipeline) {
        let Some(series) = &pipeline.series else {
            return;
        };
        let table = lock(series);
        let mut archive = lock(&self.archive);
        let limit = archive.limit;
        for (index, &def) in HISTOGRAMS.iter().enumerate() {
            table.totals(def, &mut |point| {
                let mut key = (index, labels(pipeline, &point));
                let known = archive.series.contains_key(&key);
                let kept = archive
                    .series
                    .range((index, Vec::new())..(index + 1, Vec::new()))
                    .count();
                if !known && kept >= limit {
                    // The overflow series, as a live table would name it.
                    key.1.truncate(2);
                    key.1.extend(
                        def.labels
                            .iter()
                            .map(|&(_, label)| (label.into(), String::new())),
                    );
                    key.1.push((
                        OVERFLOW_ATTRIBUTE.replace('.', "_").into(),
                        "true".to_owned(),
                    ));
                }
                add(&mut archive.series, key, point.counts);
            });
        }
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would only mean a bug in a
        // label encoder, and then a partial page is still the most useful answer.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "encoding Prometheus metrics");
        }
        text
    }
}

/// Serves `/metrics` until stopped.
pub(crate) async fn serve_prometheus(
    listener: tokio::net::TcpListener,
    metrics: Arc<PrometheusMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    metrics.encode(),
                )
            }
        }),
    );
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "the Prometheus endpoint stopped");
    }
}
