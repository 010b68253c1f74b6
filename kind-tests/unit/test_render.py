"""Objects the kind tests create and the kind overlay, rendered and checked for real: strict
schema validation, and kustomize building the overlay on top of the demo."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support import find

from obi_kind.deployments import container, env_value
from obi_kind.manifests import build, validate_object
from obi_kind.render import kind_overlay, namespace, sample_deployment, to_yaml


def test_namespaces() -> None:
    labelled = namespace("on", injection=True)
    plain = namespace("off", injection=False)
    assert labelled["metadata"]["labels"] == {"obi-injection": "enabled"}
    assert plain["metadata"]["labels"] == {}
    assert validate_object(labelled) == [] and validate_object(plain) == []


def test_sample_deployment_is_valid_and_declares_its_ports() -> None:
    sample = sample_deployment("web", "ns", [8080, 9090])
    assert validate_object(sample) == []
    app = container(sample, "app")
    assert app is not None
    assert [p["containerPort"] for p in app["ports"]] == [8080, 9090]
    assert app["command"][-1] == "8080"
    assert "annotations" not in sample["metadata"]


def test_sample_deployment_opt_out() -> None:
    sample = sample_deployment("web", "ns", [8080], opt_out=True)
    assert sample["metadata"]["annotations"] == {"obi-injection/inject": "false"}
    assert validate_object(sample) == []


def test_sample_deployment_needs_a_port() -> None:
    with pytest.raises(ValueError):
        sample_deployment("web", "ns", [])


def test_same_input_renders_the_same_yaml() -> None:
    # kubectl apply of identical YAML must be a no-op: rendering is deterministic.
    first = to_yaml([sample_deployment("web", "ns", [8080])])
    assert first == to_yaml([sample_deployment("web", "ns", [8080])])
    assert list(yaml.safe_load_all(first)) == [sample_deployment("web", "ns", [8080])]


def test_multiline_strings_render_as_blocks() -> None:
    text = to_yaml([{"data": {"script": "line one\nline two\n"}}])
    assert "script: |\n    line one\n    line two\n" in text
    assert yaml.safe_load(text) == {"data": {"script": "line one\nline two\n"}}


@pytest.mark.parametrize("version", ["", "-dirty", "a" * 129, "v1/2", "tag with space"])
def test_kind_overlay_rejects_bad_tags(version: str) -> None:
    with pytest.raises(ValueError):
        kind_overlay(version, "../demo", "obi")


def test_kind_overlay_builds_on_the_demo(manifests: Path) -> None:
    out = manifests / "kind"
    out.mkdir()
    (out / "kustomization.yaml").write_text(to_yaml([kind_overlay("0bf1c53-dirty", "../demo", "obi")]))
    objects = build(out)
    problems = [p for obj in objects for p in validate_object(obj)]
    assert problems == []
    deployment = find(objects, "Deployment", "obi-webhook")
    webhook = container(deployment, "webhook")
    assert webhook is not None
    assert webhook["image"] == "obi-webhook:0bf1c53-dirty"
    assert env_value(webhook, "OBI_WEBHOOK_SIDECAR_IMAGE") == "obi-sidecar:0bf1c53-dirty"
    assert env_value(webhook, "OBI_WEBHOOK_CLUSTER_NAME") == "obi"
    # The demo's own settings survive the patch.
    assert env_value(webhook, "OBI_WEBHOOK_OTLP_ENDPOINT") == "http://otel-collector.obi-demo.svc.cluster.local:4318"
    # Only the webhook image is retagged; the demo's public images are untouched.
    images = {c["image"] for o in objects if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"obi-webhook:0bf1c53-dirty", "python:3.13-alpine3.21", "otel/opentelemetry-collector:0.120.0"}
    # Phase one of kind-up applies `-l app.kubernetes.io/part-of=obi`: all of the webhook, none of the demo.
    phase_one = {(o["kind"], o["metadata"]["name"]) for o in objects
                 if o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "obi"}
    assert phase_one == {
        ("Namespace", "obi-system"), ("ServiceAccount", "obi-webhook"), ("Secret", "obi-webhook-tls"),
        ("Service", "obi-webhook"), ("Deployment", "obi-webhook"), ("PodDisruptionBudget", "obi-webhook"),
        ("MutatingWebhookConfiguration", "obi-webhook"),
    }
