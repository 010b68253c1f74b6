//! Telemetry: [`Telemetry::record`], the single entry point the run loop uses, maps each
//! transaction with its protocol's mapping (one module each, following the semantic conventions)
//! into a span (OTLP and/or the trace printer) and metric measurements (OTLP and/or Prometheus).
//!
//! Design:
//! - One resource per instrumented process (service name, container, pid, executable), encoded
//!   once, with its own table of metric series. At most [`MAX_PIPELINES`] are kept; the least
//!   recently used one is retired (its last metrics exported) when another process needs a slot.
//! - A sampled span is encoded straight into OTLP protobuf from the transaction and its mapping
//!   (no span object is built), into the batch of the bounded span queue that will be sent; one
//!   export task sends the batches. A full queue or an export that still fails after its
//!   retries drops spans and counts them, so memory stays bounded while the collector is down,
//!   and export simply resumes when it is back. `record` never waits.
//! - Metrics are aggregated here (see [`metrics`]) and read by the OTLP metric export, every
//!   `OTEL_METRIC_EXPORT_INTERVAL`, and by the Prometheus endpoint.
//! - Nothing is allocated per transaction in the steady state: the mapping borrows from the
//!   transaction, and its strings are written into buffers `Telemetry` keeps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use opentelemetry::trace::Status;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_semantic_conventions::resource as res;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, TemporalityPreference, TracePrinter, TraceSampler};
use crate::export::batch::SpanQueue;
use crate::export::encode::{
    ATTRIBUTES_TAG, EncodedResource, EncodedScope, KeyValueWriter, SpanFields, SpanScratch,
    put_span,
};
use crate::export::metrics::{MetricExport, export_metrics};
use crate::export::otlp::{Exporter, Metrics, Traces};
use crate::export::printer::{PrintJob, Printer};
use crate::export::prometheus::{PrometheusMetrics, serve_prometheus};
use crate::export::{SHUTDOWN_GRACE, export_spans};
use crate::transaction::{Facts, SpanKind, Transaction};
use crate::{Error, Result};

pub mod attributes;
pub mod db;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod route;
pub mod spans;

use attributes::Attributes;
use db::DbFacts;
use grpc::GrpcFacts;
use http::HttpFacts;
use metrics::{HistogramDef, SelfMetrics, SeriesTable};
use route::RouteMatcher;
use spans::WallClock;

/// Resources (processes) with a live pipeline at once.
pub const MAX_PIPELINES: usize = 64;

/// `telemetry.sdk.*` of every resource: what the OpenTelemetry SDK 0.33 exporter this encoder
/// replaced put there, kept so that collector pipelines and dashboards keyed on them see no
/// change.
const SDK_ATTRIBUTES: [(&str, &str); 3] = [
    (res::TELEMETRY_SDK_LANGUAGE, "rust"),
    (res::TELEMETRY_SDK_NAME, "opentelemetry"),
    (res::TELEMETRY_SDK_VERSION, "0.33.1"),
];

/// What the run loop knows about the process that handled a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Full path of the executable.
    pub exe: String,
    /// `k8s.container.name`, when known.
    pub container: Option<String>,
}

/// Everything recorded for one process (one resource).
#[derive(Debug)]
pub(crate) struct Pipeline {
    pid: u32,
    exe: String,
    container: Option<String>,
    pub(crate) service_name: String,
    /// Shared with the batches its spans wait in.
    pub(crate) resource: Arc<EncodedResource>,
    /// The process's metric series, when metrics are exported at all.
    pub(crate) series: Option<Mutex<SeriesTable>>,
    /// When it was last used, on the clock of [`Pipelines`]: the least recently used is evicted.
    used: AtomicU64,
    /// Evicted: measurements must go to the process's new pipeline.
    retired: AtomicBool,
}

impl Pipeline {
    fn matches(&self, process: &ProcessInfo) -> bool {
        self.pid == process.pid && self.exe == process.exe && self.container == process.container
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// `k8s.container.name`, empty when unknown (a Prometheus label).
    pub(crate) fn container(&self) -> &str {
        self.container.as_deref().unwrap_or_default()
    }
}

/// A lock whose holder never panics mid-update in a way that matters: a poisoned lock is used
/// as it is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct PipelineSet {
    live: HashMap<u32, Arc<Pipeline>, foldhash::fast::RandomState>,
    /// Evicted or replaced pipelines whose metrics still need one last OTLP export.
    retired: Vec<Arc<Pipeline>>,
}

