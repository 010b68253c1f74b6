//! The sidecar's configuration, read from OBI-compatible and standard OpenTelemetry environment
//! variables. Every invalid value is reported with the name of its variable; the binary turns
//! that into exit code 2.
//!
//! Empty values count as unset, as the OpenTelemetry specification asks.

use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::telemetry::metrics::DEFAULT_CARDINALITY_LIMIT;
use crate::telemetry::route::{RouteMatcher, Unmatched};
use crate::{Error, Result};

/// Default `OTEL_EXPORTER_OTLP_TIMEOUT`.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `OTEL_METRIC_EXPORT_INTERVAL`.
const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(60);
/// Default `OTEL_BSP_SCHEDULE_DELAY`: shorter than the specification's 5 s so spans show up
/// promptly; batches still fill up under load.
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(1);
const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
/// The gRPC port OTLP uses; any other port means http/protobuf when no protocol is set.
const OTLP_GRPC_PORT: u16 = 4317;

/// Ports and port ranges, as in `80,443,8000-8999`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet {
    /// Sorted, non-overlapping inclusive ranges.
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let (low, high) = match item.split_once('-') {
                Some((low, high)) => (parse_port(low)?, parse_port(high)?),
                None => {
                    let port = parse_port(item)?;
                    (port, port)
                }
            };
            if low > high {
                return Err(format!("port range {item:?} is reversed"));
            }
            ranges.push((low, high));
        }
        if ranges.is_empty() {
            return Err("no ports given".to_owned());
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (low, high) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(low) <= u32::from(last.1) + 1 => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        Ok(Self { ranges: merged })
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&port))
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{:?} is not a port (1-65535)", text.trim())),
    }
}

/// `OTEL_EBPF_TRACE_PRINTER`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TracePrinter {
    #[default]
    Disabled,
    /// One human-readable line per span.
    Text,
    /// One JSON object per line per span.
    Json,
}

/// `OTEL_EBPF_CAPTURE_MODE`: which kernel hooks capture the pod's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureMode {
    /// Pod-scoped when the app containers' cgroup v2 is reachable and the attach is permitted,
    /// else the socket tracepoints, else `sys_exit`.
    #[default]
    Auto,
    /// Only the pod-scoped hooks (`cgroup_skb` + `sock_ops` on the app containers' cgroups);
    /// impossible here, the sidecar exits with code 2.
    Pod,
    /// The socket tracepoints (on kernels before 6.3, `sys_exit`).
    Tracepoints,
    /// Only `sys_exit`.
    SysExit,
}

impl CaptureMode {
    /// Parses a value of `OTEL_EBPF_CAPTURE_MODE` (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "pod" => Ok(Self::Pod),
            "tracepoints" => Ok(Self::Tracepoints),
            "sys_exit" => Ok(Self::SysExit),
            _ => Err(format!(
                "{text:?} is not auto, pod, tracepoints or sys_exit"
            )),
        }
    }

    /// The value as written in `OTEL_EBPF_CAPTURE_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Pod => "pod",
            Self::Tracepoints => "tracepoints",
            Self::SysExit => "sys_exit",
        }
    }
}

/// `OTEL_EBPF_TLS_UPROBES`: which kind of uprobe carries the TLS hooks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsUprobes {
    /// `uprobe_multi` links, else perf-event uprobes when CAP_SYS_ADMIN is in the effective
    /// set, else no TLS capture (one log line says why).
    #[default]
    Auto,
    /// Only `uprobe_multi` links (Linux 6.6+, CAP_BPF + CAP_PERFMON).
    Multi,
    /// Only perf-event uprobes (CAP_SYS_ADMIN).
    Perf,
}

impl TlsUprobes {
    /// Parses a value of `OTEL_EBPF_TLS_UPROBES` (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "multi" => Ok(Self::Multi),
            "perf" => Ok(Self::Perf),
            _ => Err(format!("{text:?} is not auto, multi or perf")),
        }
    }

    /// The value as written in `OTEL_EBPF_TLS_UPROBES`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Multi => "multi",
            Self::Perf => "perf",
        }
    }
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// OTLP payload compression (`OTEL_EXPORTER_OTLP_COMPRESSION`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// Where and how one signal (traces or metrics) is exported over OTLP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSignal {
    /// The full URL: for http/protobuf it already ends in `/v1/traces` or `/v1/metrics` when it
    /// came from the base endpoint.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Headers (gRPC metadata) sent with every export.
    pub headers: Vec<(String, String)>,
    /// How long one export may take, retries included.
    pub timeout: Duration,
    pub compression: Compression,
    /// PEM certificates to trust instead of the built-in roots (`OTEL_EXPORTER_OTLP_CERTIFICATE`,
    /// read at start-up), for `https://` endpoints.
    pub certificate: Option<Vec<u8>>,
}

/// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemporalityPreference {
    #[default]
    Cumulative,
    /// Histograms and counters as deltas.
    Delta,
    /// Histograms as deltas, the sidecar's own (asynchronous) counters cumulative.
    LowMemory,
}

