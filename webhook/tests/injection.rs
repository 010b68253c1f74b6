//! The admission decision over a table of Deployments, through the whole AdmissionReview path.
//!
//! Every scenario goes through [`admit`], which checks what must hold for any request: allowed,
//! same uid, byte-for-byte deterministic, dry run identical, the patch applies (RFC 6902), and the
//! patched object reviewed again gives no patch (idempotent across UPDATEs and reinvocation).
//! The patched objects of every scenario are then validated against the Kubernetes schema.

// Test code: helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use obi_webhook::admission;
use obi_webhook::injection::{Outcome, SkipReason};
use obi_webhook::settings::InjectionDefaults;
use obi_webhook::status::InjectionStatus;
use serde_json::{Value, json};
use support::{apply, container, decode, defaults, deployment, env, env_value, review, testdata};

/// Kubernetes version whose schema the patched objects must satisfy (k8s-openapi's `v1_32`).
const SCHEMA_VERSION: &str = "1.32.0";
const STATUS_POINTER: &str = "/spec/template/metadata/annotations/obi-injection~1status";

struct Admitted {
    outcome: Outcome,
    patch: Vec<Value>,
    warnings: Vec<String>,
    patched: Value,
}

fn review_bytes(object: &Value, operation: &str, dry_run: bool) -> Vec<u8> {
    serde_json::to_vec(&review(object, operation, dry_run)).unwrap()
}

fn admit_as(object: &Value, operation: &str, defaults: &InjectionDefaults) -> Admitted {
    let body = review_bytes(object, operation, false);
    let first = admission::review(&body, defaults).unwrap();
    let again = admission::review(&body, defaults).unwrap();
    assert_eq!(
        first.body, again.body,
        "the same request must give the same bytes"
    );

    let answer = decode(&first.body);
    assert!(answer.allowed);
    assert_eq!(answer.uid, format!("uid-{operation}"));
    let dry_run = admission::review(&review_bytes(object, operation, true), defaults).unwrap();
    assert_eq!(
        decode(&dry_run.body).patch,
        answer.patch,
        "dry run must be decided the same way"
    );

    let patched = apply(object, &answer.patch);
    let second = admission::review(&review_bytes(&patched, "UPDATE", false), defaults).unwrap();
    let second_answer = decode(&second.body);
    assert!(
        second_answer.patch.is_empty(),
        "reviewing the patched object again must give no patch, got {:#?}",
        second_answer.patch
    );
    Admitted {
        outcome: first.plan.outcome,
        patch: answer.patch,
        warnings: answer.warnings,
        patched,
    }
}

fn admit(object: &Value) -> Admitted {
    admit_as(object, "CREATE", &defaults())
}

fn set(object: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let key = key.replace("~1", "/").replace("~0", "~");
    let parent = object
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    match parent {
        Value::Object(map) => {
            map.insert(key, value);
        }
        Value::Array(list) => list[key.parse::<usize>().unwrap()] = value,
        _ => panic!("{pointer}: parent is not a container"),
    }
}

fn annotate(object: &mut Value, on: &str, key: &str, value: &str) {
    let pointer = format!("{on}/metadata/annotations");
    if object.pointer(&pointer).is_none() {
        set(object, &pointer, json!({}));
    }
    set(
        object,
        &format!("{pointer}/{}", key.replace('/', "~1")),
        json!(value),
    );
}

const TEMPLATE: &str = "/spec/template";
const DEPLOYMENT: &str = "";

fn sidecar(object: &Value) -> &Value {
    container(object, "containers", "obi").expect("sidecar in containers")
}

fn status(object: &Value) -> InjectionStatus {
    InjectionStatus::parse(
        object
            .pointer(STATUS_POINTER)
            .and_then(Value::as_str)
            .expect("status annotation"),
    )
    .expect("status annotation parses")
}

