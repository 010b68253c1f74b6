//! OTLP metric export: every `OTEL_METRIC_EXPORT_INTERVAL`, each resource's series (and the
//! sidecar's own counters) as an `ExportMetricsServiceRequest`, built with opentelemetry-proto's
//! generated types (once per interval, so their cost does not matter).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::otlp::{Exporter, Metrics, Outcome};
use super::prometheus::PrometheusMetrics;
use crate::config::TemporalityPreference;
use crate::telemetry::metrics::{MetricUnit, Point, SELF_METRICS, SelfMetrics};
use crate::telemetry::spans::unix_nanos_now;
use crate::telemetry::{HISTOGRAMS, Pipeline, Pipelines, SCHEMA_URL, lock};

/// What the metric export reads.
#[derive(Debug)]
pub(crate) struct MetricExport {
    pub(crate) pipelines: Arc<Pipelines>,
    /// The sidecar's own resource, for its own counters.
    pub(crate) own_resource: Resource,
    pub(crate) scope: InstrumentationScope,
    pub(crate) self_metrics: SelfMetrics,
    pub(crate) temporality: TemporalityPreference,
    /// Where a retired pipeline's totals go after its last export.
    pub(crate) prometheus: Option<Arc<PrometheusMetrics>>,
}

fn temporality(delta: bool) -> i32 {
    if delta {
        AggregationTemporality::Delta as i32
    } else {
        AggregationTemporality::Cumulative as i32
    }
}

fn unit(unit: MetricUnit) -> &'static str {
    match unit {
        MetricUnit::Seconds => "s",
        MetricUnit::Bytes => "By",
    }
}

fn histogram_point(point: &Point<'_>, start: u64, now: u64) -> HistogramDataPoint {
    // The attributes were encoded as this very field: decoding them gives the data point.
    let mut data_point = HistogramDataPoint::decode(point.attributes).unwrap_or_default();
    let counts = point.counts;
    data_point.start_time_unix_nano = start;
    data_point.time_unix_nano = now;
    data_point.count = counts.count;
    data_point.sum = Some(counts.sum);
    data_point.bucket_counts = counts.buckets.to_vec();
    data_point.explicit_bounds = point.def.buckets.to_vec();
    data_point.min = Some(counts.min);
    data_point.max = Some(counts.max);
    data_point
}

/// The histograms of one pipeline: totals (cumulative) or what came since the last export
/// (delta).
fn pipeline_metrics(pipeline: &Pipeline, delta: bool, now: u64) -> Vec<Metric> {
    let Some(series) = &pipeline.series else {
        return Vec::new();
    };
    let mut table = lock(series);
    let start = if delta {
        table.start_interval(now)
    } else {
        table.created_unix_nano()
    };
    let mut metrics = Vec::new();
    for &def in HISTOGRAMS.iter() {
        let mut data_points = Vec::new();
        let mut add = |point: Point<'_>| data_points.push(histogram_point(&point, start, now));
        if delta {
            table.take_deltas(def, &mut add);
        } else {
            table.totals(def, &mut add);
        }
        if data_points.is_empty() {
            continue;
        }
        metrics.push(Metric {
            name: def.name.to_owned(),
            description: def.description.to_owned(),
            unit: unit(def.unit).to_owned(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: temporality(delta),
            })),
            ..Default::default()
        });
    }
    metrics
}

