//! Configuration from `OBI_WEBHOOK_*` environment variables.
//!
//! Every value is read as text (via envy) and validated here, so an error always names the full
//! variable. Empty values count as unset. Unknown `OBI_WEBHOOK_*` variables are ignored on
//! purpose: Kubernetes adds `OBI_WEBHOOK_SERVICE_HOST`, `OBI_WEBHOOK_PORT`, ... to pods when a
//! Service is named `obi-webhook`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::error::{Error, Result};
use crate::settings::{InjectionDefaults, SidecarResources, check_endpoint, check_image};
use crate::tls::TlsFiles;

/// Prefix of every variable.
pub const PREFIX: &str = "OBI_WEBHOOK_";

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Limits protecting the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Simultaneous TLS connections; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Requests decided at the same time; further requests queue.
    pub max_concurrent_requests: usize,
    /// Time for a client to finish the TLS handshake and, on HTTP/1.1, to send request headers.
    pub header_read_timeout: Duration,
    /// Time to answer one request, body included (HTTP 408 after).
    pub request_timeout: Duration,
    /// Time given to in-flight requests after SIGTERM.
    pub shutdown_timeout: Duration,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub tls: TlsFiles,
    pub cert_reload_interval: Duration,
    pub injection: InjectionDefaults,
    pub limits: Limits,
    /// Async worker threads. One by default: admission work is small, and waking a parked second
    /// worker (a cross-CPU wake-up, costly in VMs) costs more latency than it saves; large bodies
    /// are decoded on the blocking pool anyway.
    pub worker_threads: usize,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// The variables as text, lower-cased without the prefix (envy's mapping).
#[derive(Debug, Default, Deserialize)]
struct Raw {
    listen_addr: Option<String>,
    health_addr: Option<String>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    cert_reload_interval_ms: Option<String>,
    sidecar_image: Option<String>,
    sidecar_image_pull_policy: Option<String>,
    otlp_endpoint: Option<String>,
    cluster_name: Option<String>,
    sidecar_cpu_request: Option<String>,
    sidecar_memory_request: Option<String>,
    sidecar_memory_limit: Option<String>,
    max_connections: Option<String>,
    max_concurrent_requests: Option<String>,
    header_read_timeout_ms: Option<String>,
    request_timeout_ms: Option<String>,
    shutdown_timeout_ms: Option<String>,
    worker_threads: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads `vars` (name, value) as if they were the environment.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let raw: Raw = envy::prefixed(PREFIX)
            .from_iter(vars)
            .map_err(|error| invalid("*", error.to_string()))?;
        Self::validate(raw)
    }

    fn validate(raw: Raw) -> Result<Self> {
        let injection = InjectionDefaults {
            image: text(
                "SIDECAR_IMAGE",
                raw.sidecar_image,
                "obi-sidecar:latest",
                check_image,
            )?,
            image_pull_policy: optional(
                "SIDECAR_IMAGE_PULL_POLICY",
                raw.sidecar_image_pull_policy,
                |value| match value {
                    "Always" | "IfNotPresent" | "Never" => Ok(()),
                    _ => Err("expected Always, IfNotPresent or Never".to_owned()),
                },
            )?,
            otlp_endpoint: optional("OTLP_ENDPOINT", raw.otlp_endpoint, check_endpoint)?,
            cluster_name: optional("CLUSTER_NAME", raw.cluster_name, check_cluster_name)?,
            resources: SidecarResources {
                cpu_request: parsed("SIDECAR_CPU_REQUEST", raw.sidecar_cpu_request, "10m")?,
                memory_request: parsed(
                    "SIDECAR_MEMORY_REQUEST",
                    raw.sidecar_memory_request,
                    "32Mi",
                )?,
                memory_limit: parsed("SIDECAR_MEMORY_LIMIT", raw.sidecar_memory_limit, "64Mi")?,
            },
        };
        let resources = &injection.resources;
        if resources.memory_request.nanos() > resources.memory_limit.nanos() {
            return Err(invalid(
                "SIDECAR_MEMORY_REQUEST",
                format!(
                    "{} exceeds {PREFIX}SIDECAR_MEMORY_LIMIT {}",
                    resources.memory_request, resources.memory_limit
                ),
            ));
        }
        let log_format = match set(raw.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("{other:?}: expected text or json"),
                ));
            }
        };
        let log_level = text("LOG_LEVEL", raw.log_level, "info", |value| {
            EnvFilter::try_new(value)
                .map(|_| ())
                .map_err(|error| error.to_string())
        })?;
        Ok(Self {
            listen_addr: parsed("LISTEN_ADDR", raw.listen_addr, "0.0.0.0:8443")?,
            health_addr: parsed("HEALTH_ADDR", raw.health_addr, "0.0.0.0:8080")?,
            tls: TlsFiles {
                cert: PathBuf::from(text(
                    "TLS_CERT_FILE",
                    raw.tls_cert_file,
                    "/etc/obi-webhook/tls/tls.crt",
                    no_check,
                )?),
                key: PathBuf::from(text(
                    "TLS_KEY_FILE",
                    raw.tls_key_file,
                    "/etc/obi-webhook/tls/tls.key",
                    no_check,
                )?),
            },
            cert_reload_interval: millis(
                "CERT_RELOAD_INTERVAL_MS",
                raw.cert_reload_interval_ms,
                1_000,
            )?,
            injection,
            limits: Limits {
                max_connections: count("MAX_CONNECTIONS", raw.max_connections, 1_024)?,
                max_concurrent_requests: count(
                    "MAX_CONCURRENT_REQUESTS",
                    raw.max_concurrent_requests,
                    64,
                )?,
                header_read_timeout: millis(
                    "HEADER_READ_TIMEOUT_MS",
                    raw.header_read_timeout_ms,
                    5_000,
                )?,
                request_timeout: millis("REQUEST_TIMEOUT_MS", raw.request_timeout_ms, 10_000)?,
                shutdown_timeout: millis("SHUTDOWN_TIMEOUT_MS", raw.shutdown_timeout_ms, 20_000)?,
            },
            worker_threads: count("WORKER_THREADS", raw.worker_threads, 1)?,
            log_format,
            log_level,
        })
    }
}

