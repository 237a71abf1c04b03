"""Helpers for tests against the local cluster: kubectl, manifests, and a snapshot of what the
cluster may change on the host (so a test can prove `down` put it all back)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import m3u8
import requests
import yaml

from vidup.localcluster import hostnet, node
from vidup.localcluster.cluster import Cluster
from vidup.localstack import binaries

ECHO_SERVER = Path(__file__).with_name("echo_server.py")


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(binaries.expected().kubectl), "--kubeconfig", str(cluster.kubeconfig), *args],
                          input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


def release_pods(cluster: Cluster, namespace: str, release: str, component: str | None = None) -> list[dict[str, Any]]:
    """The release's pods (of one component), minus those already being deleted."""
    selector = f"app.kubernetes.io/instance={release}"
    if component:
        selector += f",app.kubernetes.io/component={component}"
    items = json.loads(kubectl(cluster, "-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def diagnosis(cluster: Cluster, namespace: str, release: str, tail: int = 80) -> str:
    """Pods, deployments, videos, events and every release pod's last log lines: what a failed
    install, upload or fault test needs to be read from CI output alone."""
    parts = [kubectl(cluster, "-n", namespace, "get", "pods,deployments,pvc,videotranscodes", "-o", "wide",
                     check=False).stdout,
             kubectl(cluster, "-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-6000:]]
    for pod in release_pods(cluster, namespace, release):
        name = pod["metadata"]["name"]
        log = kubectl(cluster, "-n", namespace, "logs", name, "--all-containers", f"--tail={tail}", check=False)
        parts.append(f"--- {name}\n{log.stdout}{log.stderr}")
    return "\n".join(parts)


def apply(cluster: Cluster, *docs: dict[str, Any]) -> None:
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def echo_pod_spec(image: str) -> dict[str, Any]:
    """A pod spec running tests/cluster/echo_server.py from ``image`` (mounted from a ConfigMap)."""
    return {
        "containers": [{
            "name": "echo", "image": image, "imagePullPolicy": "Never",
            "command": ["python3", "/echo/echo_server.py"],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            "volumeMounts": [{"name": "code", "mountPath": "/echo"}],
        }],
        "volumes": [{"name": "code", "configMap": {"name": "echo-server"}}],
        "terminationGracePeriodSeconds": 1,
    }


def echo_config_map(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "echo-server", "namespace": namespace},
            "data": {"echo_server.py": ECHO_SERVER.read_text()}}


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, subprocess.SubprocessError, OSError) as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass(frozen=True)
class HostSnapshot:
    """What the cluster touches on the host, read from the kernel."""

    links: frozenset[str]
    netns: frozenset[str]
    chains: str
    cgroup_roots: frozenset[str]
    sysctls: str
    run_containerd: bool

    @classmethod
    def take(cls) -> HostSnapshot:
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        return cls(
            links=frozenset(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()),
            netns=frozenset(netns.split()),
            chains=json.dumps({f"{c}/{t}": v for (c, t), v in hostnet.cluster_chains().items()}, sort_keys=True),
            cgroup_roots=frozenset(str(p) for p in node.CGROUP_FS.glob(f"*/{node.CGROUP_ROOT}")),
            sysctls=json.dumps(hostnet.read_sysctls(), sort_keys=True),
            run_containerd=Path("/run/containerd").exists(),
        )


def kubectl_argv(cluster: Cluster) -> list[str]:
    return [str(binaries.expected().kubectl), "--kubeconfig", str(cluster.kubeconfig)]


def assert_hls_served(master_url: str) -> None:
    """The master playlist, its first rendition's playlist and first segment answer through the
    ingress (the segment is MPEG-TS)."""
    master = requests.get(master_url, timeout=10)
    assert master.status_code == 200 and master.text.startswith("#EXTM3U")
    rendition = m3u8.loads(master.text, uri=master_url).playlists[0]
    media = requests.get(rendition.absolute_uri, timeout=10)
    assert media.status_code == 200
    segment = m3u8.loads(media.text, uri=rendition.absolute_uri).segments[0]
    body = requests.get(segment.absolute_uri, timeout=10)
    assert body.status_code == 200 and body.content[:1] == b"\x47"  # an MPEG-TS sync byte
