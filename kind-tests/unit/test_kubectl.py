"""The kubectl wrapper's failure paths, with the real kubectl (no cluster needed to fail)."""

from __future__ import annotations

import itertools
import shutil

import pytest

from obi_kind.kubectl import Kubectl, KubectlError, wait_for


def test_missing_binary_is_a_kubectl_error() -> None:
    with pytest.raises(KubectlError, match="obi-absent-kubectl"):
        Kubectl("kind-obi", binary="obi-absent-kubectl").get("deployment", "web", "default")


def test_unknown_context_is_reported_with_kubectl_s_reason() -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not installed: install it (https://kubernetes.io/docs/tasks/tools/)")
    kube = Kubectl("kind-obi-absent-context")
    with pytest.raises(KubectlError) as error:
        kube.list("deployments", "default")
    message = str(error.value)
    assert message.startswith("kubectl --context kind-obi-absent-context get deployments -n default -o json failed:")
    assert "kind-obi-absent-context" in message.split("failed:", 1)[1]


def test_wait_for_returns_the_first_value() -> None:
    counter = itertools.count()
    assert wait_for(lambda: n if (n := next(counter)) >= 3 else None, timeout=5, interval=0.01) == 3


def test_wait_for_gives_up() -> None:
    assert wait_for(lambda: None, timeout=0.05, interval=0.01) is None