fn ops(patch: &[Value]) -> Vec<(String, String)> {
    patch
        .iter()
        .map(|op| {
            (
                op["op"].as_str().unwrap().to_owned(),
                op["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn op(kind: &str, path: &str) -> (String, String) {
    (kind.to_owned(), path.to_owned())
}

fn strings(values: &[(&str, &str)]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios. Each returns the patched Deployments it produced, for schema validation.

/// Two containers, named, duplicate and UDP ports, pod-level runAsNonRoot: the full sidecar.
fn multiple_containers() -> Vec<Value> {
    let original = deployment("web");
    let admitted = admit(&original);
    assert_eq!(admitted.outcome, Outcome::Injected);
    assert!(admitted.warnings.is_empty(), "{:?}", admitted.warnings);
    assert_eq!(
        ops(&admitted.patch),
        vec![
            op("add", "/spec/template/spec/shareProcessNamespace"),
            op("add", "/spec/template/spec/containers/-"),
            op("add", "/spec/template/metadata/annotations"),
        ]
    );
    golden("web.patch.json", &admitted.patch);

    let patched = &admitted.patched;
    assert_eq!(
        patched.pointer("/spec/template/spec/shareProcessNamespace"),
        Some(&json!(true))
    );
    let containers = patched
        .pointer("/spec/template/spec/containers")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(
        containers
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["app", "metrics", "obi"]
    );
    let obi = sidecar(patched);
    assert_eq!(obi["image"], "obi-sidecar:latest");
    assert_eq!(
        env(obi),
        strings(&[
            ("OBI_K8S_POD_NAME", "fieldRef:metadata.name"),
            ("OBI_K8S_POD_UID", "fieldRef:metadata.uid"),
            ("OBI_K8S_NODE_NAME", "fieldRef:spec.nodeName"),
            ("OBI_K8S_POD_IP", "fieldRef:status.podIP"),
            ("OTEL_SERVICE_NAME", "web-frontend"),
            ("OTEL_EBPF_OPEN_PORT", "8080,8443,9090"),
            (
                "OTEL_EBPF_K8S_CONTAINER_PORTS",
                "app=8080,8443;metrics=8080,9090"
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://otel-collector.observability:4318"
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.namespace.name=shop,k8s.deployment.name=web,k8s.pod.name=$(OBI_K8S_POD_NAME),\
                 k8s.pod.uid=$(OBI_K8S_POD_UID),k8s.node.name=$(OBI_K8S_NODE_NAME)",
            ),
        ])
    );
    assert_eq!(
        obi["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {
                "add": ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "NET_ADMIN"],
                "drop": ["ALL"]
            },
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": false,
            "runAsUser": 0
        })
    );
    assert_eq!(
        obi["resources"],
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}})
    );
    assert!(obi.get("restartPolicy").is_none());
    assert!(obi.get("volumeMounts").is_none());
    assert!(
        patched.pointer("/spec/template/spec/volumes").is_none(),
        "the sidecar needs no volumes"
    );
    assert_eq!(
        patched.pointer("/spec/template/spec/securityContext"),
        original.pointer("/spec/template/spec/securityContext")
    );

    let status = status(patched);
    assert_eq!(status.placement.field(), "containers");
    assert_eq!(status.original_share_process_namespace, None);
    assert!(status.hash.starts_with("sha256:") && status.hash.len() == 71);
    vec![admitted.patched]
}

/// No ports: the sidecar instruments every process; the name falls back to the Deployment's.
fn no_ports() -> Vec<Value> {
    let mut without_endpoint = defaults();
    without_endpoint.otlp_endpoint = None;
    let admitted = admit_as(&deployment("no-ports"), "CREATE", &without_endpoint);
    assert_eq!(admitted.outcome, Outcome::Injected);
    assert_eq!(
        ops(&admitted.patch),
        vec![
            op("add", "/spec/template/spec/shareProcessNamespace"),
            op("add", "/spec/template/spec/containers/-"),
            op(
                "add",
                "/spec/template/metadata/annotations/obi-injection~1status"
            ),
        ]
    );
    let obi = sidecar(&admitted.patched);
    let names: Vec<String> = env(obi).into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "OBI_K8S_POD_NAME",
            "OBI_K8S_POD_UID",
            "OBI_K8S_NODE_NAME",
            "OBI_K8S_POD_IP",
            "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES"
        ]
    );
    assert_eq!(
        env_value(obi, "OTEL_SERVICE_NAME").as_deref(),
        Some("worker")
    );
    assert_eq!(
        admitted
            .patched
            .pointer("/spec/template/metadata/annotations/example.com~1owner"),
        Some(&json!("team-a")),
        "other annotations are kept"
    );
    vec![admitted.patched]
}

