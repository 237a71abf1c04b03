"""The operator runs with exactly the RBAC the chart grants, and nothing more.

A ServiceAccount bound to a Role with get/list/watch/patch on videotranscodes and their status and
create on events; a token from the TokenRequest API; a kubeconfig that uses only that token.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from vidup.localstack.stack import Stack

sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))
from operator_support import World, wait_for

#: What the chart's Role must say (see the operator's README section).
OPERATOR_RULES = [
    {"apiGroups": ["vidup.io"], "resources": ["videotranscodes"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["vidup.io"], "resources": ["videotranscodes/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


def restricted_kubeconfig(world: World, kube: Stack, path: Path) -> Path:
    assert world.api is not None
    core, rbac = client.CoreV1Api(world.api), client.RbacAuthorizationV1Api(world.api)
    ns, name = world.namespace, "vidup-operator"
    core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
    rbac.create_namespaced_role(ns, {"metadata": {"name": name}, "rules": OPERATOR_RULES})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
    })
    token = core.create_namespaced_service_account_token(
        name, ns, {"spec": {"expirationSeconds": 3600}},
    ).status.token
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name, "namespace": ns}}],
        "current-context": name,
    }))
    return path


@pytest.fixture(scope="module")
def world(kube: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(kube, tmp_path_factory.mktemp("operator-rbac")).start()
    try:
        kubeconfig = restricted_kubeconfig(w, kube, w.run_dir / "operator.kubeconfig")
        w.start_operator(env={"KUBECONFIG": str(kubeconfig)})
        w.start_worker(1)
        yield w
    finally:
        w.stop()


def test_the_restricted_kubeconfig_really_is_restricted(world: World) -> None:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(world.run_dir / "operator.kubeconfig"))
    with pytest.raises(client.exceptions.ApiException) as denied:
        client.CoreV1Api(api).list_namespaced_pod(world.namespace)
    assert denied.value.status == 403


def test_the_whole_lifecycle_works_with_only_the_charts_rbac(world: World) -> None:
    name = f"rbac-{uuid.uuid4().hex[:6]}"
    world.create(name, world.upload(name, seconds=3))
    status = world.wait_phase(name, {"Completed", "Failed"})
    assert status["phase"] == "Completed"
    # The Completed event is posted after the status that says so (as in test_operator_faults).
    wait_for(lambda: {"Queued", "Started", "Completed"} <= {e["reason"] for e in world.events(name)}, 10,
             f"{name}'s Queued, Started and Completed events")
    outputs = world.storage_dir / status["outputs"]["path"]
    world.custom.delete_namespaced_custom_object("vidup.io", "v1alpha1", world.namespace, "videotranscodes", name)
    wait_for(lambda: world.get(name) is None, 60, f"{name} to be deleted through the finalizer")
    assert not outputs.exists()
    log = world.processes[0].log_tail(300)
    assert "forbidden" not in log.lower(), log
