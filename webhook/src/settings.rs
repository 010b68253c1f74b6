//! What to inject: the webhook's defaults overridden by `obi-injection/*` annotations.
//!
//! Annotations are read from the pod template first, then from the Deployment's own metadata.
//! An invalid value never blocks a Deployment: it is replaced by the default and reported as an
//! admission warning naming the annotation.

use std::collections::BTreeMap;

use crate::ports::PortSpec;
use crate::quantity::Quantity;

/// The prefix shared by every annotation the webhook reads or writes.
pub const PREFIX: &str = "obi-injection/";
/// `"false"` opts the workload out (and removes an earlier injection).
pub const INJECT: &str = "obi-injection/inject";
/// `"true"` injects the sidecar as a native sidecar (init container with `restartPolicy: Always`).
pub const NATIVE_SIDECAR: &str = "obi-injection/native-sidecar";
/// Sidecar image.
pub const IMAGE: &str = "obi-injection/image";
/// Ports to instrument (`80,8000-8099`), instead of the app containers' TCP ports.
pub const OPEN_PORT: &str = "obi-injection/open-port";
/// `OTEL_SERVICE_NAME`.
pub const SERVICE_NAME: &str = "obi-injection/service-name";
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub const OTLP_ENDPOINT: &str = "obi-injection/otlp-endpoint";
/// Sidecar CPU request.
pub const CPU_REQUEST: &str = "obi-injection/cpu-request";
/// Sidecar memory request.
pub const MEMORY_REQUEST: &str = "obi-injection/memory-request";
/// Sidecar memory limit.
pub const MEMORY_LIMIT: &str = "obi-injection/memory-limit";
/// `obi-injection/env.OTEL_FOO: value` sets the sidecar's `OTEL_FOO`.
pub const ENV_PREFIX: &str = "obi-injection/env.";
/// Written by the webhook on the pod template: what it injected (see [`crate::status`]).
pub const STATUS: &str = "obi-injection/status";
/// `auto`, `pod`, `tracepoints` or `sys_exit`: the sidecar's `OTEL_EBPF_CAPTURE_MODE`, and the
/// capabilities that mode needs.
pub const CAPTURE_MODE: &str = "obi-injection/capture-mode";
/// The sidecar variable [`CAPTURE_MODE`] sets; an `env.` annotation may not set it, since the
/// capabilities must follow the mode.
const CAPTURE_MODE_VARIABLE: &str = "OTEL_EBPF_CAPTURE_MODE";

const KNOWN: [&str; 11] = [
    INJECT,
    CAPTURE_MODE,
    NATIVE_SIDECAR,
    IMAGE,
    OPEN_PORT,
    SERVICE_NAME,
    OTLP_ENDPOINT,
    CPU_REQUEST,
    MEMORY_REQUEST,
    MEMORY_LIMIT,
    STATUS,
];

/// Longest annotation value quoted back in a warning; warnings should stay short.
const QUOTE_LIMIT: usize = 40;

/// The sidecar's resource requests and memory limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarResources {
    pub cpu_request: Quantity,
    pub memory_request: Quantity,
    pub memory_limit: Quantity,
}

/// How the sidecar captures (its `OTEL_EBPF_CAPTURE_MODE`), which decides its capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureMode {
    /// The pod-scoped hooks where the node allows them, else the tracepoints.
    Auto,
    /// Only the pod-scoped hooks (programs on the app containers' cgroups).
    Pod,
    /// The socket tracepoints (`sys_exit` on kernels before 6.3).
    Tracepoints,
    /// Only `sys_exit`.
    SysExit,
}

impl CaptureMode {
    fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "pod" => Ok(Self::Pod),
            "tracepoints" => Ok(Self::Tracepoints),
            "sys_exit" => Ok(Self::SysExit),
            _ => Err("expected auto, pod, tracepoints or sys_exit".to_owned()),
        }
    }

    /// The value of the sidecar's `OTEL_EBPF_CAPTURE_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Pod => "pod",
            Self::Tracepoints => "tracepoints",
            Self::SysExit => "sys_exit",
        }
    }

    /// Whether the mode may attach to cgroups (CAP_NET_ADMIN).
    pub fn attaches_to_cgroups(self) -> bool {
        matches!(self, Self::Auto | Self::Pod)
    }
}

/// The webhook-wide defaults, from configuration.
#[derive(Clone, Debug)]
pub struct InjectionDefaults {
    pub image: String,
    /// `imagePullPolicy` of the sidecar; `None` leaves the Kubernetes default.
    pub image_pull_policy: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub cluster_name: Option<String>,
    pub resources: SidecarResources,
}