/// `OTEL_TRACES_SAMPLER` (with its `_ARG` folded in).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TraceSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// Span batching: `OTEL_BSP_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Spans waiting for export; more are dropped (and counted).
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
}

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `OTEL_EBPF_OPEN_PORT`: instrument processes listening on any of these.
    pub open_ports: Option<PortSet>,
    /// `OTEL_EBPF_AUTO_TARGET_EXE`: instrument processes whose executable path matches.
    pub auto_target_exe: Option<GlobMatcher>,
    /// `OTEL_EBPF_K8S_CONTAINER_PORTS` (`app=8080,8443;metrics=9090`): container names by port.
    pub container_ports: Vec<(String, PortSet)>,
    /// `OTEL_SERVICE_NAME` (else `service.name` of `OTEL_RESOURCE_ATTRIBUTES`); `None`: each
    /// process is named after its executable.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, percent-decoded, in order, without `service.name`.
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_EBPF_TRACE_PRINTER`.
    pub trace_printer: TracePrinter,
    /// `OTEL_EBPF_LOG_LEVEL`: `trace`, `debug`, `info` (default), `warn` or `error`, lowercase.
    pub log_level: String,
    /// `OTEL_EBPF_PROMETHEUS_PORT`: serve `/metrics` on this port.
    pub prometheus_port: Option<u16>,
    /// `OTEL_EBPF_BPF_RINGBUF_SIZE`: bytes of the kernel ring buffer.
    pub ring_buffer_bytes: u32,
    /// `OTEL_EBPF_CAPTURE_MODE`.
    pub capture_mode: CaptureMode,
    /// Trace export; `None` when no OTLP endpoint is configured for traces.
    pub traces: Option<OtlpSignal>,
    /// Metric export; `None` when no OTLP endpoint is configured for metrics.
    pub metrics: Option<OtlpSignal>,
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`).
    pub sampler: TraceSampler,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds, default 60000).
    pub metric_export_interval: Duration,
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` (default cumulative).
    pub metric_temporality: TemporalityPreference,
    /// `OTEL_EBPF_METRICS_CARDINALITY_LIMIT`: series per metric and process (default 2000);
    /// measurements beyond go to one `otel.metric.overflow` series.
    pub metric_cardinality_limit: usize,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`.
    pub batch: BatchConfig,
    /// `OTEL_EBPF_ROUTES_PATTERNS` and `OTEL_EBPF_ROUTES_UNMATCHED`.
    pub routes: RouteMatcher,
    /// `OTEL_EBPF_HTTP_INCLUDE_QUERY`: export query strings (`url.query`, in `url.full`).
    /// Off by default: query strings often carry secrets.
    pub include_url_query: bool,
    /// `OTEL_EBPF_DB_INCLUDE_QUERY_TEXT`: export statement text (`db.query.text`), with its
    /// literals replaced by `?`. Off by default: statements may still say more than they should.
    pub include_db_query_text: bool,
    /// `OTEL_EBPF_TLS_CAPTURE`: capture TLS plaintext with uprobes on OpenSSL-compatible
    /// libraries (on by default).
    pub tls_capture: bool,
    /// `OTEL_EBPF_TLS_UPROBES`: the kind of uprobe those are (default `auto`).
    pub tls_uprobes: TlsUprobes,
}

/// The raw variables, picked from the environment by envy (field names are the lowercased
/// variable names). Everything is a string so that errors can name the variable.
#[derive(Debug, Default, Deserialize)]
struct RawVars {
    otel_ebpf_open_port: Option<String>,
    otel_ebpf_auto_target_exe: Option<String>,
    otel_ebpf_k8s_container_ports: Option<String>,
    otel_service_name: Option<String>,
    otel_resource_attributes: Option<String>,
    otel_ebpf_trace_printer: Option<String>,
    otel_ebpf_log_level: Option<String>,
    otel_ebpf_prometheus_port: Option<String>,
    otel_ebpf_bpf_ringbuf_size: Option<String>,
    otel_ebpf_capture_mode: Option<String>,
    otel_exporter_otlp_endpoint: Option<String>,
    otel_exporter_otlp_traces_endpoint: Option<String>,
    otel_exporter_otlp_metrics_endpoint: Option<String>,
    otel_exporter_otlp_protocol: Option<String>,
    otel_exporter_otlp_traces_protocol: Option<String>,
    otel_exporter_otlp_metrics_protocol: Option<String>,
    otel_exporter_otlp_headers: Option<String>,
    otel_exporter_otlp_traces_headers: Option<String>,
    otel_exporter_otlp_metrics_headers: Option<String>,
    otel_exporter_otlp_timeout: Option<String>,
    otel_exporter_otlp_traces_timeout: Option<String>,
    otel_exporter_otlp_metrics_timeout: Option<String>,
    otel_exporter_otlp_compression: Option<String>,
    otel_exporter_otlp_traces_compression: Option<String>,
    otel_exporter_otlp_metrics_compression: Option<String>,
    otel_exporter_otlp_certificate: Option<String>,
    otel_exporter_otlp_traces_certificate: Option<String>,
    otel_exporter_otlp_metrics_certificate: Option<String>,
    otel_exporter_otlp_metrics_temporality_preference: Option<String>,
    otel_ebpf_metrics_cardinality_limit: Option<String>,
    otel_traces_sampler: Option<String>,
    otel_traces_sampler_arg: Option<String>,
    otel_metric_export_interval: Option<String>,
    otel_bsp_max_queue_size: Option<String>,
    otel_bsp_max_export_batch_size: Option<String>,
    otel_bsp_schedule_delay: Option<String>,
    otel_ebpf_routes_patterns: Option<String>,
    otel_ebpf_routes_unmatched: Option<String>,
    otel_ebpf_http_include_query: Option<String>,
    otel_ebpf_db_include_query_text: Option<String>,
    otel_ebpf_tls_capture: Option<String>,
    otel_ebpf_tls_uprobes: Option<String>,
}

