"""The demo of `make kind-up`: traffic through frontend and backend reaches the collector as spans
whose resources carry k8s.* attributes."""

from __future__ import annotations

from obi_kind.kubectl import Kubectl, wait_for
from obi_kind.spans import ResourceSpans, parse_debug_output, spans_with_k8s_attributes

DEMO = "obi-demo"
SERVICES = {"frontend", "backend"}


def demo_spans(kube: Kubectl) -> list[ResourceSpans] | None:
    batches = parse_debug_output(kube.logs("deployment/otel-collector", DEMO).splitlines())
    found = [
        b for b in spans_with_k8s_attributes(batches, DEMO)
        if (b.attributes.get("k8s.deployment.name") or b.attributes.get("service.name")) in SERVICES
    ]
    # Wait until both services have reported.
    reported = {b.attributes.get("k8s.deployment.name") or b.attributes.get("service.name") for b in found}
    return found if reported == SERVICES else None


def test_demo_traffic_produces_spans_with_k8s_attributes(kube: Kubectl) -> None:
    # loadgen requests the frontend every 2 s; the sidecars batch and export within seconds.
    found = wait_for(lambda: demo_spans(kube), timeout=180, interval=5)
    assert found, "no spans from frontend and backend with k8s.namespace.name=obi-demo at the collector"
    for batch in found:
        k8s = batch.k8s_attributes()
        assert k8s["k8s.namespace.name"] == DEMO
        assert len(k8s) >= 2, f"only {k8s} as k8s.* attributes"
        assert any(span.name for span in batch.spans)