/// Init containers' ports are not the app's; an explicit `shareProcessNamespace: true` is kept
/// and remembered, so opting out later leaves it in place.
fn init_containers() -> Vec<Value> {
    let original = deployment("init-containers");
    let admitted = admit(&original);
    assert_eq!(admitted.outcome, Outcome::Injected);
    assert_eq!(
        ops(&admitted.patch),
        vec![
            op("add", "/spec/template/spec/containers/-"),
            op("add", "/spec/template/metadata/annotations")
        ]
    );
    let obi = sidecar(&admitted.patched);
    assert_eq!(
        env_value(obi, "OTEL_EBPF_OPEN_PORT").as_deref(),
        Some("3000")
    );
    assert_eq!(
        env_value(obi, "OTEL_EBPF_K8S_CONTAINER_PORTS").as_deref(),
        Some("api=3000")
    );
    assert_eq!(
        admitted
            .patched
            .pointer("/spec/template/spec/initContainers"),
        original.pointer("/spec/template/spec/initContainers")
    );
    assert_eq!(
        status(&admitted.patched).original_share_process_namespace,
        Some(true)
    );

    let mut opted_out = admitted.patched.clone();
    annotate(&mut opted_out, TEMPLATE, "obi-injection/inject", "false");
    let removed = admit_as(&opted_out, "UPDATE", &defaults());
    assert_eq!(removed.outcome, Outcome::Removed);
    let mut expected = original.clone();
    annotate(&mut expected, TEMPLATE, "obi-injection/inject", "false");
    assert_eq!(
        removed.patched, expected,
        "removal restores the original template exactly"
    );
    vec![admitted.patched, removed.patched]
}

/// A user container already named `obi`: left alone, with a warning.
fn existing_obi_container() -> Vec<Value> {
    let admitted = admit(&deployment("existing-obi"));
    assert_eq!(admitted.outcome, Outcome::Skipped(SkipReason::NameConflict));
    assert!(admitted.patch.is_empty());
    assert_eq!(admitted.warnings.len(), 1);
    assert!(
        admitted.warnings[0].contains("already has a container named \"obi\""),
        "{:?}",
        admitted.warnings
    );
    Vec::new()
}

/// Changing the app's ports re-derives the sidecar: one replace, new status, nothing else.
fn ports_change_is_followed() -> Vec<Value> {
    let injected = admit(&deployment("web")).patched;
    let mut changed = injected.clone();
    set(
        &mut changed,
        "/spec/template/spec/containers/0/ports",
        json!([{"containerPort": 8081, "name": "http"}]),
    );
    let updated = admit_as(&changed, "UPDATE", &defaults());
    assert_eq!(updated.outcome, Outcome::Updated);
    assert_eq!(
        ops(&updated.patch),
        vec![
            op("replace", "/spec/template/spec/containers/2"),
            op("add", STATUS_POINTER)
        ]
    );
    let obi = sidecar(&updated.patched);
    assert_eq!(
        env_value(obi, "OTEL_EBPF_OPEN_PORT").as_deref(),
        Some("8080,8081,9090")
    );
    assert_eq!(
        env_value(obi, "OTEL_EBPF_K8S_CONTAINER_PORTS").as_deref(),
        Some("app=8081;metrics=8080,9090")
    );
    assert_ne!(status(&updated.patched).hash, status(&injected).hash);
    vec![updated.patched]
}

/// Opting out after injection removes everything the webhook added, from the template or the
/// Deployment annotation.
fn opt_out_after_injection() -> Vec<Value> {
    let original = deployment("web");
    let injected = admit(&original).patched;
    let mut produced = Vec::new();
    for on in [TEMPLATE, DEPLOYMENT] {
        let mut opted_out = injected.clone();
        annotate(&mut opted_out, on, "obi-injection/inject", "false");
        let removed = admit_as(&opted_out, "UPDATE", &defaults());
        assert_eq!(removed.outcome, Outcome::Removed, "opt-out on {on:?}");
        let mut expected = original.clone();
        annotate(&mut expected, on, "obi-injection/inject", "false");
        assert_eq!(
            removed.patched, expected,
            "opt-out on {on:?} restores the original"
        );
        produced.push(removed.patched);
    }
    produced
}

/// Opt-out before injection; the template's annotation wins over the Deployment's.
fn opt_out_and_precedence() -> Vec<Value> {
    let mut opted_out = deployment("web");
    annotate(&mut opted_out, DEPLOYMENT, "obi-injection/inject", "false");
    let skipped = admit(&opted_out);
    assert_eq!(skipped.outcome, Outcome::Skipped(SkipReason::OptedOut));
    assert!(skipped.patch.is_empty() && skipped.warnings.is_empty());

    annotate(&mut opted_out, TEMPLATE, "obi-injection/inject", "true");
    let injected = admit(&opted_out);
    assert_eq!(injected.outcome, Outcome::Injected, "the template wins");
    vec![injected.patched]
}

