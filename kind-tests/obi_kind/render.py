"""Objects the kind tests and `make kind-up` create, as plain dicts, and their YAML."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from obi_kind.deployments import OPT_OUT_ANNOTATION

INJECTION_LABEL = "obi-injection"
# Already on the nodes after `make kind-up` (the demo app runs it), and it serves HTTP on any port.
SAMPLE_IMAGE = "python:3.13-alpine3.21"
# Docker's rule for a tag.
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (embedded patches, scripts) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    return yaml.dump_all(
        [dict(o) for o in objects], Dumper=_Dumper, sort_keys=False, default_flow_style=False
    )


def namespace(name: str, *, injection: bool) -> dict[str, Any]:
    labels = {INJECTION_LABEL: "enabled"} if injection else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def sample_deployment(
    name: str,
    namespace_name: str,
    ports: Sequence[int],
    *,
    opt_out: bool = False,
) -> dict[str, Any]:
    """A small HTTP server Deployment declaring PORTS (it listens on the first one)."""
    if not ports:
        raise ValueError("a sample Deployment needs at least one port")
    metadata: dict[str, Any] = {"name": name, "namespace": namespace_name, "labels": {"app": name}}
    if opt_out:
        metadata["annotations"] = {OPT_OUT_ANNOTATION: "false"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": SAMPLE_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python3", "-m", "http.server", str(ports[0])],
                            "ports": [
                                {"name": f"http-{i}", "containerPort": port, "protocol": "TCP"}
                                for i, port in enumerate(ports)
                            ],
                        }
                    ]
                },
            },
        },
    }


def kind_overlay(version: str, demo_dir: str, cluster_name: str) -> dict[str, Any]:
    """The kustomization `make kind-up` applies: the demo overlay with the images it just built
    and loaded (tag VERSION) and the cluster's name in the sidecars' resource attributes."""
    if not _TAG.match(version):
        raise ValueError(f"{version!r} is not a valid image tag")
    webhook_env = [
        {"name": "OBI_WEBHOOK_SIDECAR_IMAGE", "value": f"obi-sidecar:{version}"},
        {"name": "OBI_WEBHOOK_CLUSTER_NAME", "value": cluster_name},
    ]
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "obi-webhook", "namespace": "obi-system"},
        "spec": {"template": {"spec": {"containers": [{"name": "webhook", "env": webhook_env}]}}},
    }
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [demo_dir],
        "images": [{"name": "obi-webhook", "newTag": version}],
        "patches": [{"patch": yaml.safe_dump(patch, sort_keys=False)}],
    }
