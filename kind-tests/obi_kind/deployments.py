"""Reading injected Deployments as kubectl returns them (`-o json`): pure functions, no cluster."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SIDECAR_CONTAINER = "obi"
ANNOTATION_PREFIX = "obi-injection/"
OPT_OUT_ANNOTATION = ANNOTATION_PREFIX + "inject"
STATUS_ANNOTATION = ANNOTATION_PREFIX + "status"
OPEN_PORT_ENV = "OTEL_EBPF_OPEN_PORT"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    return _mapping(_mapping(obj.get("metadata")).get("annotations"))


def pod_template(deployment: dict[str, Any]) -> dict[str, Any]:
    return _mapping(_mapping(deployment.get("spec")).get("template"))


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return _mapping(pod_template(deployment).get("spec"))


def template_annotations(deployment: dict[str, Any]) -> dict[str, str]:
    """The pod template's annotations, where the webhook records its injection status."""
    return annotations(pod_template(deployment))


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """App containers, then init containers: the webhook may inject a native sidecar (an init
    container that keeps running) instead of a plain one."""
    spec = pod_spec(deployment)
    listed = _list(spec.get("containers")) + _list(spec.get("initContainers"))
    return [c for c in listed if isinstance(c, dict)]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in containers(deployment) if c.get("name") == name), None)


def env_value(container_spec: dict[str, Any], name: str) -> str | None:
    """The literal value of an environment variable (None if absent or taken from elsewhere)."""
    for entry in _list(container_spec.get("env")):
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get("value")
            return value if isinstance(value, str) else None
    return None


def is_injected(deployment: dict[str, Any]) -> bool:
    return container(deployment, SIDECAR_CONTAINER) is not None


def opted_out(deployment: dict[str, Any]) -> bool:
    """`obi-injection/inject: "false"` on the pod template or else on the Deployment (the
    webhook's order of precedence)."""
    value = template_annotations(deployment).get(OPT_OUT_ANNOTATION)
    if value is None:
        value = annotations(deployment).get(OPT_OUT_ANNOTATION, "")
    return value.strip().lower() == "false"


def missing_sidecar(deployments: Iterable[dict[str, Any]]) -> list[str]:
    """Names of the Deployments that should carry the sidecar and do not (opted-out ones excluded)."""
    return sorted(
        _mapping(d.get("metadata")).get("name", "?")
        for d in deployments
        if not is_injected(d) and not opted_out(d)
    )


def parse_port_list(text: str) -> frozenset[int]:
    """The ports of an OTEL_EBPF_OPEN_PORT value such as `80,8080` or `8000-8002,9090`."""
    ports: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        start_text, _, end_text = item.partition("-")
        try:
            start = int(start_text)
            end = int(end_text) if end_text else start
        except ValueError as error:
            raise ValueError(f"{item!r} is not a port or a port range") from error
        if not 1 <= start <= end <= 65535:
            raise ValueError(f"{item!r} is not a port range within 1-65535")
        ports.update(range(start, end + 1))
    return frozenset(ports)


def open_ports(deployment: dict[str, Any]) -> frozenset[int] | None:
    """The ports the injected sidecar watches; None when there is no sidecar or no such variable."""
    sidecar = container(deployment, SIDECAR_CONTAINER)
    value = env_value(sidecar, OPEN_PORT_ENV) if sidecar is not None else None
    return parse_port_list(value) if value is not None else None


@dataclass(frozen=True)
class RolloutState:
    """What tells two observations of a Deployment apart: its spec generation, its current
    revision and the ReplicaSets it owns. A rollout creates a ReplicaSet and bumps the revision."""

    generation: int
    revision: str
    replicasets: frozenset[str]


def rollout_state(deployment: dict[str, Any], replicasets: Iterable[dict[str, Any]]) -> RolloutState:
    metadata = _mapping(deployment.get("metadata"))
    uid = metadata.get("uid")
    owned = frozenset(
        _mapping(rs.get("metadata")).get("name", "")
        for rs in replicasets
        if any(
            isinstance(ref, dict) and ref.get("uid") == uid
            for ref in _list(_mapping(rs.get("metadata")).get("ownerReferences"))
        )
    )
    generation = metadata.get("generation")
    return RolloutState(
        generation=generation if isinstance(generation, int) else 0,
        revision=annotations(deployment).get(REVISION_ANNOTATION, ""),
        replicasets=owned,
    )


def rolled_out(before: RolloutState, after: RolloutState) -> bool:
    """Whether a new rollout happened between two observations. A missing revision (the
    controller has not annotated yet) is not a change."""
    revision_changed = bool(before.revision and after.revision and before.revision != after.revision)
    return revision_changed or bool(after.replicasets - before.replicasets)


def controller_caught_up(deployment: dict[str, Any]) -> bool:
    """The Deployment controller has processed the latest spec (and so created its ReplicaSet)."""
    generation = _mapping(deployment.get("metadata")).get("generation")
    observed = _mapping(deployment.get("status")).get("observedGeneration")
    return isinstance(generation, int) and isinstance(observed, int) and observed >= generation
