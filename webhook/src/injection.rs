//! The decision for one Deployment: a pure function from its pod template to an RFC 6902 patch.
//!
//! The patch is minimal and deterministic: the same object always gives the same operations, and
//! an object that already carries the current injection gives none, so the webhook never rolls a
//! Deployment unless the injected spec really changes.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::settings::{self, Annotations, InjectionDefaults, STATUS, Settings};
use crate::sidecar::{self, CONTAINER_NAME, Subject};
use crate::status::{FORMAT_VERSION, InjectionStatus, Placement, spec_hash};

/// Label used for the service name when no annotation gives one.
const NAME_LABEL: &str = "app.kubernetes.io/name";

/// A Deployment as the decision sees it.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The Deployment's own metadata.
    pub metadata: &'a ObjectMeta,
    pub template: &'a PodTemplateSpec,
}

/// What the webhook did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// First injection.
    Injected,
    /// An earlier injection re-derived (ports, annotations or configuration changed).
    Updated,
    /// An earlier injection undone (opt-out, or `shareProcessNamespace: false`).
    Removed,
    Skipped(SkipReason),
    /// The object could not be handled; allowed unchanged with a warning (fail open).
    Failed,
}

/// Why nothing was patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Not an apps/v1 Deployment CREATE or UPDATE.
    NotApplicable,
    OptedOut,
    ShareProcessNamespaceDisabled,
    UpToDate,
    /// A container named `obi` that this webhook did not inject.
    NameConflict,
    NoContainers,
}

impl Outcome {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Updated => "updated",
            Self::Removed => "removed",
            Self::Skipped(_) => "skipped",
            Self::Failed => "failed",
        }
    }
}

impl SkipReason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotApplicable => "not_applicable",
            Self::OptedOut => "opted_out",
            Self::ShareProcessNamespaceDisabled => "share_process_namespace_false",
            Self::UpToDate => "up_to_date",
            Self::NameConflict => "name_conflict",
            Self::NoContainers => "no_containers",
        }
    }
}

/// The decision: outcome, patch (empty when nothing changes) and admission warnings.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub outcome: Outcome,
    pub patch: Patch,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Nothing to patch.
    pub fn skipped(reason: SkipReason, warnings: Vec<String>) -> Self {
        Self {
            outcome: Outcome::Skipped(reason),
            patch: Patch(Vec::new()),
            warnings,
        }
    }

    /// Fail open: allowed unchanged, with a warning saying why.
    pub fn failed(reason: &str) -> Self {
        Self {
            outcome: Outcome::Failed,
            patch: Patch(Vec::new()),
            warnings: vec![format!("obi-injection: sidecar not injected: {reason}")],
        }
    }
}

/// Decides what to do with `workload`.
pub fn plan(workload: &Workload<'_>, defaults: &InjectionDefaults) -> Plan {
    let Some(pod) = workload.template.spec.as_ref() else {
        return Plan::failed("the pod template has no spec");
    };
    let mut warnings = Vec::new();
    let template_annotations = workload
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref());
    let annotations = Annotations {
        template: template_annotations,
        deployment: workload.metadata.annotations.as_ref(),
    };
    let settings = settings::resolve(&annotations, defaults, &mut warnings);
    let status = template_annotations
        .and_then(|map| map.get(STATUS))
        .and_then(|value| {
            let status = InjectionStatus::parse(value);
            if status.is_none() {
                warnings.push(format!("{STATUS} ignored: not a status this webhook wrote"));
            }
            status
        });
    let located = Located::find(pod);
    let disabled = pod.share_process_namespace == Some(false);
    if settings.inject && disabled {
        warnings.push(SHARE_PROCESS_NAMESPACE_WARNING.to_owned());
    }

    match status {
        None if !settings.inject => Plan::skipped(SkipReason::OptedOut, warnings),
        None if located.any() => {
            warnings.push(format!(
                "obi-injection: sidecar not injected: the pod template already has a container named \
                 {CONTAINER_NAME:?} that this webhook did not inject"
            ));
            Plan::skipped(SkipReason::NameConflict, warnings)
        }
        None if disabled => Plan::skipped(SkipReason::ShareProcessNamespaceDisabled, warnings),
        Some(status) if !settings.inject || disabled => {
            remove(workload.template, pod, &status, located, warnings)
        }
        previous => inject(
            workload,
            pod,
            &settings,
            defaults,
            previous.as_ref(),
            located,
            warnings,
        ),
    }
}