/// The sidecar's own counters and gauge; with delta temporality counters report the change
/// since `last` (the values of the previous export, updated here).
fn own_metrics(
    metrics: &SelfMetrics,
    delta: bool,
    last: &mut [u64],
    start: u64,
    now: u64,
) -> Vec<Metric> {
    SELF_METRICS
        .iter()
        .zip(last.iter_mut())
        .map(|(info, last)| {
            let value = (info.read)(metrics);
            let reported = if delta && !info.is_gauge {
                value.saturating_sub(std::mem::replace(last, value))
            } else {
                value
            };
            let data_points = vec![NumberDataPoint {
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(
                    i64::try_from(reported).unwrap_or(i64::MAX),
                )),
                ..Default::default()
            }];
            let data = if info.is_gauge {
                metric::Data::Gauge(Gauge { data_points })
            } else {
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: temporality(delta),
                    is_monotonic: true,
                })
            };
            Metric {
                name: info.otel_name.to_owned(),
                description: info.help.to_owned(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect()
}

impl MetricExport {
    fn request(&self, resource: &Resource, metrics: Vec<Metric>) -> Bytes {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(self.scope.clone()),
                    metrics,
                    schema_url: SCHEMA_URL.to_owned(),
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into()
    }
}

/// Every `interval` (and once more when stopping): exports the sidecar's own counters and each
/// pipeline's series, retired pipelines one last time.
pub(crate) async fn export_metrics(
    export: MetricExport,
    mut exporter: Exporter<Metrics>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let histograms_delta = export.temporality != TemporalityPreference::Cumulative;
    let counters_delta = export.temporality == TemporalityPreference::Delta;
    let mut last = vec![0; SELF_METRICS.len()];
    let started = unix_nanos_now();
    let mut own_start = started;
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.changed() => true,
        };
        let now = unix_nanos_now();
        let own = own_metrics(
            &export.self_metrics,
            counters_delta,
            &mut last,
            own_start,
            now,
        );
        if counters_delta {
            own_start = now;
        }
        // One failed export (the collector down or hanging) ends the interval: each would wait
        // out its own timeout, and with cumulative temporality the next interval carries what
        // this one did not send.
        let mut up = send(&mut exporter, export.request(&export.own_resource, own)).await;
        let live = export.pipelines.live();
        let retired = export.pipelines.take_retired();
        for pipeline in live.iter().chain(&retired) {
            if !up {
                break;
            }
            let metrics = pipeline_metrics(pipeline, histograms_delta, now);
            if !metrics.is_empty() {
                up = send(
                    &mut exporter,
                    export.request(&pipeline.resource.proto, metrics),
                )
                .await;
            }
        }
        if let Some(prometheus) = &export.prometheus {
            for pipeline in &retired {
                prometheus.archive(pipeline);
            }
        }
        if stopping {
            return;
        }
    }
}

/// Whether the collector took the request (failures are logged by the exporter).
async fn send(exporter: &mut Exporter<Metrics>, request: Bytes) -> bool {
    matches!(exporter.export(request).await, Outcome::Accepted { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_counters_as_deltas_and_the_gauge_as_is() {
        let metrics = SelfMetrics::default();
        let mut last = vec![0; SELF_METRICS.len()];
        let values = |metrics: &[Metric]| -> Vec<(String, i64, bool)> {
            metrics
                .iter()
                .map(|m| {
                    let (points, is_sum) = match &m.data {
                        Some(metric::Data::Sum(sum)) => (&sum.data_points, true),
                        Some(metric::Data::Gauge(gauge)) => (&gauge.data_points, false),
                        _ => panic!("unexpected data"),
                    };
                    let value = match points[0].value {
                        Some(number_data_point::Value::AsInt(v)) => v,
                        _ => panic!("not an integer"),
                    };
                    (m.name.clone(), value, is_sum)
                })
                .collect()
        };
        metrics.spans_exported.add(5);
        metrics.processes_instrumented.set(3);
        let first = values(&own_metrics(&metrics, true, &mut last, 1, 2));
        metrics.spans_exported.add(2);
        let second = values(&own_metrics(&metrics, true, &mut last, 2, 3));
        let cumulative = values(&own_metrics(&metrics, false, &mut last, 1, 3));
        let find = |values: &[(String, i64, bool)], name: &str| {
            values.iter().find(|v| v.0 == name).map(|v| (v.1, v.2))
        };
        assert_eq!(find(&first, "obi.sidecar.spans.exported"), Some((5, true)));
        assert_eq!(find(&second, "obi.sidecar.spans.exported"), Some((2, true)));
        assert_eq!(
            find(&cumulative, "obi.sidecar.spans.exported"),
            Some((7, true))
        );
        assert_eq!(
            find(&second, "obi.sidecar.processes.instrumented"),
            Some((3, false))
        );
    }
}