/// `shareProcessNamespace: false` is respected, with a warning; set after injection, it removes
/// the sidecar and stays false.
fn share_process_namespace_false() -> Vec<Value> {
    let mut explicit = deployment("web");
    set(
        &mut explicit,
        "/spec/template/spec/shareProcessNamespace",
        json!(false),
    );
    let skipped = admit(&explicit);
    assert_eq!(
        skipped.outcome,
        Outcome::Skipped(SkipReason::ShareProcessNamespaceDisabled)
    );
    assert!(skipped.patch.is_empty());
    assert_eq!(skipped.warnings.len(), 1);
    assert!(
        skipped.warnings[0].contains("shareProcessNamespace: false"),
        "{:?}",
        skipped.warnings
    );

    let mut injected = admit(&deployment("web")).patched;
    set(
        &mut injected,
        "/spec/template/spec/shareProcessNamespace",
        json!(false),
    );
    let removed = admit_as(&injected, "UPDATE", &defaults());
    assert_eq!(removed.outcome, Outcome::Removed);
    assert_eq!(removed.patched, explicit);
    assert_eq!(removed.warnings.len(), 1);

    // Opted out as well: the user's `false` is kept, and no warning (nothing was asked for).
    annotate(&mut injected, TEMPLATE, "obi-injection/inject", "false");
    let opted_out = admit_as(&injected, "UPDATE", &defaults());
    assert_eq!(opted_out.outcome, Outcome::Removed);
    assert!(opted_out.warnings.is_empty(), "{:?}", opted_out.warnings);
    assert_eq!(
        opted_out
            .patched
            .pointer("/spec/template/spec/shareProcessNamespace"),
        Some(&json!(false))
    );
    vec![removed.patched, opted_out.patched]
}

/// `native-sidecar: "true"`: an init container with `restartPolicy: Always`, appended after the
/// user's init containers; switching back moves it to `containers`.
fn native_sidecar() -> Vec<Value> {
    let mut native = deployment("web");
    annotate(
        &mut native,
        TEMPLATE,
        "obi-injection/native-sidecar",
        "true",
    );
    let admitted = admit(&native);
    assert_eq!(
        ops(&admitted.patch),
        vec![
            op("add", "/spec/template/spec/shareProcessNamespace"),
            op("add", "/spec/template/spec/initContainers"),
            op("add", STATUS_POINTER),
        ]
    );
    let obi = container(&admitted.patched, "initContainers", "obi").expect("native sidecar");
    assert_eq!(obi["restartPolicy"], "Always");
    assert!(container(&admitted.patched, "containers", "obi").is_none());
    assert_eq!(
        status(&admitted.patched).placement.field(),
        "initContainers"
    );

    let mut with_init = deployment("init-containers");
    annotate(
        &mut with_init,
        TEMPLATE,
        "obi-injection/native-sidecar",
        "true",
    );
    let appended = admit(&with_init);
    let names: Vec<&str> = appended
        .patched
        .pointer("/spec/template/spec/initContainers")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["migrate", "proxy", "obi"]);

    let mut switched = admitted.patched.clone();
    annotate(
        &mut switched,
        TEMPLATE,
        "obi-injection/native-sidecar",
        "false",
    );
    let moved = admit_as(&switched, "UPDATE", &defaults());
    assert_eq!(moved.outcome, Outcome::Updated);
    assert_eq!(
        ops(&moved.patch),
        vec![
            op("remove", "/spec/template/spec/initContainers"),
            op("add", "/spec/template/spec/containers/-"),
            op("add", STATUS_POINTER),
        ]
    );
    assert!(sidecar(&moved.patched).get("restartPolicy").is_none());
    vec![admitted.patched, appended.patched, moved.patched]
}

