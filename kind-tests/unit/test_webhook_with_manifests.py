"""The webhook binary run with the configuration the manifests give it and the certificates
certs/gen.sh makes: it must start, answer its probes on the paths the Deployment probes, complete
a TLS handshake for the Service's DNS name with the caBundle, and inject the demo's Deployments
the way the kind tests expect. This is what the API server would do in kind, minus the cluster."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from support import GEN, REPO, find, free_ports

from obi_kind.deployments import OPEN_PORT_ENV, container, env_value, open_ports
from obi_kind.manifests import validate_object

SERVICE_DNS = "obi-webhook.obi-system.svc"


@pytest.fixture(scope="module")
def webhook_binary() -> Path:
    """The debug build of obi-webhook (cargo shares the workspace's target dir)."""
    result = subprocess.run(
        ["cargo", "build", "--locked", "-p", "obi-webhook", "--message-format=short"],
        cwd=REPO, capture_output=True, text=True, timeout=1800, check=False,
    )
    assert result.returncode == 0, f"cargo build -p obi-webhook failed:\n{result.stderr[-4000:]}"
    binary = REPO / "target" / "debug" / "obi-webhook"
    assert binary.is_file()
    return binary


class _ServiceConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1, verifying the certificate for the Service's DNS name, as the API
    server does when it calls the webhook through the Service."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=10)
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock = self._tls.wrap_socket(raw, server_hostname=SERVICE_DNS)


@pytest.fixture(scope="module")
def certs(manifests: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the TLS Secret is built from, in a directory of the webhook's own (the
    rotation test rewrites it), standing in for the mounted Secret."""
    directory = tmp_path_factory.mktemp("secret")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        shutil.copy(manifests / "default" / "certs" / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def webhook(
    webhook_binary: Path,
    builds: dict[str, list[dict[str, Any]]],
    certs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, int]]:
    """The webhook running with the demo overlay's environment; yields (https port, health port)."""
    spec = container(find(builds["demo"], "Deployment", "obi-webhook"), "webhook")
    assert spec is not None
    env = {e["name"]: e["value"] for e in spec["env"]}
    https_port, health_port = free_ports(2)
    # Only where it listens and where the mounted Secret is differ from the cluster.
    env.update(
        OBI_WEBHOOK_LISTEN_ADDR=f"127.0.0.1:{https_port}",
        OBI_WEBHOOK_HEALTH_ADDR=f"127.0.0.1:{health_port}",
        OBI_WEBHOOK_TLS_CERT_FILE=str(certs / "tls.crt"),
        OBI_WEBHOOK_TLS_KEY_FILE=str(certs / "tls.key"),
    )
    log = tmp_path_factory.mktemp("webhook") / "webhook.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(webhook_binary)], env={"PATH": os.environ.get("PATH", ""), **env}, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the webhook did not become ready with the manifests' configuration:\n{log.read_text()}")
            time.sleep(0.1)
        yield https_port, health_port
    finally:
        process.terminate()
        process.wait(30)


def mutate(port: int, bundle: Path, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0d5e7c1a-7f0c-4f55-9a3e-2b6f1d9c8e01",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": obj["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "kind-tests"},
            "object": obj,
            "dryRun": False,
        },
    }
    connection = _ServiceConnection(port, ssl.create_default_context(cafile=str(bundle)))
    try:
        connection.request("POST", "/mutate", body=json.dumps(review), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert answer["response"]["uid"] == review["request"]["uid"]
    return answer["response"]


def decode_patch(value: str | list[int]) -> list[dict[str, Any]]:
    """The response's patch: JSON bytes, which Go's decoder in the API server accepts as a base64
    string or as an array of byte values (the form kube-core serializes)."""
    raw = bytes(value) if isinstance(value, list) else base64.b64decode(value)
    patch = json.loads(raw)
    assert isinstance(patch, list)
    return patch


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probe_and_metrics_paths_answer(webhook: tuple[int, int], path: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{webhook[1]}{path}", timeout=5) as response:
        assert response.status == 200


def test_demo_deployments_are_injected_as_kind_tests_expect(
    webhook: tuple[int, int], builds: dict[str, list[dict[str, Any]]], certs: Path
) -> None:
    objects = builds["demo"]
    endpoint = env_value(container(find(objects, "Deployment", "obi-webhook"), "webhook") or {}, "OBI_WEBHOOK_OTLP_ENDPOINT")
    for name in ("frontend", "backend"):
        deployment = find(objects, "Deployment", name)
        response = mutate(webhook[0], certs / "ca.crt", deployment, "obi-demo")
        assert response["allowed"] is True
        assert response["patchType"] == "JSONPatch"
        patched = jsonpatch.apply_patch(deployment, decode_patch(response["patch"]))
        assert validate_object(patched) == []
        sidecar = container(patched, "obi")
        assert sidecar is not None
        assert sidecar["image"] == "obi-sidecar:dev"
        assert open_ports(patched) == {8080}
        assert env_value(sidecar, "OTEL_EXPORTER_OTLP_ENDPOINT") == endpoint
        attributes = (env_value(sidecar, "OTEL_RESOURCE_ATTRIBUTES") or "").split(",")
        assert "k8s.namespace.name=obi-demo" in attributes
        assert f"k8s.deployment.name={name}" in attributes
        assert env_value(sidecar, OPEN_PORT_ENV) is not None
        # No capture-mode annotation: the sidecar runs `auto`, with the pod-scoped mode's set.
        assert env_value(sidecar, "OTEL_EBPF_CAPTURE_MODE") is None
        assert sidecar["securityContext"]["capabilities"] == {
            "add": ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "NET_ADMIN"],
            "drop": ["ALL"],
        }


def test_opted_out_collector_is_left_alone(
    webhook: tuple[int, int], builds: dict[str, list[dict[str, Any]]], certs: Path
) -> None:
    collector = find(builds["demo"], "Deployment", "otel-collector")
    response = mutate(webhook[0], certs / "ca.crt", collector, "obi-demo")
    assert response["allowed"] is True
    assert "patch" not in response or decode_patch(response["patch"]) == []


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=SERVICE_DNS) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_rotation_by_rerunning_gen_reaches_the_running_webhook(
    webhook: tuple[int, int], builds: dict[str, list[dict[str, Any]]], certs: Path, tmp_path: Path
) -> None:
    old_bundle = certs / "old-ca.crt"
    shutil.copy(certs / "ca.crt", old_bundle)
    before = served_certificate(webhook[0])
    result = subprocess.run([str(GEN), "--out", str(tmp_path), "--kustomize", str(certs)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    new = ssl.PEM_cert_to_DER_cert((certs / "tls.crt").read_text())
    # The webhook reloads rotated files by itself (it polls them about once a second).
    deadline = time.monotonic() + 20
    while served_certificate(webhook[0]) != new:
        assert time.monotonic() < deadline, "the webhook still serves the old certificate"
        time.sleep(0.2)
    assert before != new
    # The new bundle (what `make certs` puts in caBundle) trusts the new certificate...
    deployment = find(builds["demo"], "Deployment", "frontend")
    assert mutate(webhook[0], certs / "ca.crt", deployment, "obi-demo")["allowed"] is True
    # ...and a client holding only the old CA no longer does.
    with pytest.raises(ssl.SSLCertVerificationError):
        mutate(webhook[0], old_bundle, deployment, "obi-demo")
