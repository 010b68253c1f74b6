"""Injection by the webhook running in kind: who gets the sidecar, opt-out, idempotence, ports."""

from __future__ import annotations

from cluster import observed_state, settled

from obi_kind.deployments import (
    SIDECAR_CONTAINER,
    STATUS_ANNOTATION,
    container,
    containers,
    env_value,
    is_injected,
    open_ports,
    rolled_out,
    template_annotations,
)
from obi_kind.kubectl import Kubectl
from obi_kind.render import sample_deployment


def test_injects_in_labelled_namespace_only(kube: Kubectl, labelled: str, unlabelled: str) -> None:
    kube.apply([sample_deployment("web", labelled, [8080]), sample_deployment("web", unlabelled, [8080])])

    injected = settled(kube, "web", labelled)
    assert is_injected(injected)
    assert STATUS_ANNOTATION in template_annotations(injected)
    sidecar = container(injected, SIDECAR_CONTAINER)
    assert sidecar is not None
    for name in ("OTEL_EBPF_OPEN_PORT", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES"):
        assert name in {e["name"] for e in sidecar.get("env", [])}, f"sidecar lacks {name}"
    resource = env_value(sidecar, "OTEL_RESOURCE_ATTRIBUTES") or ""
    assert f"k8s.namespace.name={labelled}" in resource.split(",")
    assert any(item.startswith("k8s.deployment.name=web") for item in resource.split(","))

    untouched = settled(kube, "web", unlabelled)
    assert not is_injected(untouched)
    assert STATUS_ANNOTATION not in template_annotations(untouched)


def test_opt_out_removes_an_earlier_injection(kube: Kubectl, labelled: str) -> None:
    kube.apply([sample_deployment("web", labelled, [8080])])
    assert is_injected(settled(kube, "web", labelled))

    kube.apply([sample_deployment("web", labelled, [8080], opt_out=True)])
    opted_out = settled(kube, "web", labelled)
    assert not is_injected(opted_out)
    assert [c["name"] for c in containers(opted_out)] == ["app"]
    assert STATUS_ANNOTATION not in template_annotations(opted_out)


def test_reapplying_the_same_deployment_causes_no_rollout(kube: Kubectl, labelled: str) -> None:
    sample = sample_deployment("web", labelled, [8080])
    kube.apply([sample])
    before = observed_state(kube, "web", labelled)
    # Server-side apply sends the unchanged manifest through admission again (a plain
    # `kubectl apply` of an unchanged file would not even reach the API server): the webhook
    # must converge on the same pod template, or every GitOps sync would roll the app out.
    kube.apply([sample], server_side=True)
    kube.apply([sample], server_side=True)
    kube.apply([sample])
    after = observed_state(kube, "web", labelled)
    assert not rolled_out(before, after), f"{before} -> {after}"
    assert after.generation == before.generation


def test_changing_ports_updates_open_port(kube: Kubectl, labelled: str) -> None:
    kube.apply([sample_deployment("web", labelled, [8080])])
    assert open_ports(settled(kube, "web", labelled)) == {8080}
    before = observed_state(kube, "web", labelled)

    kube.apply([sample_deployment("web", labelled, [9090, 9091])])
    changed = settled(kube, "web", labelled)
    assert open_ports(changed) == {9090, 9091}
    assert rolled_out(before, observed_state(kube, "web", labelled))
