//! Helpers shared by the webhook's integration tests: sample objects, AdmissionReview envelopes,
//! response decoding and patch application.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use obi_webhook::settings::{InjectionDefaults, SidecarResources};
use serde_json::{Value, json};

pub fn testdata(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(relative)
}

/// The webhook's built-in defaults plus an OTLP endpoint.
pub fn defaults() -> InjectionDefaults {
    InjectionDefaults {
        image: "obi-sidecar:latest".to_owned(),
        image_pull_policy: None,
        otlp_endpoint: Some("http://otel-collector.observability:4318".to_owned()),
        cluster_name: None,
        resources: SidecarResources {
            cpu_request: "10m".parse().unwrap(),
            memory_request: "32Mi".parse().unwrap(),
            memory_limit: "64Mi".parse().unwrap(),
        },
    }
}

/// `testdata/deployments/<name>.yaml` as JSON.
pub fn deployment(name: &str) -> Value {
    let path = testdata(&format!("deployments/{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

/// An `admission.k8s.io/v1` AdmissionReview for `object` in its namespace.
pub fn review(object: &Value, operation: &str, dry_run: bool) -> Value {
    let kind = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let resource = json!({"group": "apps", "version": "v1", "resource": "deployments"});
    let old = if operation == "UPDATE" {
        object.clone()
    } else {
        Value::Null
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{operation}"),
            "kind": kind,
            "resource": resource,
            "name": object.pointer("/metadata/name").cloned().unwrap_or_default(),
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(json!("default")),
            "operation": operation,
            "userInfo": {"username": "tester"},
            "object": object,
            "oldObject": old,
            "dryRun": dry_run,
        }
    })
}

/// A decoded AdmissionReview response.
#[derive(Debug)]
pub struct Answer {
    pub uid: String,
    pub allowed: bool,
    /// The JSONPatch operations (empty when none).
    pub patch: Vec<Value>,
    pub warnings: Vec<String>,
}

/// Decodes a response body, checking the envelope.
pub fn decode(body: &[u8]) -> Answer {
    let review: Value = serde_json::from_slice(body).expect("response is JSON");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    let response = &review["response"];
    let patch = match &response["patch"] {
        Value::Null => Vec::new(),
        Value::String(encoded) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = BASE64.decode(encoded).expect("patch is base64");
            serde_json::from_slice(&bytes).expect("patch is a JSON array")
        }
        other => panic!("unexpected patch encoding {other}"),
    };
    Answer {
        uid: response["uid"].as_str().unwrap().to_owned(),
        allowed: response["allowed"].as_bool().unwrap(),
        patch,
        warnings: response["warnings"]
            .as_array()
            .map(|w| w.iter().map(|w| w.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
    }
}

/// Applies RFC 6902 operations to `object`.
pub fn apply(object: &Value, patch: &[Value]) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch.to_vec())).unwrap();
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch)
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\n{patch:?}"));
    patched
}

/// The container named `name` in `containers` or `initContainers`.
pub fn container<'a>(object: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    object
        .pointer(&format!("/spec/template/spec/{list}"))?
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// The sidecar's environment: name to literal value, or to `fieldRef:<path>` for downward-API
/// variables, in declaration order.
pub fn env(sidecar: &Value) -> Vec<(String, String)> {
    sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(value), _) => value.clone(),
                (_, Value::String(path)) => format!("fieldRef:{path}"),
                _ => panic!("unexpected env var {var}"),
            };
            (var["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

pub fn env_value(sidecar: &Value, name: &str) -> Option<String> {
    env(sidecar)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}