/// Every override annotation at once (on both levels), and no warnings.
fn override_annotations() -> Vec<Value> {
    let mut object = deployment("web");
    for (key, value) in [
        ("obi-injection/image", "registry.local/obi:2.0"),
        ("obi-injection/open-port", "8000-8099, 80"),
        ("obi-injection/service-name", "storefront"),
        (
            "obi-injection/otlp-endpoint",
            "https://collector.example:4318",
        ),
        ("obi-injection/cpu-request", "25m"),
        ("obi-injection/memory-request", "48Mi"),
        ("obi-injection/memory-limit", "96Mi"),
        (
            "obi-injection/env.OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/protobuf",
        ),
        ("obi-injection/env.OTEL_EBPF_OPEN_PORT", "443"),
    ] {
        annotate(&mut object, TEMPLATE, key, value);
    }
    annotate(
        &mut object,
        DEPLOYMENT,
        "obi-injection/env.OTEL_TRACES_SAMPLER",
        "always_on",
    );
    let admitted = admit(&object);
    assert!(admitted.warnings.is_empty(), "{:?}", admitted.warnings);
    let obi = sidecar(&admitted.patched);
    assert_eq!(obi["image"], "registry.local/obi:2.0");
    assert_eq!(
        obi["resources"],
        json!({"requests": {"cpu": "25m", "memory": "48Mi"}, "limits": {"memory": "96Mi"}})
    );
    let env = env(obi);
    let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(get("OTEL_SERVICE_NAME"), Some("storefront"));
    assert_eq!(
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("https://collector.example:4318")
    );
    assert_eq!(
        get("OTEL_EBPF_OPEN_PORT"),
        Some("443"),
        "an env annotation replaces the derived value"
    );
    assert_eq!(get("OTEL_EXPORTER_OTLP_PROTOCOL"), Some("http/protobuf"));
    assert_eq!(get("OTEL_TRACES_SAMPLER"), Some("always_on"));
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[names.len() - 2..],
        ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_SAMPLER"],
        "extras sorted, last"
    );

    // The open-port annotation alone (without the env override) is validated and normalised.
    let mut ports_only = deployment("web");
    annotate(
        &mut ports_only,
        TEMPLATE,
        "obi-injection/open-port",
        "8000-8099, 80",
    );
    let admitted_ports = admit(&ports_only);
    assert_eq!(
        env_value(sidecar(&admitted_ports.patched), "OTEL_EBPF_OPEN_PORT").as_deref(),
        Some("80,8000-8099")
    );
    vec![admitted.patched, admitted_ports.patched]
}

/// `obi-injection/capture-mode` sets the sidecar's mode and grants what that mode needs, no more:
/// NET_ADMIN for the pod-scoped modes (and by default), the four for the tracepoint modes.
fn capture_mode_annotation() -> Vec<Value> {
    let four = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"];
    let five = [
        "BPF",
        "PERFMON",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
        "NET_ADMIN",
    ];
    let mut patched = Vec::new();
    for (mode, caps) in [
        (None, &five[..]),
        (Some("auto"), &five[..]),
        (Some("pod"), &five[..]),
        (Some("tracepoints"), &four[..]),
        (Some("sys_exit"), &four[..]),
    ] {
        let mut object = deployment("web");
        if let Some(mode) = mode {
            annotate(&mut object, TEMPLATE, "obi-injection/capture-mode", mode);
        }
        let admitted = admit(&object);
        assert!(admitted.warnings.is_empty(), "{:?}", admitted.warnings);
        let obi = sidecar(&admitted.patched);
        assert_eq!(
            env_value(obi, "OTEL_EBPF_CAPTURE_MODE").as_deref(),
            mode,
            "{mode:?}"
        );
        assert_eq!(
            obi["securityContext"]["capabilities"],
            json!({"add": caps, "drop": ["ALL"]}),
            "{mode:?}"
        );
        patched.push(admitted.patched);
    }

    // Switching an injected Deployment to a tracepoint mode re-derives the sidecar, dropping
    // NET_ADMIN.
    let injected = admit(&deployment("web")).patched;
    let mut switched = injected.clone();
    annotate(
        &mut switched,
        TEMPLATE,
        "obi-injection/capture-mode",
        "tracepoints",
    );
    let admitted = admit_as(&switched, "UPDATE", &defaults());
    assert_eq!(admitted.outcome, Outcome::Updated);
    assert_eq!(
        sidecar(&admitted.patched)["securityContext"]["capabilities"]["add"],
        json!(four)
    );
    patched.push(admitted.patched);
    patched
}

