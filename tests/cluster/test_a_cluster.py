"""The local cluster works as a cluster: a Ready node runs pods from locally built images,
`kubectl logs/exec/port-forward` reach them, Services load-balance and resolve by DNS name, the
ingress controller on the host streams a large body through, and Deployments scale and heal."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cluster_support import apply, echo_config_map, echo_pod_spec, kubectl, kubectl_argv, wait_for

from vidup.localcluster import images
from vidup.localcluster.cluster import Cluster
from vidup.localstack.controlplane import NODE_NAME
from vidup.localstack.processes import free_port

NS = "cluster-test"


@pytest.fixture(scope="module")
def ns(local_cluster: Cluster) -> Iterator[str]:
    kubectl(local_cluster, "create", "namespace", NS)
    apply(local_cluster, echo_config_map(NS))
    yield NS
    kubectl(local_cluster, "delete", "namespace", NS, "--wait=false", check=False)


def _image() -> str:
    return images.chart_default_images()["ingest"]


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": echo_pod_spec(_image())}},
    }


def _service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}


def _ready_pods(cluster: Cluster, app: str) -> list[str]:
    out = kubectl(cluster, "-n", NS, "get", "pods", "-l", f"app={app}", "-o", "json").stdout
    ready = []
    for pod in json.loads(out)["items"]:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") == "True":
            ready.append(pod["metadata"]["name"])
    return sorted(ready)


def test_node_is_ready_and_runs_the_system_pods(local_cluster: Cluster) -> None:
    nodes = json.loads(kubectl(local_cluster, "get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == [NODE_NAME]
    conditions = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert nodes[0]["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert nodes[0]["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
    for namespace, deployment in (("kube-system", "coredns"), ("traefik", "traefik")):
        status = json.loads(kubectl(local_cluster, "-n", namespace, "get", "deployment", deployment,
                                    "-o", "json").stdout)["status"]
        assert status.get("readyReplicas") == 1


def test_pod_from_a_local_image_with_logs_exec_and_port_forward(local_cluster: Cluster, ns: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo-solo", "namespace": ns},
           "spec": echo_pod_spec(_image())}
    apply(local_cluster, pod)
    kubectl(local_cluster, "-n", ns, "wait", "--for=condition=Ready", "pod/echo-solo", "--timeout=120s")
    phase = kubectl(local_cluster, "-n", ns, "get", "pod", "echo-solo", "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Running"
    logs = kubectl(local_cluster, "-n", ns, "logs", "echo-solo").stdout
    assert "echo server starting on echo-solo" in logs
    hostname = kubectl(local_cluster, "-n", ns, "exec", "echo-solo", "--", "cat", "/etc/hostname").stdout
    assert hostname.strip() == "echo-solo"
    shouted = kubectl(local_cluster, "-n", ns, "exec", "-i", "echo-solo", "--", "python3", "-c",
                      "import sys; print(sys.stdin.read().upper())", stdin="through stdin").stdout
    assert shouted.strip() == "THROUGH STDIN"
    port = free_port()
    forward = subprocess.Popen(
        [*kubectl_argv(local_cluster), "-n", ns, "port-forward", "pod/echo-solo", f"{port}:8080"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        answer = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=2).text, 30, "port-forward")
        assert answer == "echo-solo"
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_service_by_dns_name_balances_across_two_pods(local_cluster: Cluster, ns: str) -> None:
    apply(local_cluster, _deployment("echo", 2), _service("echo"))
    wait_for(lambda: len(_ready_pods(local_cluster, "echo")) == 2, 120, "two echo pods Ready")
    # Ready pods reach kube-proxy's rules a moment later, and not always together (CI once counted
    # 40 answers from one pod): wait until both have answered (or a minute), then count.
    client = f"""
import collections, json, time, urllib.request
answered = set()
deadline = time.monotonic() + 60
while len(answered) < 2 and time.monotonic() < deadline:
    try:
        answered.add(urllib.request.urlopen("http://echo.{ns}.svc.cluster.local/", timeout=5).read().decode())
    except OSError:
        time.sleep(0.5)
seen = collections.Counter()
for _ in range(40):
    with urllib.request.urlopen("http://echo.{ns}.svc.cluster.local/", timeout=5) as answer:
        seen[answer.read().decode()] += 1
