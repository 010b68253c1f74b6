"""Waiting on the cluster's Deployment controller."""

from __future__ import annotations

from typing import Any

from obi_kind.deployments import RolloutState, controller_caught_up, rollout_state
from obi_kind.kubectl import Kubectl, wait_for


def settled(kube: Kubectl, name: str, namespace_name: str, timeout: float = 60) -> dict[str, Any]:
    """The Deployment once its controller has processed the current spec."""
    deployment = wait_for(
        lambda: (d if (d := kube.get("deployment", name, namespace_name)) and controller_caught_up(d) else None),
        timeout,
    )
    assert deployment is not None, f"deployment {namespace_name}/{name} was not processed within {timeout}s"
    return deployment


def observed_state(kube: Kubectl, name: str, namespace_name: str) -> RolloutState:
    deployment = settled(kube, name, namespace_name)
    return rollout_state(deployment, kube.list("replicasets", namespace_name))
