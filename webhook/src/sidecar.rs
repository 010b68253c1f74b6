//! The injected sidecar container: image, privileges, resources and the environment the sidecar
//! reads (its contract with the webhook).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, ResourceRequirements,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::ports::PortSpec;
use crate::settings::{CaptureMode, InjectionDefaults, Settings};

/// Name of the injected container.
pub const CONTAINER_NAME: &str = "obi";

/// Capabilities of the tracepoint modes (`tracepoints`, `sys_exit`), after dropping `ALL`:
/// loading eBPF programs and maps (BPF), tracing programs and reading user memory (PERFMON),
/// reading the other containers' processes' `/proc/<pid>/fd`, `exe` and `root` (SYS_PTRACE,
/// DAC_READ_SEARCH). The sidecar's capture tests run it with exactly these four;
/// CHECKPOINT_RESTORE is not needed.
pub const TRACEPOINT_CAPABILITIES: [&str; 4] = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"];
/// Capabilities of the pod-scoped modes (`auto`, the default, and `pod`): the four, plus
/// NET_ADMIN, which the kernel asks for to load `sock_ops` and to attach `cgroup_skb` programs
/// to the app containers' cgroups. The sidecar's pod-hook tests run it with exactly these.
pub const POD_CAPABILITIES: [&str; 5] = [
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "NET_ADMIN",
];

/// The capabilities a capture mode needs (`None`: the sidecar's default, `auto`).
pub fn capabilities(mode: Option<CaptureMode>) -> &'static [&'static str] {
    if mode.is_none_or(CaptureMode::attaches_to_cgroups) {
        &POD_CAPABILITIES
    } else {
        &TRACEPOINT_CAPABILITIES
    }
}

/// Sidecar variables: ports to instrument (absent: every process of the pod).
pub const ENV_OPEN_PORT: &str = "OTEL_EBPF_OPEN_PORT";
/// Container name to TCP ports, `app=8080,8443;metrics=9090`.
pub const ENV_CONTAINER_PORTS: &str = "OTEL_EBPF_K8S_CONTAINER_PORTS";
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// Set from `obi-injection/capture-mode`; absent, the sidecar runs `auto`.
pub const ENV_CAPTURE_MODE: &str = "OTEL_EBPF_CAPTURE_MODE";

/// Downward-API variables, declared before `OTEL_RESOURCE_ATTRIBUTES` so `$(NAME)` expands.
const DOWNWARD_API: [(&str, &str); 4] = [
    ("OBI_K8S_POD_NAME", "metadata.name"),
    ("OBI_K8S_POD_UID", "metadata.uid"),
    ("OBI_K8S_NODE_NAME", "spec.nodeName"),
    ("OBI_K8S_POD_IP", "status.podIP"),
];

/// The workload the sidecar is built for.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub deployment: &'a str,
    pub service_name: &'a str,
    /// The application containers (never the sidecar itself).
    pub app_containers: &'a [&'a Container],
}

