"""manifests/: strict schema validity of every file and build, and the properties the issue and
the webhook's contract require, read from the rendered kustomize output."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import find

from obi_kind.deployments import container, env_value, pod_spec
from obi_kind.manifests import (
    ManifestError,
    read_kustomization,
    validate_object,
    validate_tree,
)

WEBHOOK_ENV = {
    "OBI_WEBHOOK_LISTEN_ADDR", "OBI_WEBHOOK_HEALTH_ADDR", "OBI_WEBHOOK_TLS_CERT_FILE",
    "OBI_WEBHOOK_TLS_KEY_FILE", "OBI_WEBHOOK_SIDECAR_IMAGE", "OBI_WEBHOOK_SIDECAR_IMAGE_PULL_POLICY",
    "OBI_WEBHOOK_OTLP_ENDPOINT",
    "OBI_WEBHOOK_CLUSTER_NAME", "OBI_WEBHOOK_SIDECAR_CPU_REQUEST", "OBI_WEBHOOK_SIDECAR_MEMORY_REQUEST",
    "OBI_WEBHOOK_SIDECAR_MEMORY_LIMIT", "OBI_WEBHOOK_LOG_FORMAT", "OBI_WEBHOOK_LOG_LEVEL",
}
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_every_manifest_and_build_is_strictly_valid(manifests: Path) -> None:
    problems = validate_tree(manifests)
    assert problems == [], "\n".join(map(str, problems))


def test_validation_is_strict_about_unknown_fields() -> None:
    deployment = yaml.safe_load(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: x}
        spec:
          replica: 2
          selector: {matchLabels: {app: x}}
          template:
            metadata: {labels: {app: x}}
            spec: {containers: [{name: x, image: x}]}
        """
    )
    problems = validate_object(deployment)
    assert problems and all("'replica' was unexpected" in p for p in problems)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"kind": "Service"}, "apiVersion and kind are required"),
        ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": "https"}]}},
         "spec.ports.0.port"),
        ({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, "Couldn't find schema"),
        ({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"},
          "spec": {"secretName": "s", "issuerRef": {"name": "i"}, "dnsName": ["x"]}}, "'dnsName' was unexpected"),
        ({"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "i"},
          "spec": {"ca": {}}}, "'secretName' is a required property"),
    ],
)
def test_validation_reports_each_kind_of_problem(obj: dict[str, Any], expected: str) -> None:
    problems = validate_object(obj)
    assert any(expected in p for p in problems), problems


def test_unreferenced_and_broken_files_are_reported(manifests: Path, tmp_path: Path) -> None:
    tree = tmp_path / "manifests"
    shutil.copytree(manifests, tree)
    (tree / "demo" / "forgotten.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: f}\n")
    kustomization = tree / "base" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("- service.yaml", "- services.yaml"))
    messages = [str(p) for p in validate_tree(tree)]
    assert "demo/forgotten.yaml: not referenced by any kustomization" in messages
    assert any(m.startswith("base/kustomization.yaml: ") and "resource 'services.yaml' does not exist" in m for m in messages)
    # The other overlays are still checked, and the builds through base fail with kustomize's reason.
    assert any(m.startswith("kustomize build demo: ") for m in messages)


def test_kustomization_roles_are_read(manifests: Path, tmp_path: Path) -> None:
    demo = read_kustomization(manifests / "demo")
    assert [p.name for p in demo.bases] == ["default"]
    assert [p.name for p in demo.resource_files] == [
        "namespace.yaml", "backend.yaml", "frontend.yaml", "loadgen.yaml", "otel-collector.yaml"
    ]
    assert [p.name for p in demo.patch_files] == ["webhook-patch.yaml"]
    assert {p.name for p in demo.generator_files} == {"backend.py", "frontend.py", "loadgen.py", "otel-collector-config.yaml"}
    # Without `make certs` the default overlay's Secret inputs are missing, and that is reported.
    shutil.copytree(manifests / "default", tmp_path / "default", ignore=shutil.ignore_patterns("certs"))
    shutil.copytree(manifests / "base", tmp_path / "base")
    with pytest.raises(ManifestError, match="generator input 'certs/tls.crt' does not exist"):
        read_kustomization(tmp_path / "default")