/// The live pipelines, by pid, shared with the metric export and the Prometheus endpoint, and
/// the clock their use is stamped with.
#[derive(Debug, Default)]
pub(crate) struct Pipelines {
    set: Mutex<PipelineSet>,
    clock: AtomicU64,
}

impl Pipelines {
    /// The live pipelines.
    pub(crate) fn live(&self) -> Vec<Arc<Pipeline>> {
        lock(&self.set).live.values().cloned().collect()
    }

    /// The retired pipelines, taken out for their last export.
    pub(crate) fn take_retired(&self) -> Vec<Arc<Pipeline>> {
        std::mem::take(&mut lock(&self.set).retired)
    }

    fn touch(&self, pipeline: &Pipeline) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        pipeline.used.store(now, Ordering::Relaxed);
    }
}

/// The state `record` and the background tasks share.
#[derive(Debug)]
struct Shared {
    routes: RouteMatcher,
    include_url_query: bool,
    include_db_query_text: bool,
    service_name: Option<String>,
    resource_attributes: Vec<(String, String)>,
    sampler: TraceSampler,
    clock: WallClock,
    pipelines: Arc<Pipelines>,
    /// Metric series are kept (some metrics export is configured), with this limit per metric.
    series_limit: Option<usize>,
    delta: bool,
    /// Retired pipelines wait for a last OTLP export.
    otlp_metrics: bool,
    self_metrics: SelfMetrics,
    prometheus: Option<Arc<PrometheusMetrics>>,
}

/// Every histogram a protocol's mapping records into.
pub(crate) static HISTOGRAMS: std::sync::LazyLock<Vec<&'static HistogramDef>> =
    std::sync::LazyLock::new(|| {
        [
            &http::HISTOGRAMS[..],
            &db::HISTOGRAMS[..],
            &grpc::HISTOGRAMS[..],
        ]
        .concat()
    });