/// A variable's value, with empty values treated as unset.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn invalid(var: &'static str, message: impl Into<String>) -> Error {
    Error::Config {
        var,
        message: message.into(),
    }
}

fn parse_with<T>(
    var: &'static str,
    value: &Option<String>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    set(value)
        .map(|v| parse(v).map_err(|message| invalid(var, message)))
        .transpose()
}

fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a valid number"))
}

fn parse_millis(text: &str) -> Result<Duration, String> {
    match parse_number::<u64>(text)? {
        0 => Err("must be greater than 0 milliseconds".to_owned()),
        ms => Ok(Duration::from_millis(ms)),
    }
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match parse_number::<usize>(text)? {
        0 => Err("must be greater than 0".to_owned()),
        n => Ok(n),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

/// `key=value,key2=value2` lists (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`):
/// keys trimmed, values percent-decoded as the specification says.
fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not key=value"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("{item:?} has an empty key"));
            }
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| format!("the value of {key:?} is not UTF-8 once percent-decoded"))?;
            Ok((key.to_owned(), value.into_owned()))
        })
        .collect()
}

/// `name=ports;name2=ports` (`OTEL_EBPF_K8S_CONTAINER_PORTS`).
fn parse_container_ports(text: &str) -> Result<Vec<(String, PortSet)>, String> {
    text.split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (name, ports) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not container=ports"))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("{item:?} has an empty container name"));
            }
            let ports = PortSet::parse(ports).map_err(|e| format!("container {name:?}: {e}"))?;
            Ok((name.to_owned(), ports))
        })
        .collect()
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "http/json" => Err("http/json is not supported: use grpc or http/protobuf".to_owned()),
        other => Err(format!("{other:?} is not grpc or http/protobuf")),
    }
}

/// Checks an endpoint URL and returns its port (explicit, or the scheme's default).
fn endpoint_port(text: &str) -> Result<u16, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return Err(format!("{text:?} must start with http:// or https://")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(uri.port_u16().unwrap_or(default_port))
}

/// The variables of one signal.
struct SignalVars<'a> {
    name: &'static str,
    path: &'static str,
    endpoint_var: &'static str,
    endpoint: &'a Option<String>,
    protocol_var: &'static str,
    protocol: &'a Option<String>,
    headers_var: &'static str,
    headers: &'a Option<String>,
    timeout_var: &'static str,
    timeout: &'a Option<String>,
    compression_var: &'static str,
    compression: &'a Option<String>,
    certificate_var: &'static str,
    certificate: &'a Option<String>,
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    match text.to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "none" => Ok(Compression::None),
        _ => Err(format!("{text:?} is not gzip or none")),
    }
}

fn read_certificate(path: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {path:?}: {e}"))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(pem)
}

/// Resolves one signal's export per the OTLP exporter specification: a signal-specific
/// endpoint is used as-is; the base endpoint gets `/v1/<signal>` appended for http/protobuf.
fn resolve_signal(raw: &RawVars, signal: SignalVars<'_>) -> Result<Option<OtlpSignal>> {
    const BASE_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    let (endpoint_var, endpoint, from_base) = match set(signal.endpoint) {
        Some(endpoint) => (signal.endpoint_var, endpoint, false),
        None => match set(&raw.otel_exporter_otlp_endpoint) {
            Some(endpoint) => (BASE_VAR, endpoint, true),
            None => return Ok(None),
        },
    };
    let port = endpoint_port(endpoint).map_err(|message| invalid(endpoint_var, message))?;
    let protocol = match parse_with(signal.protocol_var, signal.protocol, parse_protocol)? {
        Some(protocol) => protocol,
        None => parse_with(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            &raw.otel_exporter_otlp_protocol,
            parse_protocol,
        )?
        .unwrap_or(if port == OTLP_GRPC_PORT {
            Protocol::Grpc
        } else {
            Protocol::HttpProtobuf
        }),
    };
    let endpoint = if from_base && protocol == Protocol::HttpProtobuf {
        format!("{}/{}", endpoint.trim_end_matches('/'), signal.path)
    } else {
        endpoint.to_owned()
    };
    let mut headers = parse_with(
        "OTEL_EXPORTER_OTLP_HEADERS",
        &raw.otel_exporter_otlp_headers,
        parse_key_values,
    )?
    .unwrap_or_default();
    // Signal-specific headers override the common ones with the same name.
    for (key, value) in
        parse_with(signal.headers_var, signal.headers, parse_key_values)?.unwrap_or_default()
    {
        headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(&key));
        headers.push((key, value));
    }
    let timeout = match parse_with(signal.timeout_var, signal.timeout, parse_millis)? {
        Some(timeout) => timeout,
        None => parse_with(
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            &raw.otel_exporter_otlp_timeout,
            parse_millis,
        )?
        .unwrap_or(DEFAULT_EXPORT_TIMEOUT),
    };
    let compression = match parse_with(
        signal.compression_var,
        signal.compression,
        parse_compression,
    )? {
        Some(compression) => compression,
        None => parse_with(
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            &raw.otel_exporter_otlp_compression,
            parse_compression,
        )?
        .unwrap_or_default(),
    };
    let certificate =
        match parse_with(signal.certificate_var, signal.certificate, read_certificate)? {
            Some(pem) => Some(pem),
            None => parse_with(
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                &raw.otel_exporter_otlp_certificate,
                read_certificate,
            )?,
        };
    tracing::debug!(signal = signal.name, %endpoint, ?protocol, ?compression, "OTLP export configured");
    Ok(Some(OtlpSignal {
        endpoint,
        protocol,
        headers,
        timeout,
        compression,
        certificate,
    }))
}