/// Invalid values never block: defaults, one warning per annotation, named.
fn invalid_annotations() -> Vec<Value> {
    let mut object = deployment("web");
    let invalid = [
        ("obi-injection/inject", "yes"),
        ("obi-injection/native-sidecar", "1"),
        ("obi-injection/image", "not an image"),
        ("obi-injection/open-port", "80,99999"),
        ("obi-injection/service-name", ""),
        ("obi-injection/otlp-endpoint", "collector:4318"),
        ("obi-injection/cpu-request", "lots"),
        ("obi-injection/memory-request", "-5Mi"),
        ("obi-injection/memory-limit", "64MB"),
        ("obi-injection/env.PATH", "/evil"),
        ("obi-injection/env.otel_lower", "x"),
        ("obi-injection/sidecar-image", "typo"),
        ("obi-injection/capture-mode", "cgroup"),
        ("obi-injection/env.OTEL_EBPF_CAPTURE_MODE", "pod"),
    ];
    for (key, value) in invalid {
        annotate(&mut object, TEMPLATE, key, value);
    }
    let admitted = admit(&object);
    assert_eq!(admitted.outcome, Outcome::Injected);
    assert_eq!(
        admitted.warnings.len(),
        invalid.len(),
        "{:#?}",
        admitted.warnings
    );
    for (key, _) in invalid {
        assert!(
            admitted.warnings.iter().any(|w| w.starts_with(key)),
            "no warning for {key}: {:#?}",
            admitted.warnings
        );
    }
    let obi = sidecar(&admitted.patched);
    assert_eq!(obi["image"], "obi-sidecar:latest");
    assert_eq!(
        obi["resources"],
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}})
    );
    assert_eq!(
        env_value(obi, "OTEL_EBPF_OPEN_PORT").as_deref(),
        Some("8080,8443,9090")
    );
    assert_eq!(
        env_value(obi, "OTEL_SERVICE_NAME").as_deref(),
        Some("web-frontend")
    );
    assert_eq!(env_value(obi, "PATH"), None);
    assert_eq!(env_value(obi, "OTEL_EBPF_CAPTURE_MODE"), None);

    // A valid request above a valid limit would make the Deployment invalid: both fall back.
    let mut conflicting = deployment("web");
    annotate(
        &mut conflicting,
        TEMPLATE,
        "obi-injection/memory-request",
        "1Gi",
    );
    let admitted_conflict = admit(&conflicting);
    assert_eq!(admitted_conflict.warnings.len(), 1);
    assert_eq!(
        sidecar(&admitted_conflict.patched)["resources"]["requests"]["memory"],
        "32Mi"
    );
    vec![admitted.patched, admitted_conflict.patched]
}

/// `OTEL_SERVICE_NAME`: annotation, else template label, else Deployment label, else name.
fn service_name_sources() -> Vec<Value> {
    let service =
        |object: &Value| env_value(sidecar(&admit(object).patched), "OTEL_SERVICE_NAME").unwrap();
    let mut object = deployment("web");
    assert_eq!(service(&object), "web-frontend");
    set(
        &mut object,
        "/spec/template/metadata/labels",
        json!({"app": "web"}),
    );
    assert_eq!(
        service(&object),
        "web-frontend",
        "from the Deployment's label"
    );
    set(&mut object, "/metadata/labels", json!({}));
    assert_eq!(service(&object), "web", "the Deployment name");
    Vec::new()
}

/// Configuration: cluster name in the resource attributes, pull policy, image change → update.
fn configuration_changes() -> Vec<Value> {
    let mut configured = defaults();
    configured.cluster_name = Some("prod-eu".to_owned());
    configured.image_pull_policy = Some("IfNotPresent".to_owned());
    let admitted = admit_as(&deployment("web"), "CREATE", &configured);
    let obi = sidecar(&admitted.patched);
    assert_eq!(obi["imagePullPolicy"], "IfNotPresent");
    let attributes = env_value(obi, "OTEL_RESOURCE_ATTRIBUTES").unwrap();
    assert!(
        attributes.starts_with(
            "k8s.namespace.name=shop,k8s.deployment.name=web,k8s.cluster.name=prod-eu,"
        )
    );

    configured.image = "obi-sidecar:0.2".to_owned();
    let upgraded = admit_as(&admitted.patched, "UPDATE", &configured);
    assert_eq!(
        upgraded.outcome,
        Outcome::Updated,
        "a new sidecar image is a real change"
    );
    assert_eq!(sidecar(&upgraded.patched)["image"], "obi-sidecar:0.2");
    vec![admitted.patched, upgraded.patched]
}

