"""`python3 -m obi_kind`, as the Makefile and kind-up.sh call it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from support import REPO

KIND_TESTS = REPO / "kind-tests"


def cli(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(KIND_TESTS)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "obi_kind", *args], capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def test_validate_passes_on_the_repository() -> None:
    result = cli("validate")
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


def test_validate_fails_on_a_broken_tree(manifests: Path, tmp_path: Path) -> None:
    tree = tmp_path / "manifests"
    shutil.copytree(manifests, tree)
    service = tree / "base" / "service.yaml"
    service.write_text(service.read_text().replace("port: 443", "port: https-port"))
    result = cli("validate", "--manifests", str(tree))
    assert result.returncode == 1
    assert "invalid: base/service.yaml: Service/obi-webhook" in result.stderr


def test_render_kind_overlay(tmp_path: Path) -> None:
    out = tmp_path / "kind"
    result = cli("render-kind-overlay", "--version", "abc1234", "--out", str(out), "--cluster-name", "dev")
    assert result.returncode == 0, result.stderr
    text = (out / "kustomization.yaml").read_text()
    assert text.startswith("# Written by `make kind-up`")
    overlay = yaml.safe_load(text)
    assert overlay["images"] == [{"name": "obi-webhook", "newTag": "abc1234"}]
    assert (out / overlay["resources"][0]).resolve() == (REPO / "manifests" / "demo").resolve()
    assert "value: obi-sidecar:abc1234" in overlay["patches"][0]["patch"]
    assert "value: dev" in overlay["patches"][0]["patch"]


def test_render_kind_overlay_rejects_a_bad_version(tmp_path: Path) -> None:
    result = cli("render-kind-overlay", "--version", "not a tag", "--out", str(tmp_path / "kind"))
    assert result.returncode == 1
    assert "'not a tag' is not a valid image tag" in result.stderr
    assert not (tmp_path / "kind").exists()


def test_require(tmp_path: Path) -> None:
    result = cli("require", "kind=obi-absent-kind", "kubectl", path=str(tmp_path))
    assert result.returncode == 1
    assert "missing: kind not found (looked for 'obi-absent-kind')" in result.stderr
    assert "missing: kubectl not found (looked for 'kubectl')" in result.stderr
    (tmp_path / "kubectl").write_text("#!/bin/sh\n")
    (tmp_path / "kubectl").chmod(0o755)
    assert cli("require", "kubectl", path=str(tmp_path)).returncode == 0


def test_missing_sidecar_reports_kubectl_failure(tmp_path: Path) -> None:
    result = cli("missing-sidecar", "--context", "kind-absent", "--namespace", "obi-demo", path=str(tmp_path))
    assert result.returncode == 1
    assert "missing-sidecar: kubectl --context kind-absent get deployments" in result.stderr
