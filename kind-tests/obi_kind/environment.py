"""Is there a kind cluster to test against? And if not, what exactly is missing?"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

# What to install for each tool, named in every message about it.
INSTALL_HINTS: Mapping[str, str] = {
    "docker": "Docker Engine (https://docs.docker.com/engine/install/)",
    "kind": "kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
    "kubectl": "kubectl (https://kubernetes.io/docs/tasks/tools/)",
}

DEFAULT_CLUSTER = "obi"


def kube_context(cluster: str) -> str:
    """The kubeconfig context kind creates for a cluster."""
    return f"kind-{cluster}"


def _run(command: Sequence[str], path: str | None, timeout: float = 30) -> subprocess.CompletedProcess[str] | None:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    try:
        return subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def missing_tools(tools: Mapping[str, str], path: str | None = None) -> list[str]:
    """Messages for the tools (name -> command) not found on PATH, each naming what to install."""
    messages = []
    for name, command in tools.items():
        if shutil.which(command, path=path) is None:
            hint = INSTALL_HINTS.get(name, name)
            messages.append(f"{name} not found (looked for '{command}'): install {hint}")
    return messages


def docker_engine_problem(docker: str = "docker", path: str | None = None) -> str | None:
    """Why the Docker engine cannot be used, or None when `docker info` answers."""
    result = _run([docker, "info", "--format", "{{.ServerVersion}}"], path)
    if result is None or result.returncode != 0:
        return (
            f"the Docker engine is not reachable ('{docker} info' failed): "
            f"start it, or install {INSTALL_HINTS['docker']}"
        )
    return None


def require(tools: Mapping[str, str], path: str | None = None) -> list[str]:
    """Everything that stops `make` targets needing these tools, as messages (empty when none)."""
    problems = missing_tools(tools, path)
    if "docker" in tools and not any(p.startswith("docker ") for p in problems):
        engine = docker_engine_problem(tools["docker"], path)
        if engine is not None:
            problems.append(engine)
    return problems


def cluster_unavailable_reason(cluster: str = DEFAULT_CLUSTER, path: str | None = None) -> str | None:
    """Why the end-to-end tests cannot run (the only reason they may skip), or None."""
    problems = require({"docker": "docker", "kind": "kind", "kubectl": "kubectl"}, path)
    if problems:
        return "no kind cluster to test against: " + "; ".join(problems)
    clusters = _run(["kind", "get", "clusters"], path)
    if clusters is None or clusters.returncode != 0:
        return "no kind cluster to test against: 'kind get clusters' failed"
    if cluster not in clusters.stdout.split():
        return f"no kind cluster named '{cluster}': run `make kind-up` first"
    context = kube_context(cluster)
    reachable = _run(["kubectl", "--context", context, "get", "namespace", "obi-system", "-o", "name"], path)
    if reachable is None or reachable.returncode != 0:
        return (
            f"kind cluster '{cluster}' exists but context '{context}' cannot read namespace obi-system: "
            "run `make kind-up` first"
        )
    return None