def test_webhook_configuration(builds: dict[str, list[dict[str, Any]]], manifests: Path) -> None:
    config = find(builds["default"], "MutatingWebhookConfiguration", "obi-webhook")
    [webhook] = config["webhooks"]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["rules"] == [
        {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
         "resources": ["deployments"], "scope": "Namespaced"}
    ]
    assert webhook["clientConfig"]["service"] == {
        "name": "obi-webhook", "namespace": "obi-system", "path": "/mutate", "port": 443
    }
    expressions = webhook["namespaceSelector"]["matchExpressions"]
    assert {"key": "obi-injection", "operator": "In", "values": ["enabled"]} in expressions
    excluded = next(e for e in expressions if e["key"] == "kubernetes.io/metadata.name")
    assert excluded["operator"] == "NotIn"
    assert set(excluded["values"]) == {"kube-system", "kube-public", "kube-node-lease", "obi-system"}
    # The caBundle is the bundle certs/gen.sh wrote (kustomize wraps base64 lines; decoders skip them).
    bundle = base64.b64decode("".join(webhook["clientConfig"]["caBundle"].split()))
    assert bundle == (manifests / "default" / "certs" / "ca.crt").read_bytes()
    assert b"BEGIN CERTIFICATE" in bundle


def test_base_has_no_ca_bundle_and_no_secret(builds: dict[str, list[dict[str, Any]]]) -> None:
    config = find(builds["base"], "MutatingWebhookConfiguration", "obi-webhook")
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    assert not [o for o in builds["base"] if o["kind"] == "Secret"]


