#!/usr/bin/env python3
"""Writes seed AdmissionReviews for the fuzz target: every sample Deployment as CREATE, plus
variants with each branch's annotations, so the fuzzer starts inside the interesting paths."""
import json
import pathlib
import sys

import yaml

testdata, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)

VARIANTS = {
    "plain": {},
    "opt-out": {"obi-injection/inject": "false"},
    "native": {"obi-injection/native-sidecar": "true"},
    "overrides": {
        "obi-injection/open-port": "80,8000-8099",
        "obi-injection/service-name": "svc",
        "obi-injection/memory-request": "48Mi",
        "obi-injection/env.OTEL_X": "1",
    },
    "status": {
        "obi-injection/status": json.dumps(
            {"version": 1, "hash": "sha256:00", "placement": "containers",
             "originalShareProcessNamespace": None}, separators=(",", ":")),
    },
}

for path in sorted((testdata / "deployments").glob("*.yaml")):
    deployment = yaml.safe_load(path.read_text())
    for name, annotations in VARIANTS.items():
        obj = json.loads(json.dumps(deployment))
        template = obj["spec"]["template"].setdefault("metadata", {})
        template.setdefault("annotations", {}).update(annotations)
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "seed",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": obj["metadata"]["name"],
                "namespace": obj["metadata"].get("namespace", "default"),
                "operation": "CREATE",
                "userInfo": {},
                "object": obj,
            },
        }
        seed = out / f"{path.stem}-{name}.json"
        seed.write_text(json.dumps(review, separators=(",", ":")))