const SHARE_PROCESS_NAMESPACE_WARNING: &str = "obi-injection: sidecar not injected: the pod template sets \
     shareProcessNamespace: false, and the sidecar must share the process namespace to see the app";

/// Index of the container named `obi` in each list.
#[derive(Clone, Copy, Debug)]
struct Located {
    containers: Option<usize>,
    init_containers: Option<usize>,
}

impl Located {
    fn find(pod: &PodSpec) -> Self {
        let index =
            |list: Option<&Vec<Container>>| list?.iter().position(|c| c.name == CONTAINER_NAME);
        Self {
            containers: index(Some(&pod.containers)),
            init_containers: index(pod.init_containers.as_ref()),
        }
    }

    fn any(self) -> bool {
        self.containers.is_some() || self.init_containers.is_some()
    }

    fn at(self, placement: Placement) -> Option<usize> {
        match placement {
            Placement::Containers => self.containers,
            Placement::InitContainers => self.init_containers,
        }
    }
}

fn inject(
    workload: &Workload<'_>,
    pod: &PodSpec,
    settings: &Settings,
    defaults: &InjectionDefaults,
    previous: Option<&InjectionStatus>,
    located: Located,
    warnings: Vec<String>,
) -> Plan {
    let app_containers: Vec<&Container> = pod
        .containers
        .iter()
        .filter(|c| c.name != CONTAINER_NAME)
        .collect();
    if app_containers.is_empty() {
        return Plan::skipped(SkipReason::NoContainers, warnings);
    }
    let service_name = settings
        .service_name
        .as_deref()
        .unwrap_or_else(|| name_label(workload));
    let subject = Subject {
        namespace: workload.namespace,
        deployment: workload.name,
        service_name,
        app_containers: &app_containers,
    };
    let container = match serde_json::to_value(sidecar::container(settings, defaults, &subject)) {
        Ok(container) => container,
        Err(error) => return Plan::failed(&format!("cannot encode the sidecar: {error}")),
    };
    let placement = if settings.native_sidecar {
        Placement::InitContainers
    } else {
        Placement::Containers
    };
    let status = InjectionStatus {
        version: FORMAT_VERSION,
        hash: spec_hash(placement, &container),
        placement,
        original_share_process_namespace: previous
            .map_or(pod.share_process_namespace, |previous| {
                previous.original_share_process_namespace
            }),
    };
    let current = located.at(placement);
    let stale = located.at(placement.other());
    let shared = pod.share_process_namespace == Some(true);
    if previous == Some(&status) && current.is_some() && stale.is_none() && shared {
        return Plan::skipped(SkipReason::UpToDate, warnings);
    }

    let mut ops = Ops::default();
    if let Some(index) = stale {
        ops.remove_container(pod, placement.other(), index);
    }
    if !shared {
        ops.add(&pod_path(&["shareProcessNamespace"]), Value::Bool(true));
    }
    match (current, list(pod, placement)) {
        (Some(index), _) => ops.replace(
            &pod_path(&[placement.field(), &index.to_string()]),
            container,
        ),
        (None, Some(_)) => ops.add(&pod_path(&[placement.field(), "-"]), container),
        (None, None) => ops.add(
            &pod_path(&[placement.field()]),
            Value::Array(vec![container]),
        ),
    }
    ops.set_status(workload.template, status.to_annotation());
    let outcome = if previous.is_some() {
        Outcome::Updated
    } else {
        Outcome::Injected
    };
    Plan {
        outcome,
        patch: Patch(ops.0),
        warnings,
    }
}

