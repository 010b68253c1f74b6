//! Any bytes through the admission path: never a panic, and for every review that gets a patch,
//! the patch applies to the object and reviewing the patched object again gives no patch.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use obi_webhook::admission;
use obi_webhook::settings::{InjectionDefaults, SidecarResources};
use serde_json::Value;

fn defaults() -> &'static InjectionDefaults {
    static DEFAULTS: OnceLock<InjectionDefaults> = OnceLock::new();
    DEFAULTS.get_or_init(|| InjectionDefaults {
        image: "obi-sidecar:latest".to_owned(),
        image_pull_policy: None,
        otlp_endpoint: Some("http://collector:4318".to_owned()),
        cluster_name: Some("fuzz".to_owned()),
        resources: SidecarResources {
            cpu_request: "10m".parse().expect("valid quantity"),
            memory_request: "32Mi".parse().expect("valid quantity"),
            memory_limit: "64Mi".parse().expect("valid quantity"),
        },
    })
}

fuzz_target!(|data: &[u8]| {
    // Raw bytes: any answer is fine, a panic is not.
    let _ = admission::review(data, defaults());

    // The idempotence property is checked on canonical JSON, as the API server sends it
    // (no duplicate keys, which the typed and untyped views of an object would read differently).
    let Ok(mut review) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let canonical = serde_json::to_vec(&review).expect("a Value serialises");
    let Ok(first) = admission::review(&canonical, defaults()) else {
        return;
    };
    let answer: Value = serde_json::from_slice(&first.body).expect("the answer is JSON");
    assert_eq!(
        answer["response"]["allowed"],
        Value::Bool(true),
        "the webhook never denies"
    );
    if first.plan.patch.0.is_empty() {
        return;
    }
    let object = &mut review["request"]["object"];
    json_patch::patch(object, &first.plan.patch).expect("the patch applies to the object");
    review["request"]["operation"] = Value::from("UPDATE");
    let patched = serde_json::to_vec(&review).expect("a Value serialises");
    let second = admission::review(&patched, defaults()).expect("the patched review still decodes");
    assert!(
        second.plan.patch.0.is_empty(),
        "not idempotent: {:?} after {:?}",
        second.plan.patch,
        first.plan.patch
    );
});