/// The settings for one workload, after annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub inject: bool,
    pub native_sidecar: bool,
    pub image: String,
    /// Replaces the ports derived from the app containers.
    pub open_port: Option<PortSpec>,
    /// Replaces the service name derived from labels or the Deployment name.
    pub service_name: Option<String>,
    pub otlp_endpoint: Option<String>,
    /// `obi-injection/capture-mode`; `None`: the sidecar's default (`auto`), with its
    /// capabilities.
    pub capture_mode: Option<CaptureMode>,
    /// Extra or replacing `OTEL_*` variables for the sidecar, by name.
    pub env: BTreeMap<String, String>,
    pub resources: SidecarResources,
}

/// The annotations of a pod template and of its Deployment; the template wins.
#[derive(Clone, Copy, Debug)]
pub struct Annotations<'a> {
    pub template: Option<&'a BTreeMap<String, String>>,
    pub deployment: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Annotations<'a> {
    /// The value of `key`, from the template or else the Deployment.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        [self.template, self.deployment]
            .into_iter()
            .flatten()
            .find_map(|map| map.get(key))
            .map(String::as_str)
    }

    /// Every `obi-injection/*` key and value, template entries replacing Deployment entries.
    fn ours(&self) -> BTreeMap<&'a str, &'a str> {
        [self.deployment, self.template]
            .into_iter()
            .flatten()
            .flat_map(|map| map.iter())
            .filter(|(key, _)| key.starts_with(PREFIX))
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect()
    }
}

/// Resolves the settings for one workload, pushing a warning for each annotation it ignores.
pub fn resolve(
    annotations: &Annotations<'_>,
    defaults: &InjectionDefaults,
    warnings: &mut Vec<String>,
) -> Settings {
    let mut env = BTreeMap::new();
    for (key, value) in annotations.ours() {
        if let Some(name) = key.strip_prefix(ENV_PREFIX) {
            if name == CAPTURE_MODE_VARIABLE {
                warnings.push(format!(
                    "{key} ignored: use {CAPTURE_MODE}, which also grants the capabilities the \
                     mode needs"
                ));
            } else if is_otel_variable(name) {
                env.insert(name.to_owned(), value.to_owned());
            } else {
                warnings.push(format!(
                    "{key} ignored: only OTEL_* variable names (A-Z, 0-9, _) can be set"
                ));
            }
        } else if !KNOWN.contains(&key) {
            warnings.push(format!("{key} ignored: unknown obi-injection annotation"));
        }
    }

    let mut lookup = Lookup {
        annotations,
        warnings,
    };
    let inject = lookup.parse(INJECT, true, "true", parse_bool);
    let native_sidecar = lookup.parse(NATIVE_SIDECAR, false, "false", parse_bool);
    let image = lookup.parse(IMAGE, defaults.image.clone(), &defaults.image, |value| {
        check_image(value).map(|()| value.to_owned())
    });
    let open_port = lookup.parse(OPEN_PORT, None, "the app containers' TCP ports", |value| {
        value
            .parse()
            .map(Some)
            .map_err(|e: crate::Error| e.to_string())
    });
    let service_name = lookup.parse(SERVICE_NAME, None, "the derived name", |value| {
        check_service_name(value).map(|()| Some(value.trim().to_owned()))
    });
    let default_endpoint = defaults.otlp_endpoint.as_deref().unwrap_or("none");
    let otlp_endpoint = lookup.parse(
        OTLP_ENDPOINT,
        defaults.otlp_endpoint.clone(),
        default_endpoint,
        |value| check_endpoint(value).map(|()| Some(value.to_owned())),
    );
    let capture_mode = lookup.parse(CAPTURE_MODE, None, "auto", |value| {
        CaptureMode::parse(value).map(Some)
    });
    let resources = lookup.resources(&defaults.resources);

    Settings {
        inject,
        native_sidecar,
        image,
        open_port,
        service_name,
        otlp_endpoint,
        capture_mode,
        env,
        resources,
    }
}

struct Lookup<'a, 'w> {
    annotations: &'a Annotations<'a>,
    warnings: &'w mut Vec<String>,
}

impl Lookup<'_, '_> {
    /// The parsed annotation, or `default` (described by `shown`) with a warning when invalid.
    fn parse<T>(
        &mut self,
        key: &str,
        default: T,
        shown: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let Some(value) = self.annotations.get(key) else {
            return default;
        };
        parse(value).unwrap_or_else(|reason| {
            self.warn(key, value, &reason, shown);
            default
        })
    }

