"""The demo's two services and its traffic generator, run here as real processes on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_ports

APP = Path(__file__).resolve().parents[2] / "manifests" / "demo" / "app"


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def start(script: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP / script)], env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture
def services() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    backend_port, frontend_port = free_ports(2)
    backend = start("backend.py", PORT=str(backend_port))
    frontend = start("frontend.py", PORT=str(frontend_port),
                     BACKEND_URL=f"http://127.0.0.1:{backend_port}/inventory")
    try:
        wait_listening(backend_port)
        wait_listening(frontend_port)
        yield backend, backend_port, frontend_port
    finally:
        for process in (frontend, backend):
            process.kill()
            process.wait(10)


def test_frontend_calls_backend(services: tuple[subprocess.Popen[str], int, int]) -> None:
    _, backend_port, frontend_port = services
    status, body = get(f"http://127.0.0.1:{frontend_port}/")
    assert status == 200
    assert body["frontend"] == "ok"
    assert body["inventory"] == get(f"http://127.0.0.1:{backend_port}/inventory")[1]
    assert get(f"http://127.0.0.1:{frontend_port}/healthz") == (200, {"status": "ok"})
    assert get(f"http://127.0.0.1:{backend_port}/nope")[0] == 404


def test_frontend_reports_a_missing_backend(services: tuple[subprocess.Popen[str], int, int]) -> None:
    backend, _, frontend_port = services
    backend.kill()
    backend.wait(10)
    status, body = get(f"http://127.0.0.1:{frontend_port}/")
    assert status == 502
    assert body["frontend"] == "backend unavailable"


def test_backend_keeps_connections_alive(services: tuple[subprocess.Popen[str], int, int]) -> None:
    _, backend_port, _ = services
    with socket.create_connection(("127.0.0.1", backend_port), timeout=5) as conn:
        for _ in range(2):
            conn.sendall(b"GET /inventory HTTP/1.1\r\nHost: backend\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(4096)


def test_loadgen_drives_the_frontend(services: tuple[subprocess.Popen[str], int, int]) -> None:
    _, _, frontend_port = services
    loadgen = start("loadgen.py", TARGET_URL=f"http://127.0.0.1:{frontend_port}/", INTERVAL_SECONDS="0.05",
                    PYTHONUNBUFFERED="1")
    try:
        assert loadgen.stdout is not None
        lines = [loadgen.stdout.readline() for _ in range(3)]
    finally:
        loadgen.kill()
        loadgen.wait(10)
    assert lines == [f"GET http://127.0.0.1:{frontend_port}/ -> 200\n"] * 3
