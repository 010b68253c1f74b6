"""Fixtures for the end-to-end tests: the kind cluster of `make kind-up`, or a skip saying what
is missing (docker, kind, kubectl, the cluster): the only reason these tests may skip."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from obi_kind.environment import (
    DEFAULT_CLUSTER,
    cluster_unavailable_reason,
    kube_context,
)
from obi_kind.kubectl import Kubectl
from obi_kind.render import namespace

CLUSTER = os.environ.get("KIND_CLUSTER", DEFAULT_CLUSTER)


@pytest.fixture(scope="session")
def kube() -> Kubectl:
    reason = cluster_unavailable_reason(CLUSTER)
    if reason is not None:
        pytest.skip(reason)
    return Kubectl(kube_context(CLUSTER))


def _namespace(kube: Kubectl, injection: bool) -> Iterator[str]:
    name = f"obi-kt-{'on' if injection else 'off'}-{secrets.token_hex(3)}"
    kube.apply([namespace(name, injection=injection)])
    try:
        yield name
    finally:
        kube.delete_namespace(name)


@pytest.fixture
def labelled(kube: Kubectl) -> Iterator[str]:
    """A fresh namespace opted in to injection, deleted afterwards."""
    yield from _namespace(kube, injection=True)


@pytest.fixture
def unlabelled(kube: Kubectl) -> Iterator[str]:
    """A fresh namespace without the label, deleted afterwards."""
    yield from _namespace(kube, injection=False)