/// What a protocol's mapping provides: a transaction's facts in the terms of the semantic
/// conventions, derived once, from which its span and its metric measurements are made.
///
/// Attributes go into an [`Attributes`] sink, so that neither the span nor the metric series
/// key needs them as objects; a mapping that builds `Vec<opentelemetry::KeyValue>` hands them
/// over with `for kv in &attributes { out.key_value(kv) }`, and its span name with
/// `name.push_str(&its_name)`.
pub trait Semantics {
    /// Writes the span name into `name` (empty when called).
    fn span_name(&self, name: &mut String);
    fn span_status(&self) -> Status;
    /// The attributes of the transaction's metric series: bounded-cardinality ones only, in
    /// the same order every time (the order is part of the series key).
    fn metric_attributes(&self, attributes: &mut dyn Attributes);
    /// Each histogram the transaction records into, with the value it records.
    fn measurements(&self, record: &mut dyn FnMut(&'static HistogramDef, f64));
    /// The span's attributes.
    fn span_attributes(&self, attributes: &mut dyn Attributes);
}

/// A transaction's facts, mapped by its protocol's mapping.
#[derive(Debug)]
enum Mapped<'a> {
    Http(HttpFacts<'a>),
    /// An HTTP/2 exchange that is a gRPC call: an RPC span, never also an HTTP one.
    Grpc(GrpcFacts<'a>),
    Db(DbFacts),
}

impl<'a> Mapped<'a> {
    fn new(tx: &'a Transaction, shared: &'a Shared, scratch: &'a mut String) -> Self {
        match &tx.facts {
            Facts::Http(exchange) if let Some(call) = exchange.grpc => {
                Mapped::Grpc(GrpcFacts::new(tx, exchange, call))
            }
            Facts::Http(exchange) => Mapped::Http(HttpFacts::new(
                tx,
                exchange,
                &shared.routes,
                shared.include_url_query,
                scratch,
            )),
            Facts::Db(call) => Mapped::Db(DbFacts::new(tx, call, shared.include_db_query_text)),
        }
    }
}

impl Semantics for Mapped<'_> {
    fn span_name(&self, name: &mut String) {
        match self {
            Mapped::Http(facts) => facts.span_name(name),
            Mapped::Grpc(facts) => facts.span_name(name),
            Mapped::Db(facts) => facts.span_name(name),
        }
    }

    fn span_status(&self) -> Status {
        match self {
            Mapped::Http(facts) => facts.span_status(),
            Mapped::Grpc(facts) => facts.span_status(),
            Mapped::Db(facts) => facts.span_status(),
        }
    }

    fn metric_attributes(&self, attributes: &mut dyn Attributes) {
        match self {
            Mapped::Http(facts) => facts.metric_attributes(attributes),
            Mapped::Grpc(facts) => facts.metric_attributes(attributes),
            Mapped::Db(facts) => facts.metric_attributes(attributes),
        }
    }

    fn measurements(&self, record: &mut dyn FnMut(&'static HistogramDef, f64)) {
        match self {
            Mapped::Http(facts) => facts.measurements(record),
            Mapped::Grpc(facts) => facts.measurements(record),
            Mapped::Db(facts) => facts.measurements(record),
        }
    }

    fn span_attributes(&self, attributes: &mut dyn Attributes) {
        match self {
            Mapped::Http(facts) => facts.span_attributes(attributes),
            Mapped::Grpc(facts) => facts.span_attributes(attributes),
            Mapped::Db(facts) => facts.span_attributes(attributes),
        }
    }
}

/// Buffers `record` reuses from one transaction to the next.
#[derive(Debug, Default)]
struct Scratch {
    route: String,
    name: String,
    /// A metric series key: the encoded metric attributes.
    key: Vec<u8>,
    text: String,
    span: SpanScratch,
}

/// Telemetry production and export for the whole sidecar.
#[derive(Debug)]
pub struct Telemetry {
    shared: Arc<Shared>,
    spans: Option<Arc<SpanQueue>>,
    printer: Option<Printer>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    prometheus_addr: Option<SocketAddr>,
    /// The longest single export may take; bounds shutdown.
    export_timeout: Duration,
    scratch: Scratch,
    /// The pipeline of the last transaction.
    last: Option<Arc<Pipeline>>,
}

/// The executable's file name, from its full path.
fn executable_name(exe: &str) -> &str {
    Path::new(exe)
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| !name.is_empty())
        .unwrap_or(exe)
}

fn string_value(value: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    }
}

/// The instrumentation scope every span and metric of the sidecar is reported under.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: spans::SCOPE_NAME.to_owned(),
        version: spans::SCOPE_VERSION.to_owned(),
        ..Default::default()
    }
}

/// The schema URL of the scope.
pub(crate) const SCHEMA_URL: &str = opentelemetry_semantic_conventions::SCHEMA_URL;