    fn warn(&mut self, key: &str, value: &str, reason: &str, shown: &str) {
        self.warnings.push(format!(
            "{key}={} ignored: {reason}; using {shown}",
            quote(value)
        ));
    }

    fn resources(&mut self, defaults: &SidecarResources) -> SidecarResources {
        let mut quantity = |key: &str, default: &Quantity| {
            self.parse(key, default.clone(), default.as_str(), |value| {
                value.parse::<Quantity>().map_err(|e| e.to_string())
            })
        };
        let cpu_request = quantity(CPU_REQUEST, &defaults.cpu_request);
        let memory_request = quantity(MEMORY_REQUEST, &defaults.memory_request);
        let memory_limit = quantity(MEMORY_LIMIT, &defaults.memory_limit);
        if memory_request.nanos() > memory_limit.nanos() {
            // The API server would reject the whole Deployment: fall back to the consistent defaults.
            self.warnings.push(format!(
                "{MEMORY_REQUEST} {memory_request} exceeds {MEMORY_LIMIT} {memory_limit}; using {} and {}",
                defaults.memory_request, defaults.memory_limit
            ));
            return SidecarResources {
                cpu_request,
                ..defaults.clone()
            };
        }
        SidecarResources {
            cpu_request,
            memory_request,
            memory_limit,
        }
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected \"true\" or \"false\"".to_owned()),
    }
}

/// `OTEL_` followed by upper-case letters, digits and underscores.
fn is_otel_variable(name: &str) -> bool {
    name.strip_prefix("OTEL_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// A plausible image reference: registry/repository[:tag][@digest] characters only.
pub(crate) fn check_image(value: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if value.is_empty() || value.len() > 512 {
        return Err("an image reference must have 1 to 512 characters".to_owned());
    }
    if !value.chars().all(valid_char) || !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("not an image reference".to_owned());
    }
    Ok(())
}

/// An absolute `http://` or `https://` URL with a host.
pub(crate) fn check_endpoint(value: &str) -> Result<(), String> {
    let uri: http::Uri = value.parse().map_err(|_| "not a URL".to_owned())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|host| !host.is_empty());
    if scheme_ok && host_ok {
        Ok(())
    } else {
        Err("expected an http:// or https:// URL with a host".to_owned())
    }
}

fn check_service_name(value: &str) -> Result<(), String> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.len() > 255 || trimmed.chars().any(char::is_control) {
        return Err("a service name must have 1 to 255 printable characters".to_owned());
    }
    Ok(())
}

