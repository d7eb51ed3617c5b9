"""The Kubernetes manifests render (kustomize, through kubectl) and validate against the
Kubernetes API schemas (kubernetes-validate, offline), and say what operations rely on: probes
on /readyz and /healthz, a preStop + grace period that cover the drain, metrics off the Service,
WebSockets and TLS on the Ingress, HPA on CPU and sockets, a PDB, a migration Job, and secrets
from a Secret."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (.ci/run installs it)"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def production() -> dict[str, dict[str, Any]]:
    docs = render("production")
    return {doc["kind"]: doc for doc in docs}


def test_every_rendered_manifest_validates_against_the_api_schemas() -> None:
    docs = render("production")
    assert len(docs) >= 7
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc}") from exc
    assert {doc["metadata"].get("namespace") for doc in docs} == {"kuda"}


def test_deployment_probes_drain_metrics_and_secrets(production: dict[str, Any]) -> None:
    deployment = production["Deployment"]
    pod = deployment["spec"]["template"]
    server = pod["spec"]["containers"][0]
    assert server["image"].startswith("ghcr.io/") and not server["image"].endswith(":latest")
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    config = production["ConfigMap"]["data"]
    drain_s = float(config["DRAIN_S"])
    pre_stop = server["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop + drain + uvicorn's 10 s for in-flight work fit before the SIGKILL.
    assert pod["spec"]["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain_s + 10
    assert config["LOG_FORMAT"] == "json"
    metrics_port = int(config["METRICS_PORT"])
    assert {"name": "metrics", "containerPort": metrics_port} in server["ports"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    refs = [ref["secretRef"]["name"] for ref in server["envFrom"] if "secretRef" in ref]
    assert refs == ["kuda-secrets"]
    assert "JWT_SECRET" not in yaml.safe_dump(production["ConfigMap"])
    wait = pod["spec"]["initContainers"][0]
    assert "kuda migrate --check" in " ".join(wait["command"])
    assert server["resources"]["requests"]["memory"] and server["resources"]["limits"]["memory"]


def test_service_and_ingress_expose_http_and_websockets_over_tls_only(
    production: dict[str, Any],
) -> None:
    ports = production["Service"]["spec"]["ports"]
    assert [p["targetPort"] for p in ports] == ["http"]  # never the metrics port
    ingress = production["Ingress"]
    assert ingress["spec"]["tls"][0]["secretName"]
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_autoscaling_disruption_budget_and_migration_job(production: dict[str, Any]) -> None:
    hpa = production["HorizontalPodAutoscaler"]
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert kinds["Pods"]["pods"]["metric"]["name"] == "kuda_ws_open_sockets"
    assert hpa["spec"]["minReplicas"] >= 2
    assert production["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    job = production["Job"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["kuda", "migrate"]
    assert (
        container["image"]
        == production["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    )
