"""Command line for the Makefile and kind-up.sh: `python3 -m obi_kind COMMAND` (from kind-tests/).

  require NAME=COMMAND...      fail, naming what to install, when a tool (or Docker's engine) is missing
  validate [--manifests DIR]   strict schema validation of every manifest and kustomize build
  render-kind-overlay ...      write the kustomization `make kind-up` applies
  missing-sidecar ...          list Deployments of a namespace that should carry the sidecar and do not
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _require(args: argparse.Namespace) -> int:
    from obi_kind.environment import require

    tools = {}
    for item in args.tools:
        name, _, command = item.partition("=")
        tools[name] = command or name
    problems = require(tools)
    for problem in problems:
        print(f"missing: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _validate(args: argparse.Namespace) -> int:
    from obi_kind.manifests import ManifestError, prepared_copy, validate_tree

    with tempfile.TemporaryDirectory(prefix="obi-manifests-") as workdir:
        try:
            copy = prepared_copy(args.manifests, REPO / "certs" / "gen.sh", Path(workdir))
        except ManifestError as error:
            print(f"validate: {error}", file=sys.stderr)
            return 1
        problems = validate_tree(copy)
    for problem in problems:
        print(f"invalid: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"validate: every manifest and kustomize build under {args.manifests} is valid")
    return 0


def _render_kind_overlay(args: argparse.Namespace) -> int:
    from obi_kind.render import kind_overlay, to_yaml

    out = args.out.resolve()
    demo = os.path.relpath(args.demo.resolve(), out)
    try:
        overlay = kind_overlay(args.version, demo, args.cluster_name)
    except ValueError as error:
        print(f"render-kind-overlay: {error}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    header = "# Written by `make kind-up` (kind-tests/obi_kind/render.py): do not edit.\n"
    (out / "kustomization.yaml").write_text(header + to_yaml([overlay]))
    return 0


def _missing_sidecar(args: argparse.Namespace) -> int:
    from obi_kind.deployments import missing_sidecar
    from obi_kind.kubectl import Kubectl, KubectlError

    try:
        deployments = Kubectl(args.context).list("deployments", args.namespace)
    except KubectlError as error:
        print(f"missing-sidecar: {error}", file=sys.stderr)
        return 1
    for name in missing_sidecar(deployments):
        print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="obi_kind", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    require = commands.add_parser("require", help="check that tools are installed")
    require.add_argument("tools", nargs="+", metavar="NAME[=COMMAND]")
    require.set_defaults(handler=_require)

    validate = commands.add_parser("validate", help="validate manifests/ strictly")
    validate.add_argument("--manifests", type=Path, default=REPO / "manifests")
    validate.set_defaults(handler=_validate)

    overlay = commands.add_parser("render-kind-overlay", help="write the kind overlay")
    overlay.add_argument("--version", required=True, help="tag of the images loaded into kind")
    overlay.add_argument("--out", type=Path, default=REPO / "manifests" / "kind")
    overlay.add_argument("--demo", type=Path, default=REPO / "manifests" / "demo")
    overlay.add_argument("--cluster-name", default="obi")
    overlay.set_defaults(handler=_render_kind_overlay)

    missing = commands.add_parser("missing-sidecar", help="Deployments lacking the sidecar")
    missing.add_argument("--context", required=True)
    missing.add_argument("--namespace", required=True)
    missing.set_defaults(handler=_missing_sidecar)

    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
