"""failurePolicy Ignore: with the webhook stopped, Deployments are still admitted (without the
sidecar). Runs last (file order): it scales the webhook down and restores it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from cluster import settled

from obi_kind.deployments import is_injected
from obi_kind.kubectl import Kubectl, wait_for
from obi_kind.render import sample_deployment

SYSTEM = "obi-system"


@pytest.fixture
def webhook_stopped(kube: Kubectl) -> Iterator[None]:
    deployment = kube.get("deployment", "obi-webhook", SYSTEM)
    assert deployment is not None, "the webhook Deployment is missing"
    original = deployment["spec"]["replicas"]
    kube.scale("deployment", "obi-webhook", SYSTEM, 0)
    try:
        gone = wait_for(
            lambda: True if not kube.list("pods", SYSTEM, "app.kubernetes.io/name=obi-webhook") else None,
            timeout=120,
        )
        assert gone, "webhook pods did not stop"
        yield
    finally:
        kube.scale("deployment", "obi-webhook", SYSTEM, original)
        kube.rollout_status("obi-webhook", SYSTEM)


def test_stopped_webhook_does_not_block_deployments(kube: Kubectl, labelled: str, webhook_stopped: None) -> None:
    started = time.monotonic()
    kube.apply([sample_deployment("web", labelled, [8080])])
    elapsed = time.monotonic() - started
    # timeoutSeconds is 5; with no endpoint the API server fails fast and admits the object.
    assert elapsed < 15, f"admission took {elapsed:.1f}s"
    assert not is_injected(settled(kube, "web", labelled))
