//! The `obi-injection/status` annotation: what the webhook injected into a pod template.
//!
//! It lets a later request tell the webhook's own sidecar from a user container that happens to
//! be named `obi`, skip the patch when nothing changed (the stored sidecar has been defaulted by
//! the API server, so it cannot be compared field by field), and undo the injection exactly.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the annotation's format, bumped if its meaning changes.
pub const FORMAT_VERSION: u32 = 1;

/// Where the sidecar lives in the pod spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// Appended to `containers`.
    Containers,
    /// Appended to `initContainers` with `restartPolicy: Always` (native sidecar).
    InitContainers,
}

impl Placement {
    /// The pod spec field holding the sidecar.
    pub fn field(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::InitContainers => "initContainers",
        }
    }

    /// The other list (where a stale copy may need removing).
    pub fn other(self) -> Self {
        match self {
            Self::Containers => Self::InitContainers,
            Self::InitContainers => Self::Containers,
        }
    }
}

/// The recorded injection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionStatus {
    pub version: u32,
    /// `sha256:<hex>` of the injected container and its placement (see [`spec_hash`]).
    pub hash: String,
    pub placement: Placement,
    /// The template's `shareProcessNamespace` before injection (`None`: unset), restored on removal.
    pub original_share_process_namespace: Option<bool>,
}

impl InjectionStatus {
    /// Parses the annotation; `None` if it is not one this webhook wrote.
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_str::<Self>(value)
            .ok()
            .filter(|status| status.version == FORMAT_VERSION)
    }

    /// The annotation value (compact JSON, fields in a fixed order).
    pub fn to_annotation(&self) -> String {
        // Serialising a struct of strings, bools and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Hash of the injected spec: the sidecar container (as JSON) and where it goes.
pub fn spec_hash(placement: Placement, container: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(placement.field().as_bytes());
    hasher.update([0]);
    hasher.update(container.to_string().as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_values() {
        let status = InjectionStatus {
            version: FORMAT_VERSION,
            hash: "sha256:00".to_owned(),
            placement: Placement::InitContainers,
            original_share_process_namespace: None,
        };
        let text = status.to_annotation();
        assert_eq!(
            text,
            r#"{"version":1,"hash":"sha256:00","placement":"initContainers","originalShareProcessNamespace":null}"#
        );
        assert_eq!(InjectionStatus::parse(&text), Some(status));
        assert_eq!(InjectionStatus::parse("injected"), None);
        assert_eq!(InjectionStatus::parse(&text.replace(":1,", ":2,")), None);
        assert_eq!(
            InjectionStatus::parse(&text.replace("null}", "null,\"x\":1}")),
            None
        );
    }

    #[test]
    fn hash_depends_on_container_and_placement() {
        let a = serde_json::json!({"name": "obi", "image": "a"});
        let b = serde_json::json!({"name": "obi", "image": "b"});
        assert_eq!(
            spec_hash(Placement::Containers, &a),
            spec_hash(Placement::Containers, &a)
        );
        assert_ne!(
            spec_hash(Placement::Containers, &a),
            spec_hash(Placement::Containers, &b)
        );
        assert_ne!(
            spec_hash(Placement::Containers, &a),
            spec_hash(Placement::InitContainers, &a)
        );
        assert!(spec_hash(Placement::Containers, &a).starts_with("sha256:"));
    }
}