def test_tls_secret_holds_the_generated_pair(builds: dict[str, list[dict[str, Any]]], manifests: Path) -> None:
    secret = find(builds["default"], "Secret", "obi-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["namespace"] == "obi-system"
    for key in ("tls.crt", "tls.key", "ca.crt"):
        decoded = base64.b64decode("".join(secret["data"][key].split()))
        assert decoded == (manifests / "default" / "certs" / key).read_bytes()


def test_webhook_deployment(builds: dict[str, list[dict[str, Any]]]) -> None:
    objects = builds["default"]
    deployment = find(objects, "Deployment", "obi-webhook")
    assert deployment["metadata"]["namespace"] == "obi-system"
    assert deployment["spec"]["replicas"] == 2
    spec = pod_spec(deployment)
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["automountServiceAccountToken"] is False

    webhook = container(deployment, "webhook")
    assert webhook is not None
    assert webhook["securityContext"]["readOnlyRootFilesystem"] is True
    assert webhook["securityContext"]["allowPrivilegeEscalation"] is False
    assert webhook["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert webhook["resources"]["requests"] and webhook["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in webhook["ports"]}
    assert ports == {"https": 8443, "health": 8080}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert webhook[probe]["httpGet"] == {"path": path, "port": "health"}
    env_names = {e["name"] for e in webhook["env"]}
    assert env_names == WEBHOOK_ENV
    assert env_value(webhook, "OBI_WEBHOOK_LISTEN_ADDR") == "0.0.0.0:8443"
    assert env_value(webhook, "OBI_WEBHOOK_HEALTH_ADDR") == "0.0.0.0:8080"
    assert env_value(webhook, "OBI_WEBHOOK_TLS_CERT_FILE") == "/etc/obi-webhook/tls/tls.crt"
    assert env_value(webhook, "OBI_WEBHOOK_TLS_KEY_FILE") == "/etc/obi-webhook/tls/tls.key"
    assert env_value(webhook, "OBI_WEBHOOK_LOG_FORMAT") in {"text", "json"}

    [mount] = webhook["volumeMounts"]
    assert mount["mountPath"] == "/etc/obi-webhook/tls" and mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount would never see a rotated Secret
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    find(objects, "Secret", volume["secret"]["secretName"])


def test_service_and_disruption_budget_select_the_webhook(builds: dict[str, list[dict[str, Any]]]) -> None:
    objects = builds["default"]
    deployment = find(objects, "Deployment", "obi-webhook")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service", "obi-webhook")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    assert https["port"] == 443 and https["targetPort"] == "https"
    budget = find(objects, "PodDisruptionBudget", "obi-webhook")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("overlay", ["base", "default", "cert-manager", "demo"])
def test_webhook_gets_no_api_permissions(builds: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = builds[overlay]
    assert not [o for o in objects if o["kind"] in RBAC_KINDS]
    account = find(objects, "ServiceAccount", "obi-webhook")
    assert account["automountServiceAccountToken"] is False


def test_system_namespace_is_never_injected(builds: dict[str, list[dict[str, Any]]]) -> None:
    namespace = find(builds["default"], "Namespace", "obi-system")
    assert namespace["metadata"]["labels"]["obi-injection"] != "enabled"


def test_cert_manager_overlay_wires_certificate_to_webhook(builds: dict[str, list[dict[str, Any]]]) -> None:
    objects = builds["cert-manager"]
    assert not [o for o in objects if o["kind"] == "Secret"]  # cert-manager writes it
    config = find(objects, "MutatingWebhookConfiguration", "obi-webhook")
    namespace, name = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    certificate = find(objects, "Certificate", name)
    assert certificate["metadata"]["namespace"] == namespace
    deployment = find(objects, "Deployment", "obi-webhook")
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "tls")
    assert certificate["spec"]["secretName"] == volume["secret"]["secretName"]
    assert set(certificate["spec"]["dnsNames"]) == {
        "obi-webhook.obi-system.svc", "obi-webhook.obi-system.svc.cluster.local"
    }
    assert "server auth" in certificate["spec"]["usages"]
    issuer = find(objects, "Issuer", certificate["spec"]["issuerRef"]["name"])
    ca_certificate = next(
        o for o in objects if o["kind"] == "Certificate" and o["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]
    )
    assert ca_certificate["spec"]["isCA"] is True


def test_demo_overlay(builds: dict[str, list[dict[str, Any]]]) -> None:
    objects = builds["demo"]
    namespace = find(objects, "Namespace", "obi-demo")
    assert namespace["metadata"]["labels"]["obi-injection"] == "enabled"
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment" and o["metadata"].get("namespace") == "obi-demo"}
    assert names == {"frontend", "backend", "loadgen", "otel-collector"}

    # The collector is opted out: the telemetry pipeline is not traced.
    collector = find(objects, "Deployment", "otel-collector")
    assert collector["metadata"]["annotations"]["obi-injection/inject"] == "false"

    # The sidecars' OTLP endpoint is the collector's Service, on a port it exposes.
    webhook = container(find(objects, "Deployment", "obi-webhook"), "webhook")
    assert webhook is not None
    endpoint = env_value(webhook, "OBI_WEBHOOK_OTLP_ENDPOINT")
    assert endpoint is not None
    host, port = endpoint.removeprefix("http://").split(":")
    service_name, service_namespace = host.split(".")[:2]
    service = find(objects, "Service", service_name)
    assert service["metadata"]["namespace"] == service_namespace
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert service["spec"]["selector"].items() <= collector["spec"]["template"]["metadata"]["labels"].items()

    # The frontend calls the backend through the backend's Service.
    frontend = container(find(objects, "Deployment", "frontend"), "frontend")
    assert frontend is not None
    backend_url = env_value(frontend, "BACKEND_URL")
    assert backend_url is not None and backend_url.startswith("http://backend.obi-demo.svc.cluster.local:8080/")
    find(objects, "Service", "backend")


def test_demo_collector_config(builds: dict[str, list[dict[str, Any]]]) -> None:
    objects = builds["demo"]
    deployment = find(objects, "Deployment", "otel-collector")
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "config")
    config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert config["exporters"]["debug"]["verbosity"] == "detailed"
    for pipeline in config["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(config["receivers"])
        assert set(pipeline.get("processors", [])) <= set(config["processors"])
        assert set(pipeline["exporters"]) <= set(config["exporters"])
    assert "traces" in config["service"]["pipelines"]
    container_spec = container(deployment, "otel-collector")
    assert container_spec is not None
    assert container_spec["args"] == ["--config=/etc/otelcol/config.yaml"]


def test_demo_app_code_is_mounted(builds: dict[str, list[dict[str, Any]]]) -> None:
    objects = builds["demo"]
    for name in ("frontend", "backend", "loadgen"):
        deployment = find(objects, "Deployment", name)
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "app")
        config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
        command = container(deployment, name)["command"]  # type: ignore[index]
        script = Path(command[-1]).name
        assert script in config_map["data"], f"{name} runs {script}, not in its ConfigMap"