/// Builds the sidecar container for `subject`.
pub fn container(
    settings: &Settings,
    defaults: &InjectionDefaults,
    subject: &Subject<'_>,
) -> Container {
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: defaults.image_pull_policy.clone(),
        env: Some(environment(settings, defaults, subject)),
        resources: Some(resources(settings)),
        security_context: Some(security_context(settings.capture_mode)),
        restart_policy: settings.native_sidecar.then(|| "Always".to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

fn environment(
    settings: &Settings,
    defaults: &InjectionDefaults,
    subject: &Subject<'_>,
) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = DOWNWARD_API
        .iter()
        .map(|(name, field)| EnvVar {
            name: (*name).to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: (*field).to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    env.push(plain(ENV_SERVICE_NAME, subject.service_name.to_owned()));
    let open_port = settings.open_port.clone().or_else(|| {
        PortSpec::from_ports(
            subject
                .app_containers
                .iter()
                .flat_map(|container| tcp_ports(container)),
        )
    });
    if let Some(open_port) = open_port {
        env.push(plain(ENV_OPEN_PORT, open_port.to_string()));
    }
    if let Some(map) = container_ports(subject.app_containers) {
        env.push(plain(ENV_CONTAINER_PORTS, map));
    }
    if let Some(endpoint) = &settings.otlp_endpoint {
        env.push(plain(ENV_OTLP_ENDPOINT, endpoint.clone()));
    }
    if let Some(mode) = settings.capture_mode {
        env.push(plain(ENV_CAPTURE_MODE, mode.as_str().to_owned()));
    }
    env.push(plain(
        ENV_RESOURCE_ATTRIBUTES,
        resource_attributes(defaults, subject),
    ));

    // Annotation overrides replace a variable in place, or are appended (sorted by name).
    for (name, value) in &settings.env {
        match env.iter_mut().find(|var| &var.name == name) {
            Some(var) => {
                var.value = Some(value.clone());
                var.value_from = None;
            }
            None => env.push(plain(name, value.clone())),
        }
    }
    env
}

fn plain(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn resource_attributes(defaults: &InjectionDefaults, subject: &Subject<'_>) -> String {
    let mut attributes = vec![
        format!("k8s.namespace.name={}", subject.namespace),
        format!("k8s.deployment.name={}", subject.deployment),
    ];
    if let Some(cluster) = &defaults.cluster_name {
        attributes.push(format!("k8s.cluster.name={cluster}"));
    }
    attributes.extend([
        "k8s.pod.name=$(OBI_K8S_POD_NAME)".to_owned(),
        "k8s.pod.uid=$(OBI_K8S_POD_UID)".to_owned(),
        "k8s.node.name=$(OBI_K8S_NODE_NAME)".to_owned(),
    ]);
    attributes.join(",")
}

/// The valid TCP `containerPort`s of a container (protocol defaults to TCP).
fn tcp_ports(container: &Container) -> impl Iterator<Item = u16> + '_ {
    container
        .ports
        .iter()
        .flatten()
        .filter(|port| {
            port.protocol
                .as_deref()
                .is_none_or(|protocol| protocol == "TCP")
        })
        .filter_map(|port| {
            u16::try_from(port.container_port)
                .ok()
                .filter(|port| *port != 0)
        })
}

/// `app=8080,8443;metrics=9090`: containers with TCP ports, sorted by name, ports sorted.
fn container_ports(containers: &[&Container]) -> Option<String> {
    let by_name: BTreeMap<&str, PortSpec> = containers
        .iter()
        .filter_map(|container| {
            Some((
                container.name.as_str(),
                PortSpec::from_ports(tcp_ports(container))?,
            ))
        })
        .collect();
    let entries: Vec<String> = by_name
        .iter()
        .map(|(name, ports)| format!("{name}={ports}"))
        .collect();
    (!entries.is_empty()).then(|| entries.join(";"))
}

fn resources(settings: &Settings) -> ResourceRequirements {
    let quantity = |q: &crate::quantity::Quantity| K8sQuantity(q.as_str().to_owned());
    let resources = &settings.resources;
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), quantity(&resources.cpu_request)),
            ("memory".to_owned(), quantity(&resources.memory_request)),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            quantity(&resources.memory_limit),
        )])),
        ..Default::default()
    }
}

/// Root inside the container (to read other processes' /proc entries) but no privilege escalation,
/// a read-only root filesystem and only the [`capabilities`] of the capture mode. `runAsNonRoot:
/// false` is explicit so a pod-level `runAsNonRoot: true` does not stop the sidecar from starting.
fn security_context(mode: Option<CaptureMode>) -> SecurityContext {
    SecurityContext {
        privileged: Some(false),
        run_as_user: Some(0),
        run_as_non_root: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            add: Some(
                capabilities(mode)
                    .iter()
                    .map(|cap| (*cap).to_owned())
                    .collect(),
            ),
            drop: Some(vec!["ALL".to_owned()]),
        }),
        ..Default::default()
    }
}