/// Undoes an injection: the sidecar, the status annotation and the `shareProcessNamespace: true`
/// the webhook set (only if it was unset before, and not if the user has since written `false`).
fn remove(
    template: &PodTemplateSpec,
    pod: &PodSpec,
    status: &InjectionStatus,
    located: Located,
    warnings: Vec<String>,
) -> Plan {
    let mut ops = Ops::default();
    for placement in [Placement::Containers, Placement::InitContainers] {
        if let Some(index) = located.at(placement) {
            ops.remove_container(pod, placement, index);
        }
    }
    if status.original_share_process_namespace.is_none()
        && pod.share_process_namespace == Some(true)
    {
        ops.remove(&pod_path(&["shareProcessNamespace"]));
    }
    ops.remove_status(template);
    Plan {
        outcome: Outcome::Removed,
        patch: Patch(ops.0),
        warnings,
    }
}

/// `app.kubernetes.io/name` of the template, else of the Deployment, else the Deployment's name.
fn name_label<'a>(workload: &Workload<'a>) -> &'a str {
    let template_labels = workload
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    [template_labels, workload.metadata.labels.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|labels: &BTreeMap<String, String>| labels.get(NAME_LABEL))
        .map(String::as_str)
        .filter(|name| !name.is_empty())
        .unwrap_or(workload.name)
}

fn list(pod: &PodSpec, placement: Placement) -> Option<&Vec<Container>> {
    match placement {
        Placement::Containers => Some(&pod.containers),
        Placement::InitContainers => pod.init_containers.as_ref(),
    }
}

/// `/spec/template/spec/<tokens>`.
fn pod_path(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(["spec", "template", "spec"].iter().chain(tokens).copied())
}

/// `/spec/template/metadata/<tokens>`.
fn metadata_path(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(
        ["spec", "template", "metadata"]
            .iter()
            .chain(tokens)
            .copied(),
    )
}

#[derive(Default)]
struct Ops(Vec<PatchOperation>);

impl Ops {
    fn add(&mut self, path: &PointerBuf, value: Value) {
        self.0.push(PatchOperation::Add(AddOperation {
            path: path.clone(),
            value,
        }));
    }

    fn replace(&mut self, path: &PointerBuf, value: Value) {
        self.0.push(PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value,
        }));
    }

    fn remove(&mut self, path: &PointerBuf) {
        self.0.push(PatchOperation::Remove(RemoveOperation {
            path: path.clone(),
        }));
    }

    /// Removes one container; an `initContainers` list left empty is removed whole, as it was
    /// (most likely) absent before injection.
    fn remove_container(&mut self, pod: &PodSpec, placement: Placement, index: usize) {
        let alone = list(pod, placement).is_some_and(|containers| containers.len() == 1);
        if alone && placement == Placement::InitContainers {
            self.remove(&pod_path(&[placement.field()]));
        } else {
            self.remove(&pod_path(&[placement.field(), &index.to_string()]));
        }
    }

    /// Sets the status annotation, creating the metadata or annotation map if needed.
    fn set_status(&mut self, template: &PodTemplateSpec, value: String) {
        let value = Value::String(value);
        match template.metadata.as_ref().map(|m| m.annotations.as_ref()) {
            None => self.add(
                &metadata_path(&[]),
                serde_json::json!({ "annotations": { STATUS: value } }),
            ),
            Some(None) => self.add(
                &metadata_path(&["annotations"]),
                serde_json::json!({ STATUS: value }),
            ),
            Some(Some(_)) => self.add(&metadata_path(&["annotations", STATUS]), value),
        }
    }

    /// Removes the status annotation, and the annotation map if nothing else is left in it.
    fn remove_status(&mut self, template: &PodTemplateSpec) {
        let annotations = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref());
        match annotations {
            Some(map) if map.contains_key(STATUS) && map.len() == 1 => {
                self.remove(&metadata_path(&["annotations"]));
            }
            Some(map) if map.contains_key(STATUS) => {
                self.remove(&metadata_path(&["annotations", STATUS]))
            }
            _ => {}
        }
    }
}
