"""The chart, statically: lint, the schema refuses bad values, every object is labelled and every
pod locked down, RBAC is exactly what the README lists, and four value sets render manifests that
a real API server accepts (server-side dry run). The chart on a real node: tests/cluster."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from chart_support import CHART, helm, readme_table, render, values_table

from vidup.localcluster import addons
from vidup.localstack import binaries
from vidup.localstack.stack import Stack

STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "helm.sh/chart")
#: The operator's rules as the README lists them (and tests/e2e/test_operator_rbac.py proves enough).
OPERATOR_RULES = [
    {"apiGroups": ["vidup.io"], "resources": ["videotranscodes"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["vidup.io"], "resources": ["videotranscodes/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
VALUE_SETS = {
    "defaults": [],
    "external-redis": ["redis.enabled=false", "externalRedis.existingSecret=managed-redis"],
    "existing-claim-and-secret": ["storage.existingClaim=shared-videos", "auth.existingSecret=vidup-keys"],
    "autoscaling-and-httproute": ["worker.autoscaling.enabled=true", "httpRoute.enabled=true",
                                  "httpRoute.parentRefs[0].name=traefik", "httpRoute.parentRefs[0].namespace=traefik",
                                  "ingress.enabled=false"],
}


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((obj["metadata"]["name"], obj["spec"]))
    return specs


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_helm_lint_strict() -> None:
    done = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(("value", "complaint"), [
    ("ingest.replicaCount=two", "/ingest/replicaCount"),
    ("ingest.replicaCont=3", "replicaCont"),
    ("storage.accessMode=ReadWriteAlways", "/storage/accessMode"),
    ("config.X264_PRESET=fast", "X264_PRESET"),
])
def test_schema_rejects_wrong_types_and_unknown_keys(value: str, complaint: str) -> None:
    done = helm("template", "vidup", str(CHART), "--set", value, check=False)
    assert done.returncode != 0
    assert complaint in done.stderr


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_is_labelled_and_every_pod_locked_down(name: str) -> None:
    objects = render(*VALUE_SETS[name])
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert all(label in labels for label in STANDARD_LABELS), (obj["kind"], obj["metadata"]["name"])
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    specs = _pod_specs(objects)
    assert len(specs) >= 4
    for pod_name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, pod_name
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] != 0
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, pod_name
            assert context["readOnlyRootFilesystem"] is True, pod_name
            assert context["capabilities"]["drop"] == ["ALL"], pod_name
            assert "limits" in container["resources"] and "requests" in container["resources"], pod_name
            assert ":" in container["image"] and container["image"].rsplit(":", 1)[1], pod_name
    assert not _by_kind(objects, "ClusterRole") and not _by_kind(objects, "ClusterRoleBinding")


def test_operator_role_is_exactly_the_readme_rules() -> None:
    roles = {r["metadata"]["labels"]["app.kubernetes.io/component"]: r for r in _by_kind(render(), "Role")}
    assert roles["operator"]["rules"] == OPERATOR_RULES
    assert roles["ingest"]["rules"] == [
        {"apiGroups": ["vidup.io"], "resources": ["videotranscodes"], "verbs": ["create", "get", "list", "watch"]}]


def test_workers_get_no_kubernetes_credentials_and_time_to_drain() -> None:
    objects = render("worker.terminationGracePeriodSeconds=120")
    worker = next(d for d in _by_kind(objects, "Deployment")
                  if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker")
    spec = worker["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["terminationGracePeriodSeconds"] == 120
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["VIDUP_WORKER_DRAIN_SECONDS"] == "90"
    accounts = {a["metadata"]["name"]: a for a in _by_kind(objects, "ServiceAccount")}
    account = accounts[spec["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False


def test_secret_stores_only_digests_of_the_given_keys() -> None:
    key = "vk_" + uuid.uuid4().hex * 2
    objects = render("auth.apiKeys[0].tenant=acme", f"auth.apiKeys[0].key={key}")
    secret = next(s for s in _by_kind(objects, "Secret") if "api-keys.json" in s["data"])
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert all(key not in value for value in data.values())
    keys = json.loads(data["api-keys.json"])["keys"]
    assert {"tenant": "acme", "sha256": hashlib.sha256(key.encode()).hexdigest()} in keys
    bootstrap = {"tenant": "default", "sha256": hashlib.sha256(data["api-key"].encode()).hexdigest()}
    assert bootstrap in keys
    assert len(data["token-secret"]) >= 32


def test_autoscaling_renders_an_hpa_and_no_fixed_replicas() -> None:
    objects = render("worker.autoscaling.enabled=true")
    assert len(_by_kind(objects, "HorizontalPodAutoscaler")) == 1
    worker = next(d for d in _by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-worker"))
    assert "replicas" not in worker["spec"]
    assert not _by_kind(objects, "ScaledObject")  # KEDA's API is not in this (template) cluster


def test_readme_values_table_matches_the_schema() -> None:
    assert readme_table() == values_table(), "regenerate with: .venv/bin/python tests/chart/chart_support.py"


@pytest.fixture(scope="module")
def gateway_api(kube: Stack) -> Stack:
    """The session's API server with the Gateway API CRDs (HTTPRoute), as the local cluster has."""
    addons.apply(kube.kubeconfig, addons.gateway_api_crds())
    addons.kubectl(kube.kubeconfig, "wait", "--for", "condition=Established", "--timeout", "60s",
                   "crd/httproutes.gateway.networking.k8s.io")
    return kube


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_value_set_is_accepted_by_the_api_server(gateway_api: Stack, name: str) -> None:
    namespace = f"chart-{name}-{uuid.uuid4().hex[:6]}"
    kubectl = [str(binaries.expected().kubectl), "--kubeconfig", str(gateway_api.kubeconfig)]
    subprocess.run([*kubectl, "create", "namespace", namespace], check=True, capture_output=True)
    manifest = helm("template", "vidup", str(CHART), "--namespace", namespace,
                    *[arg for pair in VALUE_SETS[name] for arg in ("--set", pair)]).stdout
    done = subprocess.run([*kubectl, "apply", "--dry-run=server", "-n", namespace, "-f", "-"],
                          input=manifest, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(server dry run)" in done.stdout
