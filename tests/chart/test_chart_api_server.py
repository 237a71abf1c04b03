"""The chart against a real API server (the session's etcd + kube-apiserver, RBAC on): seven value
sets (S3 storage among them) are accepted in a server-side dry run, the RBAC objects grant each
ServiceAccount exactly what its component needs, and a real install keeps its generated key and
token secret across upgrades and leaves nothing behind on uninstall. On a real node: tests/cluster."""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from chart_support import CHART, VALUE_SETS, helm, kubectl, render, template

from vidup.localcluster import addons
from vidup.localstack import binaries
from vidup.localstack.stack import Stack

#: KEDA's API, for the ScaledObject (the module's own CRDs, from the Go module proxy).
KEDA_MODULE = "github.com/kedacore/keda/v2@v2.21.0"
KEDA_SETS = ["worker.autoscaling.keda.enabled=true", "worker.autoscaling.enabled=true"]


@pytest.fixture(scope="module")
def api_server(kube: Stack) -> Stack:
    """The session's API server with the Gateway API CRDs (HTTPRoute), as the local cluster has,
    and KEDA's ScaledObject CRD."""
    addons.apply(kube.kubeconfig, addons.gateway_api_crds())
    keda = binaries.module_dir(KEDA_MODULE) / "config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml"
    addons.apply(kube.kubeconfig, keda.read_text())
    addons.kubectl(kube.kubeconfig, "wait", "--for", "condition=Established", "--timeout", "60s",
                   "crd/httproutes.gateway.networking.k8s.io", "crd/scaledobjects.keda.sh")
    return kube


def _namespace(kube: Stack, name: str) -> str:
    namespace = f"chart-{name}-{uuid.uuid4().hex[:6]}"
    kubectl(kube.kubeconfig, "create", "namespace", namespace)
    return namespace


@pytest.mark.parametrize("name", [*sorted(VALUE_SETS), "keda"])
def test_value_set_is_accepted_by_the_api_server(api_server: Stack, name: str) -> None:
    namespace = _namespace(api_server, name)
    if name == "keda":
        manifest = template(*KEDA_SETS, namespace=namespace, extra=("--api-versions", "keda.sh/v1alpha1"))
        assert "kind: ScaledObject" in manifest
    else:
        manifest = template(*VALUE_SETS[name], namespace=namespace)
    done = kubectl(api_server.kubeconfig, "apply", "--dry-run=server", "--validate=strict", "-n", namespace,
                   "-f", "-", stdin=manifest, check=False)
    assert done.returncode == 0, done.stderr
    assert "(server dry run)" in done.stdout
    kinds = {doc["kind"] for doc in yaml.safe_load_all(manifest) if doc}
    assert len([line for line in done.stdout.splitlines() if "(server dry run)" in line]) >= len(kinds)


def _can(kube: Stack, namespace: str, account: str, verb: str, resource: str, where: str | None = None) -> bool:
    resource, _, subresource = resource.partition("/")  # kubectl reads "a/b" as resource a named b
    done = kubectl(kube.kubeconfig, "auth", "can-i", verb, resource, "-n", where or namespace,
                   *([f"--subresource={subresource}"] if subresource else []),
                   f"--as=system:serviceaccount:{namespace}:{account}", check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def test_each_service_account_may_do_exactly_what_its_component_needs(api_server: Stack) -> None:
    namespace = _namespace(api_server, "rbac")
    rbac = [o for o in render(namespace=namespace) if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    kubectl(api_server.kubeconfig, "apply", "-n", namespace, "-f", "-",
            stdin=yaml.safe_dump_all(rbac))
    vt = "videotranscodes.vidup.io"
    allowed = {
        "vidup-operator": {("get", vt), ("list", vt), ("watch", vt), ("patch", vt),
                           ("get", f"{vt}/status"), ("patch", f"{vt}/status"), ("create", "events")},
        "vidup-ingest": {("create", vt), ("get", vt), ("list", vt), ("watch", vt), ("delete", vt)},
        "vidup-worker": set(),
    }
    probes = {("get", vt), ("list", vt), ("watch", vt), ("patch", vt), ("create", vt), ("delete", vt),
              ("update", vt), ("get", f"{vt}/status"), ("patch", f"{vt}/status"), ("update", f"{vt}/status"),
              ("create", "events"), ("get", "secrets"), ("list", "secrets"), ("create", "pods"), ("get", "pods"),
              ("create", "pods/exec"), ("get", "configmaps"), ("create", "leases.coordination.k8s.io")}
    for account, grants in allowed.items():
        for verb, resource in sorted(probes):
            assert _can(api_server, namespace, account, verb, resource) == ((verb, resource) in grants), \
                (account, verb, resource)
        # nothing outside the release's namespace, nothing cluster-wide
        assert not _can(api_server, namespace, account, "get", vt, where="default")
        assert not _can(api_server, namespace, account, "list", "namespaces")
        assert not _can(api_server, namespace, account, "list", "customresourcedefinitions")


@pytest.fixture
def release(api_server: Stack) -> Iterator[tuple[str, Path]]:
    namespace = _namespace(api_server, "install")
    yield namespace, api_server.kubeconfig
    helm("uninstall", "vidup", "-n", namespace, kubeconfig=api_server.kubeconfig, check=False)
    kubectl(api_server.kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)


def _auth_secret(kubeconfig: Path, namespace: str) -> dict[str, str]:
    secret = json.loads(kubectl(kubeconfig, "-n", namespace, "get", "secret", "vidup-auth", "-o", "json").stdout)
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_install_keeps_the_generated_key_across_upgrades_and_uninstall_removes_everything(
        release: tuple[str, Path]) -> None:
    """A real install (no nodes here: objects, not pods). ``lookup`` keeps the bootstrap key and the
    token secret when an upgrade adds a key; uninstall removes every object the chart made."""
    namespace, kubeconfig = release
    installed = helm("install", "vidup", str(CHART), "-n", namespace, kubeconfig=kubeconfig).stdout
    assert f"kubectl -n {namespace} get secret vidup-auth" in installed  # NOTES.txt
    first = _auth_secret(kubeconfig, namespace)
    helm("upgrade", "vidup", str(CHART), "-n", namespace, "--set", "auth.apiKeys[0].tenant=acme",
         "--set", "auth.apiKeys[0].key=vk_" + uuid.uuid4().hex, kubeconfig=kubeconfig)
    second = _auth_secret(kubeconfig, namespace)
    assert second["api-key"] == first["api-key"] and second["token-secret"] == first["token-secret"]
    tenants = [k["tenant"] for k in json.loads(second["api-keys.json"])["keys"]]
    assert tenants == ["default", "acme"]
    # the ingest reads the same token secret from the Secret
    deployment = json.loads(kubectl(kubeconfig, "-n", namespace, "get", "deployment", "vidup-ingest",
                                    "-o", "json").stdout)
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VIDUP_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "vidup-auth", "key": "token-secret"}

    manifest = helm("get", "manifest", "vidup", "-n", namespace, kubeconfig=kubeconfig).stdout
    made = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(manifest) if d]
    assert ("Secret", "vidup-auth") in made and ("PersistentVolumeClaim", "vidup-storage") in made
    helm("uninstall", "vidup", "-n", namespace, kubeconfig=kubeconfig)
    for kind, name in made:
        found = kubectl(kubeconfig, "-n", namespace, "get", kind, name, "--ignore-not-found", "-o", "json").stdout
        # gone, or on its way out (no controller-manager here removes the PVC protection finalizer)
        assert not found.strip() or "deletionTimestamp" in json.loads(found)["metadata"], f"{kind}/{name} stays"
