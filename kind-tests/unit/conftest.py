from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import GEN, REPO

from obi_kind.manifests import build, prepared_copy


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifests/ copied with freshly generated certificates, as `make certs` would leave it."""
    return prepared_copy(REPO / "manifests", GEN, tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="session")
def builds(manifests: Path) -> dict[str, list[dict[str, Any]]]:
    """`kustomize build` of each overlay, by directory name."""
    return {name: build(manifests / name) for name in ("base", "default", "cert-manager", "demo")}