fn invalid(name: &str, reason: String) -> Error {
    Error::Config {
        variable: format!("{PREFIX}{}", name),
        reason,
    }
}

/// `None` for unset or empty.
fn set(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

fn no_check(_: &str) -> Result<(), String> {
    Ok(())
}

fn optional(
    name: &str,
    value: Option<String>,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Result<Option<String>> {
    match set(value) {
        None => Ok(None),
        Some(value) => match check(&value) {
            Ok(()) => Ok(Some(value)),
            Err(reason) => Err(invalid(name, format!("{value:?}: {reason}"))),
        },
    }
}

fn text(
    name: &str,
    value: Option<String>,
    default: &str,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Result<String> {
    Ok(optional(name, value, check)?.unwrap_or_else(|| default.to_owned()))
}

fn parsed<T: FromStr<Err: std::fmt::Display>>(
    name: &str,
    value: Option<String>,
    default: &str,
) -> Result<T> {
    let value = set(value).unwrap_or_else(|| default.to_owned());
    value
        .parse()
        .map_err(|error| invalid(name, format!("{value:?}: {error}")))
}

/// A positive integer.
fn count(name: &str, value: Option<String>, default: usize) -> Result<usize> {
    let value = set(value).unwrap_or_else(|| default.to_string());
    match value.parse::<usize>() {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(invalid(
            name,
            format!("{value:?}: expected a positive integer"),
        )),
    }
}

fn millis(name: &str, value: Option<String>, default: u64) -> Result<Duration> {
    let value = set(value).unwrap_or_else(|| default.to_string());
    match value.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(
            name,
            format!("{value:?}: expected a positive number of milliseconds"),
        )),
    }
}

/// Letters, digits, `.`, `_` and `-`: the name goes into `OTEL_RESOURCE_ATTRIBUTES` unescaped.
fn check_cluster_name(value: &str) -> Result<(), String> {
    let valid = value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if valid {
        Ok(())
    } else {
        Err("expected up to 253 letters, digits, '.', '_' or '-'".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        Config::from_vars(
            vars.iter()
                .map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_owned())),
        )
    }

    fn error(vars: &[(&str, &str)]) -> String {
        config(vars).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let config = config(&[]).unwrap();
        assert_eq!(config.listen_addr, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(config.health_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            config.tls.cert,
            PathBuf::from("/etc/obi-webhook/tls/tls.crt")
        );
        assert_eq!(
            config.tls.key,
            PathBuf::from("/etc/obi-webhook/tls/tls.key")
        );
        assert_eq!(config.injection.image, "obi-sidecar:latest");
        assert_eq!(config.injection.image_pull_policy, None);
        assert_eq!(config.injection.otlp_endpoint, None);
        assert_eq!(config.injection.cluster_name, None);
        assert_eq!(config.injection.resources.cpu_request.as_str(), "10m");
        assert_eq!(config.injection.resources.memory_request.as_str(), "32Mi");
        assert_eq!(config.injection.resources.memory_limit.as_str(), "64Mi");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.cert_reload_interval, Duration::from_secs(1));
        assert_eq!(config.worker_threads, 1);
    }

    #[test]
    fn reads_every_variable_and_ignores_service_links() {
        let config = config(&[
            ("LISTEN_ADDR", "127.0.0.1:9443"),
            ("HEALTH_ADDR", "[::1]:9090"),
            ("TLS_CERT_FILE", "/tmp/c"),
            ("TLS_KEY_FILE", "/tmp/k"),
            ("SIDECAR_IMAGE", "registry.local/obi:1"),
            ("SIDECAR_IMAGE_PULL_POLICY", "IfNotPresent"),
            ("OTLP_ENDPOINT", "http://collector:4318"),
            ("CLUSTER_NAME", "kind-obi"),
            ("SIDECAR_CPU_REQUEST", "20m"),
            ("SIDECAR_MEMORY_REQUEST", "40Mi"),
            ("SIDECAR_MEMORY_LIMIT", "80Mi"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "debug,hyper=info"),
            ("CERT_RELOAD_INTERVAL_MS", "250"),
            ("MAX_CONNECTIONS", "10"),
            ("MAX_CONCURRENT_REQUESTS", "3"),
            ("HEADER_READ_TIMEOUT_MS", "100"),
            ("REQUEST_TIMEOUT_MS", "200"),
            ("SHUTDOWN_TIMEOUT_MS", "300"),
            ("WORKER_THREADS", "4"),
            ("SERVICE_HOST", "10.0.0.1"),
            ("PORT_443_TCP", "tcp://10.0.0.1:443"),
            ("OTLP_ENDPOINT_UNUSED", ""),
        ])
        .unwrap();
        assert_eq!(config.listen_addr, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(config.health_addr, "[::1]:9090".parse().unwrap());
        assert_eq!(config.tls.cert, PathBuf::from("/tmp/c"));
        assert_eq!(
            config.injection.image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(
            config.injection.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(config.injection.cluster_name.as_deref(), Some("kind-obi"));
        assert_eq!(config.injection.resources.memory_limit.as_str(), "80Mi");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.cert_reload_interval, Duration::from_millis(250));
        assert_eq!(config.worker_threads, 4);
        assert_eq!(
            config.limits,
            Limits {
                max_connections: 10,
                max_concurrent_requests: 3,
                header_read_timeout: Duration::from_millis(100),
                request_timeout: Duration::from_millis(200),
                shutdown_timeout: Duration::from_millis(300),
            }
        );
    }

    #[test]
    fn empty_means_default() {
        let config = config(&[("SIDECAR_IMAGE", ""), ("OTLP_ENDPOINT", "")]).unwrap();
        assert_eq!(config.injection.image, "obi-sidecar:latest");
        assert_eq!(config.injection.otlp_endpoint, None);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "LISTEN_ADDR",
                "8443",
                "OBI_WEBHOOK_LISTEN_ADDR: \"8443\": invalid socket address syntax",
            ),
            (
                "HEALTH_ADDR",
                "localhost:x",
                "OBI_WEBHOOK_HEALTH_ADDR: \"localhost:x\"",
            ),
            (
                "SIDECAR_IMAGE",
                "a b",
                "OBI_WEBHOOK_SIDECAR_IMAGE: \"a b\": not an image reference",
            ),
            (
                "SIDECAR_IMAGE_PULL_POLICY",
                "always",
                "OBI_WEBHOOK_SIDECAR_IMAGE_PULL_POLICY: \"always\"",
            ),
            (
                "OTLP_ENDPOINT",
                "collector:4318",
                "OBI_WEBHOOK_OTLP_ENDPOINT: \"collector:4318\"",
            ),
            ("CLUSTER_NAME", "a,b", "OBI_WEBHOOK_CLUSTER_NAME: \"a,b\""),
            (
                "SIDECAR_CPU_REQUEST",
                "ten",
                "OBI_WEBHOOK_SIDECAR_CPU_REQUEST: \"ten\": not a Kubernetes quantity",
            ),
            (
                "SIDECAR_MEMORY_REQUEST",
                "1Gi",
                "OBI_WEBHOOK_SIDECAR_MEMORY_REQUEST: 1Gi exceeds OBI_WEBHOOK_SIDECAR_MEMORY_LIMIT 64Mi",
            ),
            (
                "SIDECAR_MEMORY_LIMIT",
                "-1",
                "OBI_WEBHOOK_SIDECAR_MEMORY_LIMIT: \"-1\": negative",
            ),
            (
                "LOG_FORMAT",
                "xml",
                "OBI_WEBHOOK_LOG_FORMAT: \"xml\": expected text or json",
            ),
            ("LOG_LEVEL", "info,[", "OBI_WEBHOOK_LOG_LEVEL: \"info,[\""),
            (
                "MAX_CONNECTIONS",
                "0",
                "OBI_WEBHOOK_MAX_CONNECTIONS: \"0\": expected a positive integer",
            ),
            (
                "REQUEST_TIMEOUT_MS",
                "1s",
                "OBI_WEBHOOK_REQUEST_TIMEOUT_MS: \"1s\": expected a positive number",
            ),
        ];
        for (name, value, expected) in cases {
            let message = error(&[(name, value)]);
            assert!(message.starts_with(expected), "{name}={value}: {message}");
        }
    }
}
