"""Interpreting kubectl's JSON for Deployments: injection, opt-out, ports, rollouts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from obi_kind.deployments import (
    RolloutState,
    container,
    controller_caught_up,
    env_value,
    is_injected,
    missing_sidecar,
    open_ports,
    opted_out,
    parse_port_list,
    rolled_out,
    rollout_state,
    template_annotations,
)


def deployment(name: str = "web", *, sidecar_env: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
               generation: int = 1, observed: int | None = 1, revision: str = "1", uid: str = "uid-web") -> dict[str, Any]:
    containers: list[dict[str, Any]] = [{"name": "app", "image": "python", "env": [{"name": "A", "value": "1"}]}]
    if sidecar_env is not None:
        containers.append({"name": "obi", "image": "obi-sidecar:dev",
                           "env": [{"name": k, "value": v} for k, v in sidecar_env.items()]})
    status = {} if observed is None else {"observedGeneration": observed}
    return {
        "metadata": {"name": name, "uid": uid, "generation": generation,
                     "annotations": {"deployment.kubernetes.io/revision": revision, **(annotations or {})}},
        "spec": {"template": {"spec": {"containers": containers}}},
        "status": status,
    }


def replicaset(name: str, owner_uid: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "ownerReferences": [{"kind": "Deployment", "uid": owner_uid}]}}


def test_injection_is_the_obi_container() -> None:
    assert is_injected(deployment(sidecar_env={}))
    assert not is_injected(deployment())
    assert container(deployment(), "app") is not None
    assert container(deployment(), "obi") is None


def test_native_sidecar_counts_as_injected() -> None:
    native = deployment()
    native["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "obi", "restartPolicy": "Always", "env": [{"name": "OTEL_EBPF_OPEN_PORT", "value": "8080"}]}
    ]
    assert is_injected(native)
    assert open_ports(native) == {8080}


def test_status_is_read_from_the_pod_template() -> None:
    injected = deployment(sidecar_env={})
    injected["spec"]["template"]["metadata"] = {"annotations": {"obi-injection/status": "{}"}}
    assert "obi-injection/status" in template_annotations(injected)
    assert template_annotations(deployment()) == {}


@pytest.mark.parametrize(
    "broken", [{}, {"spec": None}, {"spec": {"template": []}}, {"spec": {"template": {"spec": {"containers": "x"}}}}]
)
def test_malformed_objects_read_as_empty(broken: dict[str, Any]) -> None:
    assert not is_injected(broken)
    assert open_ports(broken) is None
    assert not opted_out(broken)


def test_env_value_reads_literal_values_only() -> None:
    spec = {"env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}
    assert env_value(spec, "A") == "1"
    assert env_value(spec, "B") is None
    assert env_value(spec, "C") is None
    assert env_value({}, "A") is None


@pytest.mark.parametrize(
    ("value", "ports"),
    [
        ("8080", {8080}),
        ("80,8080", {80, 8080}),
        (" 80 , 8080 ,", {80, 8080}),
        ("8000-8002,9090", {8000, 8001, 8002, 9090}),
        ("", set()),
    ],
)
def test_parse_port_list(value: str, ports: set[int]) -> None:
    assert parse_port_list(value) == ports


@pytest.mark.parametrize("value", ["http", "0", "70000", "90-80", "1-2-3", "-5"])
def test_parse_port_list_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_port_list(value)


def test_open_ports_come_from_the_sidecar() -> None:
    assert open_ports(deployment(sidecar_env={"OTEL_EBPF_OPEN_PORT": "8080,9090"})) == {8080, 9090}
    assert open_ports(deployment(sidecar_env={})) is None
    assert open_ports(deployment()) is None


def test_template_opt_out_wins_over_the_deployment() -> None:
    both = deployment(annotations={"obi-injection/inject": "true"})
    both["spec"]["template"]["metadata"] = {"annotations": {"obi-injection/inject": "false"}}
    assert opted_out(both)
    both["spec"]["template"]["metadata"]["annotations"]["obi-injection/inject"] = "true"
    both["metadata"]["annotations"]["obi-injection/inject"] = "false"
    assert not opted_out(both)


def test_opt_out_and_missing_sidecar() -> None:
    injected = deployment("a", sidecar_env={})
    bare = deployment("b")
    opted = deployment("c", annotations={"obi-injection/inject": "False"})
    enabled = deployment("d", annotations={"obi-injection/inject": "true"})
    assert opted_out(opted) and not opted_out(enabled)
    assert missing_sidecar([injected, bare, opted, enabled]) == ["b", "d"]


def test_rollout_state_counts_owned_replicasets_only() -> None:
    state = rollout_state(deployment(generation=3, revision="2"),
                          [replicaset("web-1", "uid-web"), replicaset("web-2", "uid-web"), replicaset("db-1", "uid-db")])
    assert state == RolloutState(generation=3, revision="2", replicasets=frozenset({"web-1", "web-2"}))


def test_rolled_out() -> None:
    before = RolloutState(generation=1, revision="1", replicasets=frozenset({"web-1"}))
    assert not rolled_out(before, before)
    # Scaling changes the generation but not the template: no rollout.
    assert not rolled_out(before, RolloutState(2, "1", frozenset({"web-1"})))
    # An old ReplicaSet garbage-collected: no rollout either.
    assert not rolled_out(RolloutState(1, "1", frozenset({"web-0", "web-1"})), before)
    assert rolled_out(before, RolloutState(2, "2", frozenset({"web-1", "web-2"})))
    assert rolled_out(before, RolloutState(2, "1", frozenset({"web-1", "web-2"})))
    assert rolled_out(before, RolloutState(2, "2", frozenset({"web-1"})))
    # Not annotated yet by the controller: not a rollout by itself.
    assert not rolled_out(before, RolloutState(1, "", frozenset({"web-1"})))


def test_controller_caught_up() -> None:
    assert controller_caught_up(deployment(generation=2, observed=2))
    assert not controller_caught_up(deployment(generation=2, observed=1))
    assert not controller_caught_up(deployment(generation=2, observed=None))
    changed = copy.deepcopy(deployment())
    changed["metadata"]["generation"] = "2"
    assert not controller_caught_up(changed)
