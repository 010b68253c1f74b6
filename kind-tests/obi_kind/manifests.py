"""Strict validation of everything under manifests/.

Every YAML file must be accounted for by some kustomization (as a resource, a patch or a generator
input); every resource file and every `kustomize build` output is validated object by object
against the Kubernetes OpenAPI schema with unknown fields rejected (kubernetes-validate, strict),
for each Kubernetes version in KUBERNETES_VERSIONS. cert-manager kinds use cert_manager.SCHEMAS.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from obi_kind import cert_manager

# The webhook is built against the 1.32 API (k8s-openapi v1_32); 1.33 is what kind ships today.
KUBERNETES_VERSIONS: tuple[str, ...] = ("1.32.0", "1.33.0")
KUSTOMIZATION_FILE = "kustomization.yaml"


class ManifestError(Exception):
    """A manifest or kustomization cannot be read or rendered."""


@dataclass(frozen=True)
class Problem:
    """One validation failure: where (a file or a build) and what."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class Kustomization:
    """The files a kustomization directory refers to, by role."""

    directory: Path
    resource_files: list[Path] = field(default_factory=list)
    bases: list[Path] = field(default_factory=list)
    patch_files: list[Path] = field(default_factory=list)
    generator_files: list[Path] = field(default_factory=list)


def load_documents(text: str, source: str) -> list[dict[str, Any]]:
    """The YAML documents of a stream, each a mapping; empty documents are dropped."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise ManifestError(f"{source}: invalid YAML: {error}") from error
    for doc in documents:
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: a document is a {type(doc).__name__}, not a mapping")
    return documents


def load_file(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ManifestError(f"{path}: {error.strerror}") from error
    return load_documents(text, str(path))


def _generator_paths(entries: Iterable[dict[str, Any]]) -> Iterable[str]:
    for entry in entries:
        for item in list(entry.get("files") or []) + list(entry.get("envs") or []):
            # "key=path" names the data key; the file is after the first '='.
            yield item.split("=", 1)[1] if "=" in item else item


def read_kustomization(directory: Path) -> Kustomization:
    """Parses DIR/kustomization.yaml and sorts what it references; missing paths are errors."""
    source = directory / KUSTOMIZATION_FILE
    documents = load_file(source)
    if len(documents) != 1:
        raise ManifestError(f"{source}: expected one document, found {len(documents)}")
    spec = documents[0]
    result = Kustomization(directory=directory)

    def resolve(entry: str, what: str) -> Path:
        if "://" in entry:
            raise ManifestError(f"{source}: remote {what} '{entry}' cannot be validated offline")
        path = (directory / entry).resolve()
        if not path.exists():
            raise ManifestError(f"{source}: {what} '{entry}' does not exist")
        return path

    for entry in list(spec.get("resources") or []) + list(spec.get("components") or []):
        path = resolve(entry, "resource")
        (result.bases if path.is_dir() else result.resource_files).append(path)
    for patch in spec.get("patches") or []:
        if isinstance(patch, dict) and "path" in patch:
            result.patch_files.append(resolve(patch["path"], "patch"))
    for entry in spec.get("patchesStrategicMerge") or []:
        result.patch_files.append(resolve(entry, "patch"))
    generators = list(spec.get("configMapGenerator") or []) + list(spec.get("secretGenerator") or [])
    for entry in _generator_paths(generators):
        result.generator_files.append(resolve(entry, "generator input"))
    return result


def kustomization_dirs(root: Path) -> list[Path]:
    return [path.parent for path in sorted(root.rglob(KUSTOMIZATION_FILE))]


def kustomize_command() -> list[str]:
    """A real kustomize: the standalone binary, else the one built into kubectl."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise ManifestError(
        "no kustomize to render manifests/: install kubectl (https://kubernetes.io/docs/tasks/tools/), "
        "which embeds kustomize, or kustomize itself"
    )


def build(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build DIR`, parsed."""
    command = kustomize_command() + [str(directory)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ManifestError(f"{' '.join(command)}: {error}") from error
    if result.returncode != 0:
        raise ManifestError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return load_documents(result.stdout, f"kustomize build {directory}")


def _describe(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
    return f"{obj.get('kind', '?')}/{name}"


def _error_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(root)"


def validate_object(obj: dict[str, Any], versions: Sequence[str] = KUBERNETES_VERSIONS) -> list[str]:
    """Schema violations of one object (empty when valid), for every version."""
    if not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
        return [f"{_describe(obj)}: not a Kubernetes object (apiVersion and kind are required)"]
    custom = cert_manager.SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if custom is not None:
        errors = sorted(jsonschema.Draft202012Validator(custom).iter_errors(obj), key=str)
        return [f"{_describe(obj)}: {_error_path(e)}: {e.message}" for e in errors]
    messages = []
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            messages.append(f"{_describe(obj)} (Kubernetes {version}): {_error_path(error)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            messages.append(f"{_describe(obj)}: {error.message}")
    return messages


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def validate_tree(root: Path, versions: Sequence[str] = KUBERNETES_VERSIONS) -> list[Problem]:
    """Every problem found under ROOT: unreferenced YAML, invalid resource files, failed or
    invalid kustomize builds."""
    root = root.resolve()
    problems: list[Problem] = []
    directories = kustomization_dirs(root)
    if not directories:
        return [Problem(str(root), "no kustomization.yaml found")]
    kustomizations = []
    for directory in directories:
        try:
            kustomizations.append(read_kustomization(directory))
        except ManifestError as error:
            problems.append(Problem(_relative(directory / KUSTOMIZATION_FILE, root), str(error)))

    referenced: set[Path] = set()
    resource_files: set[Path] = set()
    for kustomization in kustomizations:
        referenced.add(kustomization.directory / KUSTOMIZATION_FILE)
        referenced.update(kustomization.patch_files)
        referenced.update(kustomization.generator_files)
        referenced.update(kustomization.resource_files)
        resource_files.update(kustomization.resource_files)

    for path in sorted(p.resolve() for p in root.rglob("*") if p.suffix in {".yaml", ".yml"}):
        if path not in referenced:
            problems.append(Problem(_relative(path, root), "not referenced by any kustomization"))

    for path in sorted(resource_files):
        try:
            documents = load_file(path)
        except ManifestError as error:
            problems.append(Problem(_relative(path, root), str(error)))
            continue
        for obj in documents:
            problems.extend(Problem(_relative(path, root), m) for m in validate_object(obj, versions))

    for kustomization in kustomizations:
        source = f"kustomize build {_relative(kustomization.directory, root)}"
        try:
            documents = build(kustomization.directory)
        except ManifestError as error:
            problems.append(Problem(source, str(error)))
            continue
        for obj in documents:
            problems.extend(Problem(source, m) for m in validate_object(obj, versions))
    return problems


def prepared_copy(manifests: Path, certs_script: Path, workdir: Path) -> Path:
    """A copy of MANIFESTS under WORKDIR with fresh certificates where manifests/default reads
    them, so every overlay builds without touching the caller's tree (or its key material)."""
    copy = workdir / "manifests"
    shutil.copytree(manifests, copy, ignore=shutil.ignore_patterns("certs", "__pycache__"))
    command = [str(certs_script), "--out", str(workdir / "certs"), "--kustomize", str(copy / "default" / "certs")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise ManifestError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return copy
