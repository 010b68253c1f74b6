//! AdmissionReview in, AdmissionReview out: decoding, the kind/operation filter and encoding.

use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::Deserialize;

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::error::{Error, Result};
use crate::injection::{self, Plan, SkipReason, Workload};
use crate::settings::InjectionDefaults;

/// The only AdmissionReview version served (`admissionReviewVersions: ["v1"]`).
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

/// An answered review.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview response, JSON.
    pub body: Vec<u8>,
    pub uid: String,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'static str,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    pub plan: Plan,
}

/// Answers the AdmissionReview in `body`. Errors only when `body` is not an
/// `admission.k8s.io/v1` AdmissionReview with a request; anything wrong with the object itself
/// gives an allowed, unpatched answer with a warning.
pub fn review(body: &[u8], defaults: &InjectionDefaults) -> Result<Reviewed> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|error| Error::Review(error.to_string()))?;
    if review.types.api_version != REVIEW_API_VERSION || review.types.kind != "AdmissionReview" {
        return Err(Error::Review(format!(
            "apiVersion {:?} kind {:?}",
            review.types.api_version, review.types.kind
        )));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| Error::Review("it has no request".to_owned()))?;
    let plan = decide(&request, defaults);

    let mut response = AdmissionResponse::from(&request);
    if !plan.warnings.is_empty() {
        response.warnings = Some(plan.warnings.clone());
    }
    if !plan.patch.0.is_empty() {
        response = response
            .with_patch(plan.patch.clone())
            .map_err(|error| Error::Encode(error.to_string()))?;
    }
    let body = serde_json::to_vec(&response.into_review())
        .map_err(|error| Error::Encode(error.to_string()))?;
    Ok(Reviewed {
        body,
        operation: operation_label(&request.operation),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        dry_run: request.dry_run,
        uid: request.uid,
        plan,
    })
}

/// The decision for one request. `dryRun` requests are decided the same way: the webhook has no
/// side effects.
pub fn decide(request: &AdmissionRequest<DynamicObject>, defaults: &InjectionDefaults) -> Plan {
    let kind = &request.kind;
    let deployment = kind.group == "apps" && kind.version == "v1" && kind.kind == "Deployment";
    let operation = matches!(request.operation, Operation::Create | Operation::Update);
    if !deployment
        || !operation
        || request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return Plan::skipped(SkipReason::NotApplicable, Vec::new());
    }
    let Some(object) = request.object.as_ref() else {
        return Plan::failed("the request carries no object");
    };
    let Some(template) = object
        .data
        .get("spec")
        .and_then(|spec| spec.get("template"))
    else {
        return Plan::failed("the Deployment has no spec.template");
    };
    let template = match PodTemplateSpec::deserialize(template) {
        Ok(template) => template,
        Err(error) => return Plan::failed(&format!("cannot read spec.template: {error}")),
    };
    let metadata = &object.metadata;
    let namespace = request
        .namespace
        .as_deref()
        .or(metadata.namespace.as_deref())
        .unwrap_or("default");
    let name = [
        Some(request.name.as_str()),
        metadata.name.as_deref(),
        metadata.generate_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find(|name| !name.is_empty())
    .unwrap_or_default();
    injection::plan(
        &Workload {
            namespace,
            name,
            metadata,
            template: &template,
        },
        defaults,
    )
}

fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}