impl Shared {
    /// The resource of a process: the SDK attributes, `OTEL_RESOURCE_ATTRIBUTES`, then the
    /// process's own facts; a later attribute replaces an earlier one of the same key.
    fn resource(&self, service_name: &str, process: &ProcessInfo) -> Resource {
        let mut attributes: Vec<KeyValue> = Vec::new();
        let mut set = |key: &str, value: AnyValue| {
            let value = Some(value);
            match attributes.iter_mut().find(|kv| kv.key == key) {
                Some(kv) => kv.value = value,
                None => attributes.push(KeyValue {
                    key: key.to_owned(),
                    value,
                    ..Default::default()
                }),
            }
        };
        for (key, value) in SDK_ATTRIBUTES {
            set(key, string_value(value));
        }
        for (key, value) in &self.resource_attributes {
            set(key, string_value(value));
        }
        set(
            res::PROCESS_PID,
            AnyValue {
                value: Some(any_value::Value::IntValue(i64::from(process.pid))),
            },
        );
        set(
            res::PROCESS_EXECUTABLE_NAME,
            string_value(executable_name(&process.exe)),
        );
        set(res::PROCESS_EXECUTABLE_PATH, string_value(&process.exe));
        if let Some(container) = &process.container {
            set(res::K8S_CONTAINER_NAME, string_value(container));
        }
        set(res::SERVICE_NAME, string_value(service_name));
        Resource {
            attributes,
            ..Default::default()
        }
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
        Pipeline {
            pid: process.pid,
            exe: process.exe.clone(),
            container: process.container.clone(),
            service_name,
            resource: Arc::new(EncodedResource::new(resource)),
            series: self.series_limit.map(|limit| {
                Mutex::new(SeriesTable::new(limit, self.delta, spans::unix_nanos_now()))
            }),
            used: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    /// The pipeline of a process, created (and the least recently used one retired) as needed.
    fn pipeline(&self, process: &ProcessInfo) -> Arc<Pipeline> {
        let pipelines = &*self.pipelines;
        let mut set = lock(&pipelines.set);
        if let Some(pipeline) = set.live.get(&process.pid)
            && pipeline.matches(process)
        {
            pipelines.touch(pipeline);
            return pipeline.clone();
        }
        let mut evicted = Vec::new();
        // A new process, or a pid reused by another executable/container.
        if let Some(old) = set.live.remove(&process.pid) {
            evicted.push(old);
        }
        if set.live.len() >= MAX_PIPELINES {
            let oldest = set
                .live
                .iter()
                .min_by_key(|(_, p)| p.used.load(Ordering::Relaxed))
                .map(|(pid, _)| *pid);
            if let Some(old) = oldest.and_then(|pid| set.live.remove(&pid)) {
                evicted.push(old);
            }
        }
        for old in &evicted {
            old.retired.store(true, Ordering::Relaxed);
        }
        let pipeline = Arc::new(self.new_pipeline(process));
        pipelines.touch(&pipeline);
        set.live.insert(process.pid, pipeline.clone());
        if self.otlp_metrics {
            set.retired.extend(evicted);
        } else if let Some(prometheus) = &self.prometheus {
            drop(set);
            for old in &evicted {
                prometheus.archive(old);
            }
        }
        pipeline
    }
}

impl Telemetry {
    /// Starts OTLP span and metric export, the trace printer and the Prometheus endpoint per
    /// `config`. Must be called inside a tokio runtime.
    pub async fn start(config: &Config) -> Result<Self> {
        let self_metrics = SelfMetrics::default();
        let pipelines = Arc::new(Pipelines::default());
        let prometheus = config.prometheus_port.map(|_| {
            Arc::new(PrometheusMetrics::new(
                &self_metrics,
                pipelines.clone(),
                config.metric_cardinality_limit,
            ))
        });
        let metrics_kept = config.metrics.is_some() || prometheus.is_some();
        let delta = config.metrics.is_some()
            && config.metric_temporality != TemporalityPreference::Cumulative;
        let shared = Arc::new(Shared {
            routes: config.routes.clone(),
            include_url_query: config.include_url_query,
            include_db_query_text: config.include_db_query_text,
            service_name: config.service_name.clone(),
            resource_attributes: config.resource_attributes.clone(),
            sampler: config.sampler,
            clock: WallClock::measure(),
            pipelines: pipelines.clone(),
            series_limit: metrics_kept.then_some(config.metric_cardinality_limit),
            delta,
            otlp_metrics: config.metrics.is_some(),
            self_metrics: self_metrics.clone(),
            prometheus: prometheus.clone(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut export_timeout = Duration::ZERO;

        let spans = match &config.traces {
            Some(traces) => {
                let exporter = Exporter::<Traces>::new(traces)?;
                let queue = Arc::new(SpanQueue::new(config.batch));
                export_timeout = export_timeout.max(traces.timeout);
                tasks.push(tokio::spawn(export_spans(
                    queue.clone(),
                    exporter,
                    EncodedScope::new(&scope(), SCHEMA_URL),
                    self_metrics.clone(),
                )));
                Some(queue)
            }
            None => None,
        };

        if let Some(metrics) = &config.metrics {
            let exporter = Exporter::<Metrics>::new(metrics)?;
            export_timeout = export_timeout.max(metrics.timeout);
            let export = MetricExport {
                pipelines,
                own_resource: shared.resource("obi-sidecar", &own_process()),
                scope: scope(),
                self_metrics: self_metrics.clone(),
                temporality: config.metric_temporality,
                prometheus: prometheus.clone(),
            };
            tasks.push(tokio::spawn(export_metrics(
                export,
                exporter,
                config.metric_export_interval,
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
                    self_metrics.printer_dropped.clone(),
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
            scratch: Scratch::default(),
            last: None,
        })
    }

    /// One transaction: its metric measurements, and its span (exported and printed). Never
    /// blocks.
    pub fn record(&mut self, tx: &Transaction, process: &ProcessInfo) {
        // Nothing exported or printed: nothing to make.
        if self.spans.is_none() && self.printer.is_none() && self.shared.series_limit.is_none() {
            return;
        }
        // The process of the last transaction, most often the same again: no lookup then.
        let pipeline = match self.last.take() {
            Some(last) if last.matches(process) && !last.is_retired() => {
                self.shared.pipelines.touch(&last);
                last
            }
            _ => self.shared.pipeline(process),
        };
        self.record_into(&pipeline, tx, process);
        self.last = Some(pipeline);
    }

    fn record_into(&mut self, pipeline: &Pipeline, tx: &Transaction, process: &ProcessInfo) {
        let shared = &*self.shared;
        let spans_wanted = self.spans.is_some() || self.printer.is_some();
        let Scratch {
            route,
            name,
            key,
            text,
            span,
        } = &mut self.scratch;
        let mapped = Mapped::new(tx, shared, route);
        if let Some(series) = &pipeline.series {
            key.clear();
            mapped.metric_attributes(&mut KeyValueWriter {
                out: key,
                text,
                tag: ATTRIBUTES_TAG,
            });
            lock(series).record(key, &mapped);
        }
        if !spans_wanted {
            return;
        }
        let sampled = spans::is_sampled(shared.sampler, tx);
        // The printer shows every span, sampled or not; the exporter takes sampled ones only, so
        // without a printer a span the sampler drops is never encoded.
        if !sampled && self.printer.is_none() {
            return;
        }
        name.clear();
        mapped.span_name(name);
        let status = mapped.span_status();
        if let (true, Some(queue)) = (sampled, &self.spans) {
            let fields = SpanFields {
                trace_id: &tx.trace.trace_id,
                span_id: &tx.trace.span_id,
                parent_span_id: tx.trace.parent_span_id.as_ref(),
                parent_is_remote: is_parent_remote(tx),
                kind: tx.kind,
                start_unix_nano: shared.clock.to_unix_nanos(tx.start_ns),
                end_unix_nano: shared.clock.to_unix_nanos(tx.end_ns.max(tx.start_ns)),
                name,
                status: &status,
            };
            let queued = queue.push(&pipeline.resource, |out| {
                put_span(out, span, &fields, |attributes| {
                    mapped.span_attributes(attributes);
                });
            });
            if !queued {
                shared.self_metrics.spans_dropped.add(1);
            }
        }
        if let Some(printer) = &self.printer {
            let mut attributes = Vec::new();
            mapped.span_attributes(&mut attributes);
            printer.print(PrintJob {
                name: name.clone(),
                kind: tx.kind,
                trace_id: tx.trace.trace_id,
                span_id: tx.trace.span_id,
                parent_span_id: tx.trace.parent_span_id,
                start: shared.clock.to_system_time(tx.start_ns),
                end: shared.clock.to_system_time(tx.end_ns.max(tx.start_ns)),
                status,
                attributes,
                service_name: pipeline.service_name.clone(),
                pid: process.pid,
                sampled,
            });
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
        if let Some(queue) = spans {
            queue.close();
        }
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

/// A server span's parent is the caller's span, in another process; a client span's is the
/// server span it was sent for, or a span of the app itself.
fn is_parent_remote(tx: &Transaction) -> bool {
    tx.kind == SpanKind::Server && tx.trace.parent_span_id.is_some()
}

/// The sidecar itself, the process its own metrics are reported for.
fn own_process() -> ProcessInfo {
    let exe = std::env::current_exe()
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_default();
    ProcessInfo {
        pid: std::process::id(),
        exe,
        container: None,
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

    fn resource_value<'a>(resource: &'a Resource, key: &str) -> Option<&'a any_value::Value> {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[tokio::test]
    async fn pipelines_are_shared_bounded_and_retired() -> Result<()> {
        let config = Config::from_iter([
            (
                "OTEL_RESOURCE_ATTRIBUTES".to_owned(),
                "k8s.pod.name=web-1,k8s.container.name=ignored,telemetry.sdk.name=mine".to_owned(),
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT".to_owned(),
                "http://127.0.0.1:9".to_owned(),
            ),
        ])?;
        let telemetry = Telemetry::start(&config).await?;
        let shared = &telemetry.shared;
        let first = shared.pipeline(&process(1));
        assert!(Arc::ptr_eq(&first, &shared.pipeline(&process(1))));
        let resource = &first.resource.proto;
        let string = |key| match resource_value(resource, key) {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        };
        assert_eq!(string("service.name"), Some("app1"));
        assert_eq!(string("k8s.container.name"), Some("app"));
        assert_eq!(string("k8s.pod.name"), Some("web-1"));
        assert_eq!(string("process.executable.path"), Some("/bin/app1"));
        assert_eq!(string("telemetry.sdk.language"), Some("rust"));
        assert_eq!(string("telemetry.sdk.name"), Some("mine"));
        assert_eq!(
            resource_value(resource, "process.pid"),
            Some(&any_value::Value::IntValue(1))
        );
        // Each key once.
        assert_eq!(resource.attributes.len(), 9);

        // The same pid with another executable (pid reuse) gets a new pipeline.
        let mut reused = process(1);
        reused.exe = "/bin/other".to_owned();
        assert!(!Arc::ptr_eq(&first, &shared.pipeline(&reused)));

        for pid in 2..=(MAX_PIPELINES as u32 + 10) {
            shared.pipeline(&process(pid));
            // Keep pid 2 warm: it must survive eviction.
            shared.pipeline(&process(2));
        }
        let live = shared.pipelines.live();
        assert_eq!(live.len(), MAX_PIPELINES);
        assert!(live.iter().any(|p| p.pid == 2));
        let retired = shared.pipelines.take_retired();
        assert_eq!(retired.len(), 1 + (1 + 73 - MAX_PIPELINES));
        telemetry.shutdown().await;
        Ok(())
    }

    #[tokio::test]
    async fn without_metric_export_nothing_waits_for_one() -> Result<()> {
        let telemetry = Telemetry::start(&Config::from_iter([])?).await?;
        let shared = &telemetry.shared;
        for pid in 1..=(MAX_PIPELINES as u32 + 5) {
            assert!(shared.pipeline(&process(pid)).series.is_none());
        }
        assert!(shared.pipelines.take_retired().is_empty());
        telemetry.shutdown().await;
        Ok(())
    }

    fn count_line<'a>(text: &'a str, route: &str) -> Option<&'a str> {
        text.lines().find(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains(&format!("http_route=\"{route}\""))
        })
    }

    /// Processes of one service and container make one Prometheus series; a process's totals
    /// outlive its pipeline.
    #[tokio::test]
    async fn prometheus_sums_processes_and_keeps_retired_totals() -> Result<()> {
        let mut config = Config::from_iter([("OTEL_SERVICE_NAME".to_owned(), "shop".to_owned())])?;
        config.prometheus_port = Some(0);
        let mut telemetry = Telemetry::start(&config).await?;
        let tx = crate::telemetry::http::tests::transaction(SpanKind::Server, "GET", "/a", 200);
        for pid in [1, 2, 2] {
            telemetry.record(&tx, &process(pid));
        }
        let encode = |telemetry: &Telemetry| {
            telemetry
                .shared
                .prometheus
                .as_ref()
                .map(|p| p.encode())
                .unwrap_or_default()
        };
        let text = encode(&telemetry);
        let line = count_line(&text, "/a").unwrap_or_default().to_owned();
        assert!(line.ends_with(" 3"), "{text}");
        assert_eq!(
            text.matches("http_server_request_duration_seconds_count{")
                .count(),
            1
        );
        // Evict every pipeline: the totals stay, and new measurements add to them (not to the
        // evicted pipeline of pid 2, the last one used).
        for pid in 10..(10 + MAX_PIPELINES as u32) {
            telemetry.shared.pipeline(&process(pid));
        }
        assert!(!telemetry.shared.pipelines.live().iter().any(|p| p.pid <= 2));
        let text = encode(&telemetry);
        assert_eq!(count_line(&text, "/a"), Some(line.as_str()), "{text}");
        telemetry.record(&tx, &process(2));
        let text = encode(&telemetry);
        assert!(
            count_line(&text, "/a").is_some_and(|l| l.ends_with(" 4")),
            "{text}"
        );
        telemetry.shutdown().await;
        Ok(())
    }
}
