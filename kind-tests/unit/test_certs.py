"""certs/gen.sh, checked with openssl and a real TLS handshake."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from support import GEN

SHORT = "obi-webhook.obi-system.svc"
FULL = "obi-webhook.obi-system.svc.cluster.local"


def gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GEN), *args], capture_output=True, text=True, timeout=60, check=False)


def openssl(*args: str) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def extension(cert: Path, name: str) -> str:
    return openssl("x509", "-in", str(cert), "-noout", "-ext", name)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    result = gen("--out", str(directory))
    assert result.returncode == 0, result.stderr
    return directory


def test_writes_the_files_with_private_keys_private(out: Path) -> None:
    for name in ("ca.crt", "ca-bundle.crt", "tls.crt"):
        assert (out / name).read_text().startswith("-----BEGIN CERTIFICATE-----")
    for name in ("ca.key", "tls.key"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["ca-bundle.crt", "ca.crt", "ca.key", "tls.crt", "tls.key"]


def test_serving_certificate_names_the_service(out: Path) -> None:
    sans = extension(out / "tls.crt", "subjectAltName")
    assert f"DNS:{SHORT}, DNS:{FULL}" in sans
    assert openssl("x509", "-in", str(out / "tls.crt"), "-noout", "-subject").strip() == f"subject=CN = {SHORT}"


def test_serving_certificate_is_for_tls_servers_only(out: Path) -> None:
    cert = out / "tls.crt"
    assert "TLS Web Server Authentication" in extension(cert, "extendedKeyUsage")
    assert "Client Authentication" not in extension(cert, "extendedKeyUsage")
    key_usage = extension(cert, "keyUsage")
    assert "critical" in key_usage and "Digital Signature" in key_usage
    assert "Certificate Sign" not in key_usage
    assert "CA:FALSE" in extension(cert, "basicConstraints")


def test_ca_is_a_ca(out: Path) -> None:
    assert "CA:TRUE" in extension(out / "ca.crt", "basicConstraints")
    assert "Certificate Sign" in extension(out / "ca.crt", "keyUsage")


def test_certificate_verifies_against_the_ca_and_matches_its_key(out: Path) -> None:
    verify = openssl("verify", "-CAfile", str(out / "ca.crt"), "-purpose", "sslserver", str(out / "tls.crt"))
    assert verify.strip().endswith(": OK")
    cert_key = openssl("x509", "-in", str(out / "tls.crt"), "-noout", "-pubkey")
    private_key = openssl("pkey", "-in", str(out / "tls.key"), "-pubout")
    assert cert_key == private_key


def _serve_once(out: Path) -> tuple[int, threading.Thread]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(out / "tls.crt", out / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            listener.settimeout(10)
            try:
                connection, _ = listener.accept()
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.parametrize("name", [SHORT, FULL])
def test_tls_handshake_as_the_api_server_makes_it(out: Path, name: str) -> None:
    port, thread = _serve_once(out)
    client = ssl.create_default_context(cafile=str(out / "ca-bundle.crt"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.recv(2) == b"ok"
    thread.join(10)


def test_tls_handshake_fails_for_another_name(out: Path) -> None:
    port, thread = _serve_once(out)
    client = ssl.create_default_context(cafile=str(out / "ca-bundle.crt"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.wrap_socket(raw, server_hostname="obi-webhook.default.svc")
    thread.join(10)


def test_namespace_service_and_days_are_configurable(tmp_path: Path) -> None:
    result = gen("--out", str(tmp_path), "--namespace", "tracing", "--service", "injector", "--days", "2")
    assert result.returncode == 0, result.stderr
    sans = extension(tmp_path / "tls.crt", "subjectAltName")
    assert "DNS:injector.tracing.svc, DNS:injector.tracing.svc.cluster.local" in sans
    cert = str(tmp_path / "tls.crt")
    # Valid now and tomorrow, expired in three days.
    assert subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-checkend", "86400"], capture_output=True).returncode == 0
    assert subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-checkend", "259200"], capture_output=True).returncode == 1


def test_rerunning_rotates_and_keeps_the_previous_ca_trusted(tmp_path: Path) -> None:
    assert gen("--out", str(tmp_path)).returncode == 0
    first_ca = (tmp_path / "ca.crt").read_text()
    first_cert = (tmp_path / "tls.crt").read_bytes()
    first_key = (tmp_path / "tls.key").read_bytes()
    (tmp_path / "old-tls.crt").write_bytes(first_cert)

    assert gen("--out", str(tmp_path)).returncode == 0
    assert (tmp_path / "tls.crt").read_bytes() != first_cert
    assert (tmp_path / "tls.key").read_bytes() != first_key
    second_ca = (tmp_path / "ca.crt").read_text()
    assert second_ca != first_ca
    bundle = (tmp_path / "ca-bundle.crt").read_text()
    assert bundle == second_ca + first_ca
    # During the rotation the API server (bundle) trusts both the old and the new certificate.
    for cert in ("old-tls.crt", "tls.crt"):
        verify = openssl("verify", "-CAfile", str(tmp_path / "ca-bundle.crt"), str(tmp_path / cert))
        assert verify.strip().endswith(": OK")
    # A third run drops the first CA: the bundle never grows beyond two.
    assert gen("--out", str(tmp_path)).returncode == 0
    assert (tmp_path / "ca-bundle.crt").read_text() == (tmp_path / "ca.crt").read_text() + second_ca


def test_kustomize_output(tmp_path: Path) -> None:
    kustomize = tmp_path / "kustomize"
    result = gen("--out", str(tmp_path / "out"), "--kustomize", str(kustomize))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in kustomize.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert (kustomize / "ca.crt").read_bytes() == (tmp_path / "out" / "ca-bundle.crt").read_bytes()
    assert (kustomize / "tls.crt").read_bytes() == (tmp_path / "out" / "tls.crt").read_bytes()
    assert stat.S_IMODE((kustomize / "tls.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--namespace", "Obi_System"], "not a valid namespace name"),
        (["--service", "-webhook"], "not a valid Service name"),
        (["--days", "0"], "must be a whole number of days"),
        (["--days", "ten"], "must be a whole number of days"),
        (["--colour", "blue"], "unknown argument: --colour"),
        (["--out"], "certs/gen.sh [--out DIR]"),
    ],
)
def test_bad_arguments_fail_before_writing(tmp_path: Path, args: list[str], message: str) -> None:
    target = tmp_path / "out"
    result = gen("--out", str(target), *args) if args[0] != "--out" else gen(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert not target.exists()
