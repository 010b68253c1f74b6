"""kubectl, driven with JSON output: the I/O edge of the kind tests."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from obi_kind.render import to_yaml

T = TypeVar("T")


class KubectlError(Exception):
    """kubectl failed; the message carries the command and its stderr."""


@dataclass(frozen=True)
class Kubectl:
    context: str
    binary: str = "kubectl"
    timeout: float = 120

    def run(self, *args: str, stdin: str | None = None, timeout: float | None = None) -> str:
        command = [self.binary, "--context", self.context, *args]
        try:
            result = subprocess.run(
                command, input=stdin, capture_output=True, text=True, timeout=timeout or self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise KubectlError(f"{' '.join(command)}: {error}") from error
        if result.returncode != 0:
            raise KubectlError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        return result.stdout

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        output = self.run("get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found")
        return json.loads(output) if output.strip() else None

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items = json.loads(self.run(*args)).get("items")
        return items if isinstance(items, list) else []

    def apply(self, objects: Iterable[Mapping[str, Any]], *, server_side: bool = False) -> None:
        """`kubectl apply`. Client-side apply sends nothing when the manifest is unchanged;
        server-side apply always sends a PATCH, so the object goes through admission again."""
        extra = ["--server-side", "--force-conflicts", "--field-manager=kind-tests"] if server_side else []
        self.run("apply", *extra, "-f", "-", stdin=to_yaml(objects))

    def delete_namespace(self, name: str) -> None:
        self.run("delete", "namespace", name, "--ignore-not-found", "--wait=false")

    def scale(self, kind: str, name: str, namespace: str, replicas: int) -> None:
        self.run("scale", f"{kind}/{name}", "-n", namespace, f"--replicas={replicas}")

    def rollout_status(self, name: str, namespace: str, timeout_seconds: int = 180) -> None:
        self.run(
            "rollout", "status", f"deployment/{name}", "-n", namespace, f"--timeout={timeout_seconds}s",
            timeout=timeout_seconds + 30,
        )

    def logs(self, target: str, namespace: str, since: str = "15m") -> str:
        return self.run("logs", target, "-n", namespace, f"--since={since}")


def wait_for(probe: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T | None:
    """Calls PROBE until it returns something other than None, or TIMEOUT seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