/// The API server defaults the stored sidecar (and the app); that alone must not cause a patch.
fn defaulted_by_api_server() -> Vec<Value> {
    let injected = admit(&deployment("web")).patched;
    let mut stored = injected.clone();
    let containers = stored
        .pointer_mut("/spec/template/spec/containers")
        .unwrap()
        .as_array_mut()
        .unwrap();
    for container in containers.iter_mut() {
        let fields = container.as_object_mut().unwrap();
        fields.insert("imagePullPolicy".into(), json!("Always"));
        fields.insert(
            "terminationMessagePath".into(),
            json!("/dev/termination-log"),
        );
        fields
            .entry("terminationMessagePolicy")
            .or_insert(json!("File"));
        for var in fields
            .get_mut("env")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(field_ref) = var.pointer_mut("/valueFrom/fieldRef") {
                field_ref["apiVersion"] = json!("v1");
            }
        }
        for port in fields
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            port.as_object_mut()
                .unwrap()
                .entry("protocol")
                .or_insert(json!("TCP"));
        }
    }
    set(
        &mut stored,
        "/spec/template/spec/restartPolicy",
        json!("Always"),
    );
    set(
        &mut stored,
        "/spec/template/spec/dnsPolicy",
        json!("ClusterFirst"),
    );
    let again = admit_as(&stored, "UPDATE", &defaults());
    assert_eq!(again.outcome, Outcome::Skipped(SkipReason::UpToDate));
    assert!(again.patch.is_empty());
    vec![stored]
}

/// A template without metadata gets one; a stale or foreign status is replaced.
fn template_edge_cases() -> Vec<Value> {
    let mut bare = deployment("no-ports");
    bare["spec"]["template"]
        .as_object_mut()
        .unwrap()
        .remove("metadata");
    let admitted = admit(&bare);
    assert_eq!(
        ops(&admitted.patch).last(),
        Some(&op("add", "/spec/template/metadata"))
    );

    let mut foreign = deployment("no-ports");
    annotate(
        &mut foreign,
        TEMPLATE,
        "obi-injection/status",
        "injected-by-someone-else",
    );
    let replaced = admit(&foreign);
    assert_eq!(replaced.outcome, Outcome::Injected);
    assert_eq!(replaced.warnings.len(), 1, "{:?}", replaced.warnings);
    assert!(replaced.warnings[0].starts_with("obi-injection/status ignored"));

    // The sidecar removed by hand while the status stays: injected again.
    let mut tampered = admit(&deployment("web")).patched;
    tampered["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .pop();
    let restored = admit_as(&tampered, "UPDATE", &defaults());
    assert_eq!(restored.outcome, Outcome::Updated);
    assert_eq!(
        ops(&restored.patch),
        vec![
            op("add", "/spec/template/spec/containers/-"),
            op("add", STATUS_POINTER)
        ]
    );
    vec![admitted.patched, replaced.patched, restored.patched]
}

/// Other kinds, operations and subresources pass untouched and silently.
fn not_applicable() -> Vec<Value> {
    let object = deployment("web");
    let plain = |body: Value| {
        let reviewed = admission::review(&serde_json::to_vec(&body).unwrap(), &defaults()).unwrap();
        let answer = decode(&reviewed.body);
        assert!(
            answer.allowed && answer.patch.is_empty() && answer.warnings.is_empty(),
            "{answer:?}"
        );
        assert_eq!(
            reviewed.plan.outcome,
            Outcome::Skipped(SkipReason::NotApplicable)
        );
    };
    for operation in ["DELETE", "CONNECT"] {
        plain(review(&object, operation, false));
    }
    let mut stateful = review(&object, "CREATE", false);
    stateful["request"]["kind"]["kind"] = json!("StatefulSet");
    plain(stateful);
    let mut old_group = review(&object, "CREATE", false);
    old_group["request"]["kind"]["version"] = json!("v1beta2");
    plain(old_group);
    let mut scale = review(&object, "UPDATE", false);
    scale["request"]["subResource"] = json!("scale");
    plain(scale);
    Vec::new()
}

/// Objects that cannot be handled: allowed unchanged, with a warning (fail open).
fn fail_open() -> Vec<Value> {
    let mut broken = deployment("web");
    set(
        &mut broken,
        "/spec/template/spec/containers",
        json!("not a list"),
    );
    let mut no_template = deployment("web");
    no_template["spec"]
        .as_object_mut()
        .unwrap()
        .remove("template");
    let mut no_object = review(&deployment("web"), "CREATE", false);
    no_object["request"]["object"] = Value::Null;
    let mut no_spec = deployment("web");
    no_spec["spec"]["template"]
        .as_object_mut()
        .unwrap()
        .remove("spec");
    let bodies = [
        review(&broken, "CREATE", false),
        review(&no_template, "CREATE", false),
        no_object,
        review(&no_spec, "CREATE", false),
    ];
    for body in bodies {
        let reviewed = admission::review(&serde_json::to_vec(&body).unwrap(), &defaults()).unwrap();
        let answer = decode(&reviewed.body);
        assert_eq!(reviewed.plan.outcome, Outcome::Failed);
        assert!(answer.allowed && answer.patch.is_empty());
        assert_eq!(answer.warnings.len(), 1);
        assert!(
            answer.warnings[0].starts_with("obi-injection: sidecar not injected: "),
            "{:?}",
            answer.warnings
        );
    }
    Vec::new()
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[(&str, fn() -> Vec<Value>)] = &[$((stringify!($name), $name)),*];
        mod scenario {
            $(#[test] fn $name() { super::$name(); })*
        }
    };
}

scenarios!(
    multiple_containers,
    no_ports,
    init_containers,
    existing_obi_container,
    ports_change_is_followed,
    opt_out_after_injection,
    opt_out_and_precedence,
    share_process_namespace_false,
    native_sidecar,
    override_annotations,
    capture_mode_annotation,
    invalid_annotations,
    service_name_sources,
    configuration_changes,
    defaulted_by_api_server,
    template_edge_cases,
    not_applicable,
    fail_open,
);

/// Bodies that are not AdmissionReviews are errors (HTTP 400 at the server).
#[test]
fn rejects_what_is_not_an_admission_review() {
    let object = deployment("web");
    let mut v1beta1 = review(&object, "CREATE", false);
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_request = review(&object, "CREATE", false);
    no_request.as_object_mut().unwrap().remove("request");
    let mut bad_operation = review(&object, "CREATE", false);
    bad_operation["request"]["operation"] = json!("PATCH");
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"[]".to_vec(),
        serde_json::to_vec(&object).unwrap(),
        serde_json::to_vec(&v1beta1).unwrap(),
        serde_json::to_vec(&no_request).unwrap(),
        serde_json::to_vec(&bad_operation).unwrap(),
    ];
    for body in bodies {
        let error = admission::review(&body, &defaults()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("request body is not an admission.k8s.io/v1 AdmissionReview"),
            "{error}"
        );
    }
}

