//! Telemetry: [`Telemetry::record`], the single entry point the run loop uses, maps each
//! transaction with its protocol's mapping (one module each, following the semantic conventions)
//! into a span (OTLP and/or the trace printer) and metric recordings (OTLP and/or Prometheus).
//!
//! Design:
//! - One resource per instrumented process (service name, container, pid, executable), each with
//!   its own meter provider. At most [`MAX_PIPELINES`] are kept; the least recently used one is
//!   retired (its last metrics exported) when another process needs a slot.
//! - Spans go through one bounded queue to one export task that batches them, groups them by
//!   resource and sends them with a single OTLP exporter. The exporter retries a failed export
//!   a few times with backoff (opentelemetry-otlp's recommended policy, bounded by the export
//!   timeout); a full queue or an export that still fails drops spans and counts them, so memory
//!   stays bounded while the collector is down, and export simply resumes when it is back.
//!   `record` never waits.
//! - Metrics are collected from every provider's manual reader and exported by one task, every
//!   `OTEL_METRIC_EXPORT_INTERVAL`, through one OTLP exporter.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::Status;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline as SdkPipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::Sampler;
use opentelemetry_semantic_conventions::resource as res;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, TracePrinter};
use crate::export::printer::{PrintJob, Printer};
use crate::export::{
    ExportHealth, QueuedSpan, SHUTDOWN_GRACE, export_spans, metric_exporter, serve_prometheus,
    span_exporter,
};
use crate::transaction::{Facts, Transaction};
use crate::{Error, Result};

pub mod db;
pub mod http;
pub mod metrics;
pub mod route;
pub mod spans;

use db::DbFacts;
use http::HttpFacts;
use metrics::{
    HistogramDef, OtelInstruments, PrometheusMetrics, SelfMetrics, register_self_metrics,
};
use route::RouteMatcher;
use spans::WallClock;

/// Resources (processes) with a live pipeline at once.
pub const MAX_PIPELINES: usize = 64;

/// What the run loop knows about the process that handled a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Full path of the executable.
    pub exe: String,
    /// `k8s.container.name`, when known.
    pub container: Option<String>,
}

/// A reader the meter provider owns while the export task keeps a handle to collect from it.
#[derive(Clone, Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<SdkPipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// A meter provider whose metrics the export task pulls.
#[derive(Debug)]
struct MeterPipeline {
    provider: SdkMeterProvider,
    reader: Arc<ManualReader>,
}

impl MeterPipeline {
    fn new(resource: Resource) -> Self {
        let reader = Arc::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(SharedReader(reader.clone()))
            .build();
        Self { provider, reader }
    }
}

/// Everything recorded for one process (one resource).
#[derive(Debug)]
struct Pipeline {
    pid: u32,
    exe: String,
    container: Option<String>,
    service_name: String,
    /// Shared with queued spans, which are grouped by it for export.
    resource: Arc<Resource>,
    /// OTLP metrics, when a metrics endpoint is configured.
    meters: Option<(MeterPipeline, OtelInstruments)>,
}

impl Pipeline {
    fn matches(&self, process: &ProcessInfo) -> bool {
        self.pid == process.pid && self.exe == process.exe && self.container == process.container
    }
}

/// The live pipelines, by pid, with a use stamp for least-recently-used eviction.
#[derive(Debug, Default)]
struct PipelineSet {
    live: HashMap<u32, (Arc<Pipeline>, u64)>,
    /// Evicted or replaced pipelines whose metrics still need one last export.
    retired: Vec<Arc<Pipeline>>,
    stamp: u64,
}

/// The state `record` and the background tasks share.
#[derive(Debug)]
struct Shared {
    routes: RouteMatcher,
    include_url_query: bool,
    include_db_query_text: bool,
    service_name: Option<String>,
    resource_attributes: Vec<KeyValue>,
    sampler: Sampler,
    clock: WallClock,
    scope: InstrumentationScope,
    otlp_metrics: bool,
    pipelines: Mutex<PipelineSet>,
    self_metrics: SelfMetrics,
    prometheus: Option<Arc<PrometheusMetrics>>,
}