fn parse_sampler(raw: &RawVars) -> Result<TraceSampler> {
    const VAR: &str = "OTEL_TRACES_SAMPLER";
    const ARG_VAR: &str = "OTEL_TRACES_SAMPLER_ARG";
    let ratio = || -> Result<f64> {
        let ratio = parse_with(
            ARG_VAR,
            &raw.otel_traces_sampler_arg,
            |text| match parse_number::<f64>(text)? {
                r if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!("{text:?} is not a ratio between 0 and 1")),
            },
        )?;
        Ok(ratio.unwrap_or(1.0))
    };
    let name = set(&raw.otel_traces_sampler).map(str::to_ascii_lowercase);
    Ok(match name.as_deref() {
        None | Some("parentbased_always_on") => TraceSampler::ParentBasedAlwaysOn,
        Some("always_on") => TraceSampler::AlwaysOn,
        Some("always_off") => TraceSampler::AlwaysOff,
        Some("traceidratio") => TraceSampler::TraceIdRatio(ratio()?),
        Some("parentbased_always_off") => TraceSampler::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => TraceSampler::ParentBasedTraceIdRatio(ratio()?),
        Some(other) => {
            return Err(invalid(
                VAR,
                format!(
                    "{other:?} is not one of always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ),
            ));
        }
    })
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_iter(std::env::vars_os().filter_map(|(key, value)| {
            // Variables that are not UTF-8 cannot be ours; skip rather than fail on them.
            Some((key.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// Reads the given variables (tests, or an environment captured elsewhere).
    #[allow(clippy::should_implement_trait)] // Fallible, so not `FromIterator`.
    pub fn from_iter(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let raw: RawVars = envy::from_iter(vars).map_err(|e| Error::Config {
            var: "environment",
            message: e.to_string(),
        })?;
        Self::from_raw(&raw)
    }

    fn from_raw(raw: &RawVars) -> Result<Self> {
        let open_ports = parse_with("OTEL_EBPF_OPEN_PORT", &raw.otel_ebpf_open_port, |v| {
            PortSet::parse(v)
        })?;
        let auto_target_exe = parse_with(
            "OTEL_EBPF_AUTO_TARGET_EXE",
            &raw.otel_ebpf_auto_target_exe,
            |v| {
                Glob::new(v)
                    .map(|glob| glob.compile_matcher())
                    .map_err(|e| format!("{v:?} is not a glob: {e}"))
            },
        )?;
        let container_ports = parse_with(
            "OTEL_EBPF_K8S_CONTAINER_PORTS",
            &raw.otel_ebpf_k8s_container_ports,
            parse_container_ports,
        )?
        .unwrap_or_default();

        let mut resource_attributes = parse_with(
            "OTEL_RESOURCE_ATTRIBUTES",
            &raw.otel_resource_attributes,
            parse_key_values,
        )?
        .unwrap_or_default();
        let attribute_service_name = resource_attributes
            .iter()
            .rev()
            .find(|(key, _)| key == "service.name")
            .map(|(_, value)| value.clone());
        resource_attributes.retain(|(key, _)| key != "service.name");
        let service_name = set(&raw.otel_service_name)
            .map(str::to_owned)
            .or(attribute_service_name);

        let trace_printer = parse_with(
            "OTEL_EBPF_TRACE_PRINTER",
            &raw.otel_ebpf_trace_printer,
            |v| match v.to_ascii_lowercase().as_str() {
                "disabled" => Ok(TracePrinter::Disabled),
                "text" => Ok(TracePrinter::Text),
                "json" => Ok(TracePrinter::Json),
                _ => Err(format!("{v:?} is not disabled, text or json")),
            },
        )?
        .unwrap_or_default();
        let log_level = parse_with("OTEL_EBPF_LOG_LEVEL", &raw.otel_ebpf_log_level, |v| {
            let level = v.to_ascii_lowercase();
            match level.as_str() {
                "trace" | "debug" | "info" | "warn" | "error" => Ok(level),
                _ => Err(format!("{v:?} is not trace, debug, info, warn or error")),
            }
        })?
        .unwrap_or_else(|| "info".to_owned());
        let prometheus_port = parse_with(
            "OTEL_EBPF_PROMETHEUS_PORT",
            &raw.otel_ebpf_prometheus_port,
            parse_port,
        )?;
        let ring_buffer_bytes = parse_with(
            "OTEL_EBPF_BPF_RINGBUF_SIZE",
            &raw.otel_ebpf_bpf_ringbuf_size,
            |v| match parse_number::<u32>(v)? {
                n if n >= 4096 && n.is_power_of_two() => Ok(n),
                _ => Err(format!(
                    "{v:?} is not a power of two of at least 4096 bytes"
                )),
            },
        )?
        .unwrap_or(sidecar_bpf::DEFAULT_RING_BYTES);
        let capture_mode = parse_with(
            "OTEL_EBPF_CAPTURE_MODE",
            &raw.otel_ebpf_capture_mode,
            CaptureMode::parse,
        )?
        .unwrap_or_default();

        let traces = resolve_signal(
            raw,
            SignalVars {
                name: "traces",
                path: "v1/traces",
                endpoint_var: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                endpoint: &raw.otel_exporter_otlp_traces_endpoint,
                protocol_var: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                protocol: &raw.otel_exporter_otlp_traces_protocol,
                headers_var: "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                headers: &raw.otel_exporter_otlp_traces_headers,
                timeout_var: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                timeout: &raw.otel_exporter_otlp_traces_timeout,
                compression_var: "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                compression: &raw.otel_exporter_otlp_traces_compression,
                certificate_var: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                certificate: &raw.otel_exporter_otlp_traces_certificate,
            },
        )?;
        let metrics = resolve_signal(
            raw,
            SignalVars {
                name: "metrics",
                path: "v1/metrics",
                endpoint_var: "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                endpoint: &raw.otel_exporter_otlp_metrics_endpoint,
                protocol_var: "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                protocol: &raw.otel_exporter_otlp_metrics_protocol,
                headers_var: "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
                headers: &raw.otel_exporter_otlp_metrics_headers,
                timeout_var: "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
                timeout: &raw.otel_exporter_otlp_metrics_timeout,
                compression_var: "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
                compression: &raw.otel_exporter_otlp_metrics_compression,
                certificate_var: "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
                certificate: &raw.otel_exporter_otlp_metrics_certificate,
            },
        )?;
        let sampler = parse_sampler(raw)?;
        let metric_export_interval = parse_with(
            "OTEL_METRIC_EXPORT_INTERVAL",
            &raw.otel_metric_export_interval,
            parse_millis,
        )?
        .unwrap_or(DEFAULT_METRIC_INTERVAL);
        let metric_temporality = parse_with(
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            &raw.otel_exporter_otlp_metrics_temporality_preference,
            |v| match v.to_ascii_lowercase().as_str() {
                "cumulative" => Ok(TemporalityPreference::Cumulative),
                "delta" => Ok(TemporalityPreference::Delta),
                "lowmemory" => Ok(TemporalityPreference::LowMemory),
                _ => Err(format!("{v:?} is not cumulative, delta or lowmemory")),
            },
        )?
        .unwrap_or_default();
        let metric_cardinality_limit = parse_with(
            "OTEL_EBPF_METRICS_CARDINALITY_LIMIT",
            &raw.otel_ebpf_metrics_cardinality_limit,
            parse_positive,
        )?
        .unwrap_or(DEFAULT_CARDINALITY_LIMIT);
        let batch = BatchConfig {
            max_queue_size: parse_with(
                "OTEL_BSP_MAX_QUEUE_SIZE",
                &raw.otel_bsp_max_queue_size,
                parse_positive,
            )?
            .unwrap_or(DEFAULT_MAX_QUEUE_SIZE),
            max_export_batch_size: parse_with(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                &raw.otel_bsp_max_export_batch_size,
                parse_positive,
            )?
            .unwrap_or(DEFAULT_MAX_EXPORT_BATCH_SIZE),
            schedule_delay: parse_with(
                "OTEL_BSP_SCHEDULE_DELAY",
                &raw.otel_bsp_schedule_delay,
                parse_millis,
            )?
            .unwrap_or(DEFAULT_SCHEDULE_DELAY),
        };
        let patterns = match set(&raw.otel_ebpf_routes_patterns) {
            Some(list) => RouteMatcher::parse_patterns("OTEL_EBPF_ROUTES_PATTERNS", list)?,
            None => Vec::new(),
        };
        let unmatched = parse_with(
            "OTEL_EBPF_ROUTES_UNMATCHED",
            &raw.otel_ebpf_routes_unmatched,
            |v| {
                Unmatched::parse(v)
                    .ok_or_else(|| format!("{v:?} is not heuristic, path, wildcard or unset"))
            },
        )?
        .unwrap_or_default();
        let include_url_query = parse_with(
            "OTEL_EBPF_HTTP_INCLUDE_QUERY",
            &raw.otel_ebpf_http_include_query,
            parse_bool,
        )?
        .unwrap_or(false);
        let include_db_query_text = parse_with(
            "OTEL_EBPF_DB_INCLUDE_QUERY_TEXT",
            &raw.otel_ebpf_db_include_query_text,
            parse_bool,
        )?
        .unwrap_or(false);
        let tls_capture = parse_with(
            "OTEL_EBPF_TLS_CAPTURE",
            &raw.otel_ebpf_tls_capture,
            parse_bool,
        )?
        .unwrap_or(true);
        let tls_uprobes = parse_with(
            "OTEL_EBPF_TLS_UPROBES",
            &raw.otel_ebpf_tls_uprobes,
            TlsUprobes::parse,
        )?
        .unwrap_or_default();

        Ok(Self {
            open_ports,
            auto_target_exe,
            container_ports,
            service_name,
            resource_attributes,
            trace_printer,
            log_level,
            prometheus_port,
            ring_buffer_bytes,
            capture_mode,
            traces,
            metrics,
            sampler,
            metric_export_interval,
            metric_temporality,
            metric_cardinality_limit,
            batch,
            routes: RouteMatcher::new(patterns, unmatched),
            include_url_query,
            include_db_query_text,
            tls_capture,
            tls_uprobes,
        })
    }
}

/// The container a listening port belongs to, from `OTEL_EBPF_K8S_CONTAINER_PORTS`.
pub fn container_for_port(container_ports: &[(String, PortSet)], port: u16) -> Option<&str> {
    container_ports
        .iter()
        .find(|(_, ports)| ports.contains(port))
        .map(|(name, _)| name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config> {
        Config::from_iter(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    fn loaded(vars: &[(&str, &str)]) -> Config {
        match load(vars) {
            Ok(config) => config,
            Err(e) => panic!("{vars:?}: {e}"),
        }
    }

    #[test]
    fn defaults() {
        let config = loaded(&[("PATH", "/bin"), ("UNRELATED", "x")]);
        assert_eq!(config.open_ports, None);
        assert!(config.auto_target_exe.is_none());
        assert!(config.container_ports.is_empty());
        assert_eq!(config.service_name, None);
        assert!(config.resource_attributes.is_empty());
        assert_eq!(config.trace_printer, TracePrinter::Disabled);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.prometheus_port, None);
        assert_eq!(config.ring_buffer_bytes, sidecar_bpf::DEFAULT_RING_BYTES);
        assert_eq!(config.capture_mode, CaptureMode::Auto);
        assert_eq!(config.traces, None);
        assert_eq!(config.metrics, None);
        assert_eq!(config.sampler, TraceSampler::ParentBasedAlwaysOn);
        assert_eq!(config.metric_export_interval, Duration::from_secs(60));
        assert_eq!(config.metric_temporality, TemporalityPreference::Cumulative);
        assert_eq!(config.metric_cardinality_limit, 2000);
        assert_eq!(
            config.batch,
            BatchConfig {
                max_queue_size: 2048,
                max_export_batch_size: 512,
                schedule_delay: Duration::from_secs(1)
            }
        );
        assert_eq!(config.routes, RouteMatcher::default());
        assert!(!config.include_url_query);
        assert!(!config.include_db_query_text);
        assert!(config.tls_capture);
        assert_eq!(config.tls_uprobes, TlsUprobes::Auto);
    }

    #[test]
    fn empty_values_are_unset() {
        let config = loaded(&[
            ("OTEL_EBPF_OPEN_PORT", ""),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "  "),
            ("OTEL_SERVICE_NAME", ""),
        ]);
        assert_eq!(config.open_ports, None);
        assert_eq!(config.traces, None);
        assert_eq!(config.service_name, None);
    }

    #[test]
    fn port_sets() {
        let set = PortSet::parse(" 80, 443 ,8000-8999,8500-9100").unwrap_or_else(|e| panic!("{e}"));
        for (port, want) in [
            (80, true),
            (81, false),
            (443, true),
            (7999, false),
            (8000, true),
            (9100, true),
            (9101, false),
        ] {
            assert_eq!(set.contains(port), want, "{port}");
        }
        assert_eq!(set.ranges, vec![(80, 80), (443, 443), (8000, 9100)]);
        for bad in ["", "0", "65536", "80-", "9-8", "http", "1-2-3", ","] {
            assert!(PortSet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn selection_and_local_variables() {
        let config = loaded(&[
            ("OTEL_EBPF_OPEN_PORT", "8080,9000-9010"),
            ("OTEL_EBPF_AUTO_TARGET_EXE", "*/python3*"),
            (
                "OTEL_EBPF_K8S_CONTAINER_PORTS",
                "app=8080,8443; metrics=9090;",
            ),
            ("OTEL_EBPF_TRACE_PRINTER", "JSON"),
            ("OTEL_EBPF_LOG_LEVEL", "Debug"),
            ("OTEL_EBPF_PROMETHEUS_PORT", "9400"),
            ("OTEL_EBPF_BPF_RINGBUF_SIZE", "65536"),
            ("OTEL_EBPF_ROUTES_PATTERNS", "/users/{id},/items/:id"),
            ("OTEL_EBPF_ROUTES_UNMATCHED", "path"),
            ("OTEL_EBPF_HTTP_INCLUDE_QUERY", "true"),
            ("OTEL_EBPF_DB_INCLUDE_QUERY_TEXT", "true"),
            ("OTEL_EBPF_TLS_CAPTURE", "false"),
        ]);
        assert!(config.open_ports.as_ref().is_some_and(|p| p.contains(9005)));
        assert!(
            config
                .auto_target_exe
                .as_ref()
                .is_some_and(|g| g.is_match("/usr/bin/python3.12"))
        );
        assert_eq!(
            container_for_port(&config.container_ports, 8443),
            Some("app")
        );
        assert_eq!(
            container_for_port(&config.container_ports, 9090),
            Some("metrics")
        );
        assert_eq!(container_for_port(&config.container_ports, 1), None);
        assert_eq!(config.trace_printer, TracePrinter::Json);
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.prometheus_port, Some(9400));
        assert_eq!(config.ring_buffer_bytes, 65536);
        assert_eq!(
            config.routes.route("/users/7", &mut String::new()),
            Some("/users/{id}")
        );
        assert_eq!(
            config.routes.route("/other/7", &mut String::new()),
            Some("/other/7")
        );
        assert!(config.include_url_query);
        assert!(config.include_db_query_text);
        assert!(!config.tls_capture);
    }

    #[test]
    fn capture_modes() {
        for (value, want) in [
            ("auto", CaptureMode::Auto),
            ("POD", CaptureMode::Pod),
            (" tracepoints ", CaptureMode::Tracepoints),
            ("sys_exit", CaptureMode::SysExit),
        ] {
            let mode = loaded(&[("OTEL_EBPF_CAPTURE_MODE", value)]).capture_mode;
            assert_eq!(mode, want, "{value:?}");
            assert_eq!(CaptureMode::parse(mode.as_str()), Ok(mode));
        }
        for bad in ["cgroup", "sys-exit", "pods"] {
            match load(&[("OTEL_EBPF_CAPTURE_MODE", bad)]) {
                Ok(_) => panic!("{bad:?} was accepted"),
                Err(e) => assert!(e.to_string().contains("OTEL_EBPF_CAPTURE_MODE"), "{e}"),
            }
        }
    }

    #[test]
    fn tls_uprobe_kinds() {
        for (value, want) in [
            ("auto", TlsUprobes::Auto),
            ("MULTI", TlsUprobes::Multi),
            (" perf ", TlsUprobes::Perf),
            ("", TlsUprobes::Auto),
        ] {
            let kind = loaded(&[("OTEL_EBPF_TLS_UPROBES", value)]).tls_uprobes;
            assert_eq!(kind, want, "{value:?}");
            assert_eq!(TlsUprobes::parse(kind.as_str()), Ok(kind));
        }
        for bad in ["uprobe_multi", "perf-event", "kprobe", "off"] {
            match load(&[("OTEL_EBPF_TLS_UPROBES", bad)]) {
                Ok(_) => panic!("{bad:?} was accepted"),
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains("OTEL_EBPF_TLS_UPROBES"), "{message}");
                    assert!(message.contains("auto, multi or perf"), "{message}");
                }
            }
        }
    }

    #[test]
    fn resource_attributes_and_service_name() {
        let config = loaded(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.namespace.name=shop, k8s.pod.name=web-1,service.name=from%20attrs,note=a%2Cb",
        )]);
        assert_eq!(config.service_name.as_deref(), Some("from attrs"));
        assert_eq!(
            config.resource_attributes,
            vec![
                ("k8s.namespace.name".to_owned(), "shop".to_owned()),
                ("k8s.pod.name".to_owned(), "web-1".to_owned()),
                ("note".to_owned(), "a,b".to_owned()),
            ]
        );
        let config = loaded(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=attrs"),
            ("OTEL_SERVICE_NAME", "explicit"),
        ]);
        assert_eq!(config.service_name.as_deref(), Some("explicit"));
    }

    #[test]
    fn otlp_endpoint_resolution() {
        // (variables, traces endpoint and protocol, metrics endpoint and protocol)
        type Want = Option<(&'static str, Protocol)>;
        type Vars = &'static [(&'static str, &'static str)];
        let table: [(Vars, Want, Want); 7] = [
            (&[], None, None),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")],
                Some(("http://collector:4317", Protocol::Grpc)),
                Some(("http://collector:4317", Protocol::Grpc)),
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")],
                Some(("http://collector:4318/v1/traces", Protocol::HttpProtobuf)),
                Some(("http://collector:4318/v1/metrics", Protocol::HttpProtobuf)),
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector/otlp")],
                Some(("http://collector/otlp/v1/traces", Protocol::HttpProtobuf)),
                Some(("http://collector/otlp/v1/metrics", Protocol::HttpProtobuf)),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ],
                Some(("http://collector:4317/v1/traces", Protocol::HttpProtobuf)),
                Some(("http://collector:4317/v1/metrics", Protocol::HttpProtobuf)),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9999/custom"),
                    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
                ],
                Some(("http://t:9999/custom", Protocol::HttpProtobuf)),
                Some(("http://m:4317", Protocol::Grpc)),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
                    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://m/x"),
                ],
                Some(("http://c:4318", Protocol::Grpc)),
                Some(("https://m/x", Protocol::HttpProtobuf)),
            ),
        ];
        for (vars, traces, metrics) in table {
            let config = loaded(vars);
            let got = |s: &Option<OtlpSignal>| s.as_ref().map(|s| (s.endpoint.clone(), s.protocol));
            let want = |w: Want| w.map(|(e, p)| (e.to_owned(), p));
            assert_eq!(got(&config.traces), want(traces), "traces {vars:?}");
            assert_eq!(got(&config.metrics), want(metrics), "metrics {vars:?}");
        }
    }

    #[test]
    fn otlp_headers_and_timeouts() {
        let config = loaded(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20abc,x-a=1",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-A=2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "700"),
        ]);
        let traces = config.traces.unwrap_or_else(|| panic!("traces"));
        let metrics = config.metrics.unwrap_or_else(|| panic!("metrics"));
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            traces.headers,
            pairs(&[("Authorization", "Bearer abc"), ("X-A", "2")])
        );
        assert_eq!(
            metrics.headers,
            pairs(&[("Authorization", "Bearer abc"), ("x-a", "1")])
        );
        assert_eq!(traces.timeout, Duration::from_millis(2500));
        assert_eq!(metrics.timeout, Duration::from_millis(700));
    }

    #[test]
    fn otlp_compression_certificates_and_temporality() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (common, traces) = (dir.path().join("common.pem"), dir.path().join("traces.pem"));
        std::fs::write(&common, "-----BEGIN CERTIFICATE-----\ncommon\n")?;
        std::fs::write(&traces, "-----BEGIN CERTIFICATE-----\ntraces\n")?;
        let (common, traces) = (common.to_string_lossy(), traces.to_string_lossy());
        let config = loaded(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &common),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &traces),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
            ("OTEL_EBPF_METRICS_CARDINALITY_LIMIT", "10"),
        ]);
        let traces = config.traces.unwrap_or_else(|| panic!("traces"));
        let metrics = config.metrics.unwrap_or_else(|| panic!("metrics"));
        // gRPC over TLS: port 4317 picks gRPC, https asks for TLS.
        assert_eq!(
            (traces.protocol, metrics.protocol),
            (Protocol::Grpc, Protocol::Grpc)
        );
        assert_eq!(traces.compression, Compression::Gzip);
        assert_eq!(metrics.compression, Compression::None);
        let text = |pem: &Option<Vec<u8>>| {
            String::from_utf8_lossy(pem.as_deref().unwrap_or_default()).into_owned()
        };
        assert!(text(&traces.certificate).contains("traces"));
        assert!(text(&metrics.certificate).contains("common"));
        assert_eq!(config.metric_temporality, TemporalityPreference::Delta);
        assert_eq!(config.metric_cardinality_limit, 10);
        let plain = loaded(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        let traces = plain.traces.unwrap_or_else(|| panic!("traces"));
        assert_eq!(
            (traces.compression, traces.certificate),
            (Compression::None, None)
        );
        let low = loaded(&[(
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            "lowmemory",
        )]);
        assert_eq!(low.metric_temporality, TemporalityPreference::LowMemory);
        Ok(())
    }

    #[test]
    fn samplers() {
        let table: [(&[(&str, &str)], TraceSampler); 7] = [
            (&[], TraceSampler::ParentBasedAlwaysOn),
            (
                &[("OTEL_TRACES_SAMPLER", "always_on")],
                TraceSampler::AlwaysOn,
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "always_off")],
                TraceSampler::AlwaysOff,
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "traceidratio")],
                TraceSampler::TraceIdRatio(1.0),
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ],
                TraceSampler::TraceIdRatio(0.25),
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "parentbased_always_off")],
                TraceSampler::ParentBasedAlwaysOff,
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "PARENTBASED_TRACEIDRATIO"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0"),
                ],
                TraceSampler::ParentBasedTraceIdRatio(0.0),
            ),
        ];
        for (vars, want) in table {
            assert_eq!(loaded(vars).sampler, want, "{vars:?}");
        }
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let table: [(&str, &str); 33] = [
            ("OTEL_EBPF_OPEN_PORT", "80,http"),
            ("OTEL_EBPF_TLS_UPROBES", "kprobe"),
            ("OTEL_EBPF_AUTO_TARGET_EXE", "/usr/[bin"),
            ("OTEL_EBPF_K8S_CONTAINER_PORTS", "app"),
            ("OTEL_EBPF_K8S_CONTAINER_PORTS", "=80"),
            ("OTEL_EBPF_K8S_CONTAINER_PORTS", "app=99999"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name"),
            ("OTEL_RESOURCE_ATTRIBUTES", "=x"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=%FF"),
            ("OTEL_EBPF_TRACE_PRINTER", "yaml"),
            ("OTEL_EBPF_LOG_LEVEL", "loud"),
            ("OTEL_EBPF_PROMETHEUS_PORT", "0"),
            ("OTEL_EBPF_PROMETHEUS_PORT", "70000"),
            ("OTEL_EBPF_BPF_RINGBUF_SIZE", "5000"),
            ("OTEL_EBPF_BPF_RINGBUF_SIZE", "1024"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "sometimes",
            ),
            ("OTEL_EBPF_METRICS_CARDINALITY_LIMIT", "0"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "not a url"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1s"),
            ("OTEL_EBPF_ROUTES_PATTERNS", "users/{id}"),
            ("OTEL_EBPF_ROUTES_UNMATCHED", "all"),
            ("OTEL_EBPF_HTTP_INCLUDE_QUERY", "maybe"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "thrift"),
        ];
        for (var, value) in table {
            let mut vars = vec![(var, value)];
            // Protocol variables only matter once there is an endpoint.
            if var.contains("PROTOCOL") {
                vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"));
            }
            match load(&vars) {
                Ok(_) => panic!("{var}={value} was accepted"),
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains(var), "{var}={value}: {message}");
                }
            }
        }
        // These need an endpoint to be checked at all.
        let table: [(&str, &str); 9] = [
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "br"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
                "/proc/self/status",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "=v"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ];
        for (var, value) in table {
            let vars = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                (var, value),
            ];
            match load(&vars) {
                Ok(_) => panic!("{var}={value} was accepted"),
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains(var), "{var}={value}: {message}");
                }
            }
        }
    }
}