/// The demo's sample review carries the sample Deployment.
#[test]
fn sample_review_matches_the_sample_deployment() {
    let text = std::fs::read_to_string(testdata("admission-review.json")).unwrap();
    let review: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(review["request"]["object"], deployment("web"));
    let reviewed = admission::review(text.as_bytes(), &defaults()).unwrap();
    assert_eq!(reviewed.plan.outcome, Outcome::Injected);
}

/// Every patched Deployment validates against the official schema (strict: no unknown fields).
#[test]
fn patched_deployments_validate_against_the_kubernetes_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, scenario) in SCENARIOS {
        for (index, object) in scenario().into_iter().enumerate() {
            // JSON (a subset of YAML) avoids YAML 1.1 surprises such as `yes` read as a boolean.
            let path = dir.path().join(format!("{name}-{index}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&object).unwrap()).unwrap();
            files.push(path);
        }
    }
    assert!(
        files.len() >= 20,
        "only {} objects to validate",
        files.len()
    );
    let output = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--kubernetes-version", SCHEMA_VERSION])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); install Python 3 and `pip install kubernetes-validate==1.33.1`"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named kubernetes_validate"),
        "kubernetes-validate is missing: `pip install kubernetes-validate==1.33.1` (or `make setup`)"
    );
    assert!(
        output.status.success(),
        "schema validation failed:\n{stdout}\n{stderr}"
    );
    let valid = stdout
        .lines()
        .filter(|line| line.starts_with("INFO") && line.contains("passed"))
        .count();
    assert_eq!(
        valid,
        files.len(),
        "every file must be reported valid:\n{stdout}\n{stderr}"
    );
}

/// Compares `patch` with `testdata/expected/<name>`; `UPDATE_GOLDEN=1` rewrites the file.
fn golden(name: &str, patch: &[Value]) {
    let path = testdata(&format!("expected/{name}"));
    let actual = serde_json::to_string_pretty(patch).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "patch differs from {} (UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}