/// Every histogram a protocol's mapping records into.
static HISTOGRAMS: std::sync::LazyLock<Vec<&'static HistogramDef>> =
    std::sync::LazyLock::new(|| [&http::HISTOGRAMS[..], &db::HISTOGRAMS[..]].concat());

/// What a protocol's mapping provides: a transaction's facts in the terms of the semantic
/// conventions, derived once, from which its span and its metric recordings are made.
pub trait Semantics {
    /// The span name (also what the sampler sees).
    fn span_name(&self) -> String;
    fn span_status(&self) -> Status;
    /// The attributes of the transaction's metric series: bounded-cardinality ones only.
    fn metric_attributes(&self) -> Vec<KeyValue>;
    /// Each histogram the transaction records into, with the value it records.
    fn measurements(&self, record: &mut dyn FnMut(&'static HistogramDef, f64));
    /// The span's attributes; consumes the facts, whose strings move into them.
    fn into_span_attributes(self) -> Vec<KeyValue>;
}

/// A transaction's facts, mapped by its protocol's mapping.
#[derive(Debug)]
enum Mapped {
    Http(HttpFacts),
    Db(DbFacts),
}

impl Mapped {
    fn new(tx: &Transaction, shared: &Shared) -> Self {
        match &tx.facts {
            Facts::Http(exchange) => Mapped::Http(HttpFacts::new(
                tx,
                exchange,
                &shared.routes,
                shared.include_url_query,
            )),
            Facts::Db(call) => Mapped::Db(DbFacts::new(tx, call, shared.include_db_query_text)),
        }
    }
}

impl Semantics for Mapped {
    fn span_name(&self) -> String {
        match self {
            Mapped::Http(facts) => facts.span_name(),
            Mapped::Db(facts) => facts.span_name(),
        }
    }

    fn span_status(&self) -> Status {
        match self {
            Mapped::Http(facts) => facts.span_status(),
            Mapped::Db(facts) => facts.span_status(),
        }
    }

    fn metric_attributes(&self) -> Vec<KeyValue> {
        match self {
            Mapped::Http(facts) => facts.metric_attributes(),
            Mapped::Db(facts) => facts.metric_attributes(),
        }
    }

    fn measurements(&self, record: &mut dyn FnMut(&'static HistogramDef, f64)) {
        match self {
            Mapped::Http(facts) => facts.measurements(record),
            Mapped::Db(facts) => facts.measurements(record),
        }
    }

    fn into_span_attributes(self) -> Vec<KeyValue> {
        match self {
            Mapped::Http(facts) => facts.into_span_attributes(),
            Mapped::Db(facts) => facts.into_span_attributes(),
        }
    }
}

/// Telemetry production and export for the whole sidecar.
#[derive(Debug)]
pub struct Telemetry {
    shared: Arc<Shared>,
    spans: Option<mpsc::Sender<QueuedSpan>>,
    printer: Option<Printer>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    prometheus_addr: Option<SocketAddr>,
    /// The longest single export may take; bounds shutdown.
    export_timeout: Duration,
}

/// The executable's file name, from its full path.
fn executable_name(exe: &str) -> &str {
    Path::new(exe)
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| !name.is_empty())
        .unwrap_or(exe)
}

impl Shared {
    fn resource(&self, service_name: &str, process: &ProcessInfo) -> Resource {
        let mut attributes = vec![
            KeyValue::new(res::PROCESS_PID, i64::from(process.pid)),
            KeyValue::new(
                res::PROCESS_EXECUTABLE_NAME,
                executable_name(&process.exe).to_owned(),
            ),
            KeyValue::new(res::PROCESS_EXECUTABLE_PATH, process.exe.clone()),
        ];
        if let Some(container) = &process.container {
            attributes.push(KeyValue::new(res::K8S_CONTAINER_NAME, container.clone()));
        }
        // Later attributes win: the process's own facts over OTEL_RESOURCE_ATTRIBUTES.
        Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_attributes(self.resource_attributes.iter().cloned())
            .with_attributes(attributes)
            .with_service_name(service_name.to_owned())
            .build()
    }

    fn new_pipeline(&self, process: &ProcessInfo) -> Pipeline {
        let service_name =
            self.service_name
                .clone()
                .unwrap_or_else(|| match executable_name(&process.exe) {
                    "" => "unknown_service".to_owned(),
                    name => name.to_owned(),
                });
        let resource = self.resource(&service_name, process);
        let meters = self.otlp_metrics.then(|| {
            let meters = MeterPipeline::new(resource.clone());
            let instruments = OtelInstruments::new(
                &meters.provider.meter_with_scope(self.scope.clone()),
                &HISTOGRAMS,
            );
            (meters, instruments)
        });
        Pipeline {
            pid: process.pid,
            exe: process.exe.clone(),
            container: process.container.clone(),
            service_name,
            resource: Arc::new(resource),
            meters,
        }
    }

    /// The pipeline of a process, created (and the least recently used one retired) as needed.
    fn pipeline(&self, process: &ProcessInfo) -> Arc<Pipeline> {
        let mut set = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        set.stamp += 1;
        let stamp = set.stamp;
        if let Some((pipeline, used)) = set.live.get_mut(&process.pid)
            && pipeline.matches(process)
        {
            *used = stamp;
            return pipeline.clone();
        }
        // A new process, or a pid reused by another executable/container.
        if let Some((old, _)) = set.live.remove(&process.pid) {
            set.retired.push(old);
        }
        if set.live.len() >= MAX_PIPELINES {
            let oldest = set
                .live
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(pid, _)| *pid);
            if let Some((old, _)) = oldest.and_then(|pid| set.live.remove(&pid)) {
                set.retired.push(old);
            }
        }
        let pipeline = Arc::new(self.new_pipeline(process));
        set.live.insert(process.pid, (pipeline.clone(), stamp));
        pipeline
    }

    /// The meter pipelines to collect: live ones, and retired ones (taken out for good).
    fn meter_pipelines(&self) -> (Vec<Arc<Pipeline>>, Vec<Arc<Pipeline>>) {
        let mut set = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let live = set.live.values().map(|(p, _)| p.clone()).collect();
        (live, std::mem::take(&mut set.retired))
    }
}

impl Telemetry {
    /// Builds OTLP trace/metric pipelines, the trace printer and the Prometheus endpoint per
    /// `config`. Must be called inside a tokio runtime.
    pub async fn start(config: &Config) -> Result<Self> {
        let self_metrics = SelfMetrics::default();
        let prometheus = config
            .prometheus_port
            .map(|_| Arc::new(PrometheusMetrics::new(&self_metrics, &HISTOGRAMS)));
        let shared = Arc::new(Shared {
            routes: config.routes.clone(),
            include_url_query: config.include_url_query,
            include_db_query_text: config.include_db_query_text,
            service_name: config.service_name.clone(),
            resource_attributes: config
                .resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
                .collect(),
            sampler: spans::sampler(config.sampler),
            clock: WallClock::measure(),
            scope: spans::instrumentation_scope(),
            otlp_metrics: config.metrics.is_some(),
            pipelines: Mutex::default(),
            self_metrics,
            prometheus: prometheus.clone(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut export_timeout = Duration::ZERO;

        let spans = match &config.traces {
            Some(traces) => {
                let exporter = span_exporter(traces)?;
                let (sender, receiver) = mpsc::channel(config.batch.max_queue_size);
                export_timeout = export_timeout.max(traces.timeout);
                tasks.push(tokio::spawn(export_spans(
                    receiver,
                    exporter,
                    config.batch,
                    traces.timeout,
                    shared.self_metrics.clone(),
                )));
                Some(sender)
            }
            None => None,
        };

        if let Some(metrics) = &config.metrics {
            let exporter = metric_exporter(metrics)?;
            let own = own_meter_pipeline(&shared);
            export_timeout = export_timeout.max(metrics.timeout);
            tasks.push(tokio::spawn(export_metrics(
                shared.clone(),
                own,
                exporter,
                config.metric_export_interval,
                metrics.timeout,
                stop_rx.clone(),
            )));
        }

        let prometheus_addr = match (config.prometheus_port, prometheus) {
            (Some(port), Some(metrics)) => {
                let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
                    .await
                    .map_err(|source| Error::Io {
                        context: format!("OTEL_EBPF_PROMETHEUS_PORT: listening on 0.0.0.0:{port}"),
                        source,
                    })?;
                let addr = listener.local_addr().map_err(|source| Error::Io {
                    context: "OTEL_EBPF_PROMETHEUS_PORT: reading the bound address".to_owned(),
                    source,
                })?;
                tasks.push(tokio::spawn(serve_prometheus(listener, metrics, stop_rx)));
                Some(addr)
            }
            _ => None,
        };

        let printer = match config.trace_printer {
            TracePrinter::Disabled => None,
            format => Some(
                Printer::spawn(
                    format,
                    Box::new(std::io::stdout()),
                    shared.self_metrics.printer_dropped.clone(),
                )
                .map_err(|source| Error::Io {
                    context: "starting the trace printer thread".to_owned(),
                    source,
                })?,
            ),
        };

        Ok(Self {
            shared,
            spans,
            printer,
            stop,
            tasks,
            prometheus_addr,
            export_timeout,
        })
    }

    /// One transaction: a span (exported and printed) and metric recordings. Never blocks.
    pub fn record(&self, tx: &Transaction, process: &ProcessInfo) {
        let shared = &self.shared;
        let pipeline = shared.pipeline(process);
        let mapped = Mapped::new(tx, shared);
        if pipeline.meters.is_some() || shared.prometheus.is_some() {
            let attributes = mapped.metric_attributes();
            mapped.measurements(&mut |def, value| {
                if let Some((_, instruments)) = &pipeline.meters {
                    instruments.record(def, value, &attributes);
                }
                if let Some(prometheus) = &shared.prometheus {
                    prometheus.record(
                        def,
                        value,
                        &attributes,
                        &pipeline.service_name,
                        pipeline.container.as_deref().unwrap_or_default(),
                    );
                }
            });
        }
        if self.spans.is_none() && self.printer.is_none() {
            return;
        }
        let name = mapped.span_name();
        let sampled = spans::is_sampled(&shared.sampler, tx, &name);
        // The printer shows every span, sampled or not; the exporter takes sampled ones only, so
        // without a printer a span the sampler drops is never built.
        if !sampled && self.printer.is_none() {
            return;
        }
        let status = mapped.span_status();
        let span = spans::span_data(
            tx,
            name,
            status,
            mapped.into_span_attributes(),
            &shared.clock,
            &shared.scope,
        );
        let span = match &self.printer {
            Some(printer) => {
                let job = PrintJob {
                    span,
                    service_name: pipeline.service_name.clone(),
                    pid: process.pid,
                    sampled,
                };
                let span = (sampled && self.spans.is_some()).then(|| job.span.clone());
                printer.print(job);
                span
            }
            None => Some(span),
        };
        if let (Some(sender), Some(span)) = (&self.spans, span) {
            let queued = QueuedSpan {
                resource: pipeline.resource.clone(),
                span,
            };
            if sender.try_send(queued).is_err() {
                shared.self_metrics.spans_dropped.add(1);
            }
        }
    }

    /// The sidecar's own counters, exported with the metrics (Prometheus and OTLP).
    pub fn self_metrics(&self) -> &SelfMetrics {
        &self.shared.self_metrics
    }

    /// Where the Prometheus endpoint listens, when enabled.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// Flushes queued spans and the last metrics, then stops; takes at most about one export
    /// timeout plus two seconds.
    pub async fn shutdown(self) {
        let Self {
            spans,
            printer,
            stop,
            tasks,
            export_timeout,
            ..
        } = self;
        // Closing the queue makes the span task export what is left and finish.
        drop(spans);
        // Nobody may be listening any more (no metrics/Prometheus tasks): nothing to stop then.
        let _ = stop.send(true);
        let deadline = Instant::now() + export_timeout + SHUTDOWN_GRACE;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("telemetry export did not finish in time; abandoning it");
                task.abort();
            }
        }
        if let Some(printer) = printer {
            let finish = tokio::task::spawn_blocking(move || printer.finish());
            if tokio::time::timeout_at(deadline, finish).await.is_err() {
                tracing::warn!("stdout did not take the last trace printer lines in time");
            }
        }
    }
}

/// The sidecar's own resource and meter, for its self metrics over OTLP.
fn own_meter_pipeline(shared: &Shared) -> MeterPipeline {
    let exe = std::env::current_exe()
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_default();
    let process = ProcessInfo {
        pid: std::process::id(),
        exe,
        container: None,
    };
    let pipeline = MeterPipeline::new(shared.resource("obi-sidecar", &process));
    register_self_metrics(
        &pipeline.provider.meter_with_scope(shared.scope.clone()),
        &shared.self_metrics,
    );
    pipeline
}

/// Collects one meter pipeline and exports it, unless it has nothing to say.
async fn export_meter(
    meters: &MeterPipeline,
    exporter: &MetricExporter,
    timeout: Duration,
    health: &mut ExportHealth,
) {
    let mut collected = ResourceMetrics::default();
    if let Err(error) = meters.reader.collect(&mut collected) {
        tracing::debug!(%error, "collecting metrics");
        return;
    }
    if collected.scope_metrics().next().is_none() {
        return;
    }
    let result = tokio::time::timeout(timeout + SHUTDOWN_GRACE, exporter.export(&collected))
        .await
        .map_err(|_| ());
    health.record("metrics", result);
}

/// Every `interval` (and once more when stopping): export all pipelines' metrics.
async fn export_metrics(
    shared: Arc<Shared>,
    own: MeterPipeline,
    exporter: MetricExporter,
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = ExportHealth::default();
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.changed() => true,
        };
        let (live, retired) = shared.meter_pipelines();
        export_meter(&own, &exporter, timeout, &mut health).await;
        for pipeline in live.iter().chain(&retired) {
            if let Some((meters, _)) = &pipeline.meters {
                export_meter(meters, &exporter, timeout, &mut health).await;
            }
        }
        for pipeline in retired.iter().chain(if stopping { &live[..] } else { &[] }) {
            if let Some((meters, _)) = &pipeline.meters {
                let _ = meters.provider.shutdown();
            }
        }
        if stopping {
            let _ = own.provider.shutdown();
            if let Err(error) = exporter.shutdown() {
                tracing::debug!(%error, "shutting down the metric exporter");
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_names() {
        assert_eq!(executable_name("/usr/bin/python3.12"), "python3.12");
        assert_eq!(executable_name("nginx"), "nginx");
        assert_eq!(executable_name(""), "");
        assert_eq!(executable_name("/"), "/");
    }

    fn process(pid: u32) -> ProcessInfo {
        ProcessInfo {
            pid,
            exe: format!("/bin/app{pid}"),
            container: Some("app".to_owned()),
        }
    }

    #[tokio::test]
    async fn pipelines_are_shared_bounded_and_retired() -> Result<()> {
        let config = Config::from_iter([(
            "OTEL_RESOURCE_ATTRIBUTES".to_owned(),
            "k8s.pod.name=web-1,k8s.container.name=ignored".to_owned(),
        )])?;
        let telemetry = Telemetry::start(&config).await?;
        let shared = &telemetry.shared;
        let first = shared.pipeline(&process(1));
        assert!(Arc::ptr_eq(&first, &shared.pipeline(&process(1))));
        let resource = &first.resource;
        let get = |key: &'static str| resource.get(&opentelemetry::Key::from_static_str(key));
        assert_eq!(get("service.name"), Some("app1".into()));
        assert_eq!(get("k8s.container.name"), Some("app".into()));
        assert_eq!(get("k8s.pod.name"), Some("web-1".into()));
        assert_eq!(get("process.pid"), Some(1.into()));
        assert_eq!(get("process.executable.path"), Some("/bin/app1".into()));
        assert_eq!(get("telemetry.sdk.language"), Some("rust".into()));

        // The same pid with another executable (pid reuse) gets a new pipeline.
        let mut reused = process(1);
        reused.exe = "/bin/other".to_owned();
        assert!(!Arc::ptr_eq(&first, &shared.pipeline(&reused)));

        for pid in 2..=(MAX_PIPELINES as u32 + 10) {
            shared.pipeline(&process(pid));
            // Keep pid 2 warm: it must survive eviction.
            shared.pipeline(&process(2));
        }
        let (live, retired) = shared.meter_pipelines();
        assert_eq!(live.len(), MAX_PIPELINES);
        assert!(live.iter().any(|p| p.pid == 2));
        assert_eq!(retired.len(), 1 + (1 + 73 - MAX_PIPELINES));
        telemetry.shutdown().await;
        Ok(())
    }
}
