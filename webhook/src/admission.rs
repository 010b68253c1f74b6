//! AdmissionReview in, AdmissionReview out: decoding, the kind/operation filter and encoding.
//!
//! The wire types are the webhook's own rather than kube-core's: the request is decoded in one
//! pass, borrowing from the body, skipping what the decision never reads (`oldObject`,
//! `userInfo`, `options`) and keeping the object raw until it is known to be a Deployment, so a
//! malformed object fails open instead of failing the whole review. The answer carries the patch
//! base64-encoded, as the API defines `[]byte` fields.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::injection::{self, Plan, SkipReason, Workload};
use crate::settings::InjectionDefaults;

/// The only AdmissionReview version served (`admissionReviewVersions: ["v1"]`).
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

/// An answered review.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview response, JSON.
    pub body: Vec<u8>,
    pub uid: String,
    pub operation: Operation,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    pub plan: Plan,
}

/// The operation of an admission request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// As on the wire (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    api_version: String,
    kind: String,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    version: String,
    kind: String,
}

/// The parts of a Deployment the decision reads. `null` is accepted wherever a field may be
/// absent, as Kubernetes clients write both.
#[derive(Deserialize)]
struct DeploymentIn {
    #[serde(default)]
    metadata: Option<ObjectMeta>,
    #[serde(default)]
    spec: Option<DeploymentSpecIn>,
}

#[derive(Deserialize)]
struct DeploymentSpecIn {
    #[serde(default)]
    template: Option<PodTemplateSpec>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    /// Always true: the webhook fails open and never denies.
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// Answers the AdmissionReview in `body`. Errors only when `body` is not an
/// `admission.k8s.io/v1` AdmissionReview with a request; anything wrong with the object itself
/// gives an allowed, unpatched answer with a warning.
pub fn review(body: &[u8], defaults: &InjectionDefaults) -> Result<Reviewed> {
    let review: ReviewIn<'_> =
        serde_json::from_slice(body).map_err(|error| Error::Review(error.to_string()))?;
    if review.api_version != REVIEW_API_VERSION || review.kind != REVIEW_KIND {
        return Err(Error::Review(format!(
            "apiVersion {:?} kind {:?}",
            review.api_version, review.kind
        )));
    }
    let request = review
        .request
        .ok_or_else(|| Error::Review("it has no request".to_owned()))?;
    let plan = decide(&request, defaults);

    let patch = if plan.patch.0.is_empty() {
        None
    } else {
        let bytes =
            serde_json::to_vec(&plan.patch).map_err(|error| Error::Encode(error.to_string()))?;
        Some(BASE64.encode(bytes))
    };
    let answer = ReviewOut {
        api_version: REVIEW_API_VERSION,
        kind: REVIEW_KIND,
        response: ResponseOut {
            uid: &request.uid,
            allowed: true,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: &plan.warnings,
        },
    };
    let body = serde_json::to_vec(&answer).map_err(|error| Error::Encode(error.to_string()))?;
    Ok(Reviewed {
        body,
        operation: request.operation,
        namespace: request.namespace.unwrap_or_default(),
        name: request.name.unwrap_or_default(),
        dry_run: request.dry_run.unwrap_or(false),
        uid: request.uid,
        plan,
    })
}

/// The decision for one request. `dryRun` requests are decided the same way: the webhook has no
/// side effects.
fn decide(request: &RequestIn<'_>, defaults: &InjectionDefaults) -> Plan {
    let kind = &request.kind;
    let deployment = kind.group == "apps" && kind.version == "v1" && kind.kind == "Deployment";
    let operation = matches!(request.operation, Operation::Create | Operation::Update);
    let subresource = request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    if !deployment || !operation || subresource {
        return Plan::skipped(SkipReason::NotApplicable, Vec::new());
    }
    let Some(object) = request.object else {
        return Plan::failed("the request carries no object");
    };
    let object: DeploymentIn = match serde_json::from_str(object.get()) {
        Ok(object) => object,
        Err(error) => return Plan::failed(&format!("cannot read the Deployment: {error}")),
    };
    let Some(template) = object.spec.and_then(|spec| spec.template) else {
        return Plan::failed("the Deployment has no spec.template");
    };
    let metadata = object.metadata.unwrap_or_default();
    let namespace = [request.namespace.as_deref(), metadata.namespace.as_deref()]
        .into_iter()
        .flatten()
        .find(|namespace| !namespace.is_empty())
        .unwrap_or("default");
    let name = [
        request.name.as_deref(),
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
            metadata: &metadata,
            template: &template,
        },
        defaults,
    )
}