print(json.dumps(seen))
"""
    out = kubectl(local_cluster, "-n", ns, "exec", "echo-solo", "--", "python3", "-c", client, timeout=120).stdout
    seen = json.loads(out)
    assert set(seen) == set(_ready_pods(local_cluster, "echo")), seen
    assert all(count >= 3 for count in seen.values()), seen


def _ingress(path: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "echo", "namespace": NS},
        "spec": {"rules": [{"http": {"paths": [{"path": path, "pathType": "Prefix", "backend": {
            "service": {"name": "echo-one", "port": {"number": 80}}}}]}}]},
    }


def _http_route(path: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "echo", "namespace": NS},
        "spec": {"parentRefs": [{"name": "traefik", "namespace": "traefik"}],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                            "backendRefs": [{"name": "echo-one", "port": 80}]}]},
    }


@pytest.fixture(scope="module")
def echo_one(local_cluster: Cluster, ns: str) -> str:
    """One echo pod behind a Service, routed by an Ingress (/ingress) and an HTTPRoute (/gateway)."""
    apply(local_cluster, _deployment("echo-one", 1), _service("echo-one"), _ingress("/ingress"),
          _http_route("/gateway"))
    wait_for(lambda: len(_ready_pods(local_cluster, "echo-one")) == 1, 120, "the echo-one pod Ready")
    return _ready_pods(local_cluster, "echo-one")[0]


def test_host_reaches_a_service_through_ingress_and_gateway(local_cluster: Cluster, echo_one: str) -> None:
    for path in ("/ingress", "/gateway"):
        answer = wait_for(lambda p=path: _get_ok(f"{local_cluster.ingress_url}{p}"), 60, f"route {path}")
        assert answer == echo_one


def _get_ok(url: str) -> str:
    response = requests.get(url, timeout=5)
    return response.text if response.status_code == 200 else ""


def test_a_200_mib_body_streams_through_the_ingress(local_cluster: Cluster, ns: str, echo_one: str) -> None:
    """The first 150 MiB reach the pod while the client still holds back the last 50 MiB: the
    proxy forwards the body as it arrives instead of buffering it first."""
    total, first = 200 << 20, 150 << 20
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    host, port = local_cluster.ingress_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    connection.putrequest("POST", "/ingress/upload")
    connection.putheader("Content-Length", str(total))
    connection.endheaders()
    for _ in range(first >> 20):
        connection.send(block)
        digest.update(block)

    def received() -> int:
        out = kubectl(local_cluster, "-n", ns, "exec", echo_one, "--", "cat", "/tmp/received", check=False).stdout
        return int(out) if out.strip().isdigit() else 0

    arrived = wait_for(lambda: received() >= first - (8 << 20) and received(), 60,
                       "the first bytes at the backend while the client waits")
    assert arrived < total
    time.sleep(1)  # nothing more arrives while the client waits
    assert received() <= first
    for _ in range((total - first) >> 20):
        connection.send(block)
        digest.update(block)
    response = connection.getresponse()
    assert response.status == 200
    assert response.read().decode() == f"{total} {digest.hexdigest()}"
    connection.close()


def test_deployment_scales_to_three_and_replaces_a_force_deleted_pod(local_cluster: Cluster, ns: str) -> None:
    apply(local_cluster, _deployment("scaled", 1))
    wait_for(lambda: len(_ready_pods(local_cluster, "scaled")) == 1, 120, "one scaled pod Ready")
    kubectl(local_cluster, "-n", ns, "scale", "deployment/scaled", "--replicas=3")
    pods = wait_for(lambda: len(_ready_pods(local_cluster, "scaled")) == 3 and _ready_pods(local_cluster, "scaled"),
                    120, "three scaled pods Ready")
    victim = pods[0]
    kubectl(local_cluster, "-n", ns, "delete", "pod", victim, "--force", "--grace-period=0")
    replaced = wait_for(lambda: (len(now := _ready_pods(local_cluster, "scaled")) == 3 and victim not in now
                                 and now), 120, "a replacement pod Ready")
    assert victim not in replaced


def test_up_again_is_a_no_op(local_cluster: Cluster) -> None:
    again = Cluster(local_cluster.run_dir, local_cluster.ingress_port).up()
    assert again.ingress_url == local_cluster.ingress_url
    assert kubectl(local_cluster, "get", "node", NODE_NAME).returncode == 0


def test_cluster_env_points_a_shell_at_the_cluster(local_cluster: Cluster, tmp_path: Path) -> None:
    """`eval "$(vidup cluster env)"` gives kubectl, helm and the ingress URL, as the README says."""
    exported = subprocess.run([sys.executable, "-m", "vidup.cli", "cluster", "env", "--run-dir",
                               str(local_cluster.run_dir)], capture_output=True, text=True, timeout=60, check=True)
    shell = f'{exported.stdout}\nkubectl get node -o name && helm version --short && echo "URL=$VIDUP_INGRESS_URL"'
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, check=True).stdout
    assert f"node/{NODE_NAME}" in out
    assert "\nv4." in out  # helm version --short
    assert f"URL={local_cluster.ingress_url}" in out


def test_a_second_cluster_is_refused_without_touching_the_first(local_cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="another vidup cluster runs"):
        Cluster(tmp_path / "second", free_port()).up()
    assert kubectl(local_cluster, "get", "node", NODE_NAME).returncode == 0
    assert requests.get(local_cluster.ingress_url + "/", timeout=5).status_code == 404
