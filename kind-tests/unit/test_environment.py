"""Detecting what the kind workflow lacks, with real PATHs: an empty one, the machine's own, and
one holding small stand-in executables that answer like a working docker/kind/kubectl."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from obi_kind.environment import cluster_unavailable_reason, missing_tools, require

SYSTEM_PATH = os.pathsep.join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir())


def tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_missing_tools_name_what_to_install(tmp_path: Path) -> None:
    messages = missing_tools({"docker": "docker", "kind": "kind", "kubectl": "kubectl"}, path=str(tmp_path))
    assert len(messages) == 3
    assert "install Docker Engine" in messages[0]
    assert "install kind" in messages[1]
    assert "install kubectl" in messages[2]
    reason = cluster_unavailable_reason(path=str(tmp_path))
    assert reason is not None and reason.startswith("no kind cluster to test against: docker not found")


def test_docker_without_engine(tmp_path: Path) -> None:
    tool(tmp_path, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1")
    [problem] = require({"docker": "docker"}, path=f"{tmp_path}{os.pathsep}{SYSTEM_PATH}")
    assert "Docker engine is not reachable" in problem


def test_working_tools_but_no_cluster(tmp_path: Path) -> None:
    tool(tmp_path, "docker", "exit 0")
    tool(tmp_path, "kind", 'echo other-cluster')
    tool(tmp_path, "kubectl", "exit 0")
    path = f"{tmp_path}{os.pathsep}{SYSTEM_PATH}"
    assert require({"docker": "docker", "kind": "kind", "kubectl": "kubectl"}, path=path) == []
    assert cluster_unavailable_reason("obi", path=path) == "no kind cluster named 'obi': run `make kind-up` first"


def test_cluster_without_the_webhook(tmp_path: Path) -> None:
    tool(tmp_path, "docker", "exit 0")
    tool(tmp_path, "kind", "echo obi")
    tool(tmp_path, "kubectl", "exit 1")
    reason = cluster_unavailable_reason("obi", path=f"{tmp_path}{os.pathsep}{SYSTEM_PATH}")
    assert reason is not None and "context 'kind-obi' cannot read namespace obi-system" in reason


def test_ready_cluster(tmp_path: Path) -> None:
    tool(tmp_path, "docker", "exit 0")
    tool(tmp_path, "kind", "printf 'dev\\nobi\\n'")
    tool(tmp_path, "kubectl", '[ "$2" = kind-obi ] && [ "$5" = obi-system ]')
    assert cluster_unavailable_reason("obi", path=f"{tmp_path}{os.pathsep}{SYSTEM_PATH}") is None


def test_this_machine_gets_a_reason_or_a_cluster() -> None:
    # Without kind (as on the CI machine) the reason names it; with a cluster up it is None.
    reason = cluster_unavailable_reason()
    assert reason is None or reason.startswith("no kind cluster")
    if shutil.which("kind") is None:
        assert reason is not None and "kind not found" in reason