/// The value in quotes, shortened so warnings stay within the API server's limits.
fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{:?}...", &value[..cut]),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> InjectionDefaults {
        InjectionDefaults {
            image: "obi-sidecar:latest".to_owned(),
            image_pull_policy: None,
            otlp_endpoint: Some("http://collector:4318".to_owned()),
            cluster_name: None,
            resources: SidecarResources {
                cpu_request: "10m".parse().unwrap(),
                memory_request: "32Mi".parse().unwrap(),
                memory_limit: "64Mi".parse().unwrap(),
            },
        }
    }

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn resolve_with(
        template: &[(&str, &str)],
        deployment: &[(&str, &str)],
    ) -> (Settings, Vec<String>) {
        let (template, deployment) = (map(template), map(deployment));
        let annotations = Annotations {
            template: Some(&template),
            deployment: Some(&deployment),
        };
        let mut warnings = Vec::new();
        let settings = resolve(&annotations, &defaults(), &mut warnings);
        (settings, warnings)
    }

    #[test]
    fn defaults_apply_without_annotations() {
        let (settings, warnings) = resolve_with(&[], &[]);
        assert!(warnings.is_empty());
        assert!(settings.inject);
        assert!(!settings.native_sidecar);
        assert_eq!(settings.image, "obi-sidecar:latest");
        assert_eq!(
            settings.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(settings.resources, defaults().resources);
    }

    #[test]
    fn template_wins_over_deployment() {
        let (settings, _) = resolve_with(
            &[(INJECT, "true"), ("obi-injection/env.OTEL_A", "template")],
            &[
                (INJECT, "false"),
                ("obi-injection/env.OTEL_A", "deployment"),
                ("obi-injection/env.OTEL_B", "b"),
            ],
        );
        assert!(settings.inject);
        assert_eq!(
            settings.env,
            map(&[("OTEL_A", "template"), ("OTEL_B", "b")])
        );
        let (settings, _) = resolve_with(&[], &[(INJECT, "false")]);
        assert!(!settings.inject);
    }

    #[test]
    fn invalid_values_warn_and_fall_back() {
        let long = "x".repeat(100);
        let (settings, warnings) = resolve_with(
            &[
                (INJECT, "maybe"),
                (IMAGE, "bad image"),
                (OPEN_PORT, "80,http"),
                (OTLP_ENDPOINT, "collector:4318"),
                (SERVICE_NAME, " "),
                (CPU_REQUEST, &long),
                ("obi-injection/env.PATH", "/tmp"),
                ("obi-injection/imgae", "typo"),
            ],
            &[],
        );
        assert!(settings.inject);
        assert_eq!(settings.image, "obi-sidecar:latest");
        assert_eq!(settings.open_port, None);
        assert_eq!(settings.service_name, None);
        assert_eq!(
            settings.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert!(settings.env.is_empty());
        assert_eq!(warnings.len(), 8, "{warnings:#?}");
        let expected_cpu = format!(
            "{CPU_REQUEST}=\"{}\"... ignored: not a Kubernetes quantity; using 10m",
            "x".repeat(QUOTE_LIMIT)
        );
        assert!(warnings.contains(&expected_cpu), "{warnings:#?}");
        assert!(warnings.contains(&format!(
            "{INJECT}=\"maybe\" ignored: expected \"true\" or \"false\"; using true"
        )));
        for key in [
            IMAGE,
            OPEN_PORT,
            OTLP_ENDPOINT,
            SERVICE_NAME,
            "obi-injection/env.PATH",
            "obi-injection/imgae",
        ] {
            assert!(
                warnings.iter().any(|w| w.starts_with(key)),
                "{key}: {warnings:#?}"
            );
        }
    }

    #[test]
    fn capture_mode() {
        assert_eq!(resolve_with(&[], &[]).0.capture_mode, None);
        for (value, mode) in [
            ("auto", CaptureMode::Auto),
            ("Pod", CaptureMode::Pod),
            ("tracepoints", CaptureMode::Tracepoints),
            (" sys_exit ", CaptureMode::SysExit),
        ] {
            let (settings, warnings) = resolve_with(&[(CAPTURE_MODE, value)], &[]);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(settings.capture_mode, Some(mode), "{value:?}");
            assert_eq!(CaptureMode::parse(mode.as_str()), Ok(mode));
        }
        assert!(CaptureMode::Auto.attaches_to_cgroups() && CaptureMode::Pod.attaches_to_cgroups());
        assert!(!CaptureMode::Tracepoints.attaches_to_cgroups());
        assert!(!CaptureMode::SysExit.attaches_to_cgroups());

        let (settings, warnings) = resolve_with(&[(CAPTURE_MODE, "cgroup")], &[]);
        assert_eq!(settings.capture_mode, None);
        assert_eq!(
            warnings,
            [format!(
                "{CAPTURE_MODE}=\"cgroup\" ignored: expected auto, pod, tracepoints or sys_exit; \
                 using auto"
            )]
        );
        // The variable cannot be set past the capabilities.
        let (settings, warnings) = resolve_with(
            &[("obi-injection/env.OTEL_EBPF_CAPTURE_MODE", "pod")],
            &[(CAPTURE_MODE, "tracepoints")],
        );
        assert!(settings.env.is_empty());
        assert_eq!(settings.capture_mode, Some(CaptureMode::Tracepoints));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains(CAPTURE_MODE), "{warnings:?}");
    }

    #[test]
    fn memory_request_above_limit_falls_back_to_defaults() {
        let (settings, warnings) =
            resolve_with(&[(MEMORY_REQUEST, "1Gi"), (CPU_REQUEST, "50m")], &[]);
        assert_eq!(settings.resources.memory_request.as_str(), "32Mi");
        assert_eq!(settings.resources.memory_limit.as_str(), "64Mi");
        assert_eq!(settings.resources.cpu_request.as_str(), "50m");
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn validates_variable_names_and_urls() {
        assert!(is_otel_variable("OTEL_SERVICE_NAME"));
        assert!(is_otel_variable("OTEL_EBPF_BPF_DEBUG"));
        for bad in ["OTEL_", "otel_x", "OTEL_a", "PATH", "OTEL-X", "OTEL_X Y"] {
            assert!(!is_otel_variable(bad), "{bad}");
        }
        assert!(check_endpoint("http://collector.monitoring:4318").is_ok());
        assert!(check_endpoint("https://[::1]:4317/v1").is_ok());
        for bad in ["collector:4318", "ftp://x", "http://", "/path", ""] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        assert!(check_image("ghcr.io/org/obi:1.2@sha256:abc").is_ok());
        for bad in ["", "-x", "a b", "x\n"] {
            assert!(check_image(bad).is_err(), "{bad:?}");
        }
    }
}
