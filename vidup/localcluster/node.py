"""The rest of a one-node cluster as local processes, configured the way
``hack/local-up-cluster.sh`` does: kube-controller-manager and kube-scheduler beside the API
server, and the node itself, kubelet (cgroup v1, cgroupfs, containerd over CRI) and kube-proxy
(iptables mode).

Facts about this machine that shape the kubelet (see README "Local Kubernetes cluster"): it mounts
cgroup v1, so ``failCgroupV1: false``; pods go under their own cgroup root (``/vidup``), made in
every hierarchy beforehand so ``down`` can remove exactly what the cluster made; image garbage
collection is off, since the images were loaded, not pulled, and cannot come back.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from vidup.localcluster import hostnet
from vidup.localcluster.runtime import RuntimePaths
from vidup.localstack.binaries import NodeBinaries
from vidup.localstack.controlplane import NODE_NAME, SERVICE_CIDR, ControlPlane
from vidup.localstack.processes import ManagedProcess, free_port

CGROUP_ROOT = "vidup"
CGROUP_FS = Path("/sys/fs/cgroup")
CLUSTER_DNS = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250


def _control_plane_component(cp: ControlPlane, binary: Path, run_dir: Path, *args: str) -> ManagedProcess:
    """kube-controller-manager or kube-scheduler: its own identity, one instance (no leader
    election), its secure port on loopback."""
    kubeconfig = cp.write_kubeconfig(run_dir / "kubeconfigs" / binary.name, binary.name)
    return ManagedProcess(binary.name, [
        str(binary),
        "--kubeconfig", str(kubeconfig),
        "--authentication-kubeconfig", str(kubeconfig),
        "--authorization-kubeconfig", str(kubeconfig),
        "--leader-elect=false",
        "--bind-address", "127.0.0.1",
        "--secure-port", str(free_port()),
        "--v", "1",
        *args,
    ], run_dir / "logs" / f"{binary.name}.log")


def controller_manager(cp: ControlPlane, tools: NodeBinaries, run_dir: Path) -> ManagedProcess:
    assert cp.pki is not None
    return _control_plane_component(
        cp, tools.kube_controller_manager, run_dir,
        "--use-service-account-credentials=true",
        "--service-account-private-key-file", str(cp.pki.sa_private),
        "--root-ca-file", str(cp.pki.ca_cert),
        "--service-cluster-ip-range", SERVICE_CIDR,
        "--cluster-cidr", hostnet.CLUSTER_CIDR,
        "--allocate-node-cidrs=false",
        "--cluster-name", "vidup",
    )


def scheduler(cp: ControlPlane, tools: NodeBinaries, run_dir: Path) -> ManagedProcess:
    return _control_plane_component(cp, tools.kube_scheduler, run_dir)


def kubelet_config(cp: ControlPlane, runtime_paths: RuntimePaths, run_dir: Path) -> dict[str, Any]:
    assert cp.pki is not None
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": hostnet.NODE_ADDRESS,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(cp.pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{runtime_paths.socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "cgroupsPerQOS": True,
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(run_dir / "pod-logs"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "serializeImagePulls": False,
        "maxPods": 110,
        "registerNode": True,
        "shutdownGracePeriod": "0s",
        "staticPodPath": "",
    }


def make_cgroup_root() -> None:
    """Create ``/<CGROUP_ROOT>`` in every v1 hierarchy (cpuset needs its cpus and mems filled in)."""
    for hierarchy in _hierarchies():
        target = hierarchy / CGROUP_ROOT
        target.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not (target / name).read_text().strip():
                    (target / name).write_text((hierarchy / name).read_text())


def remove_cgroup_root() -> list[Path]:
    """Remove the cluster's cgroups, deepest first; returns any that could not be removed."""
    left = []
    for hierarchy in _hierarchies():
        root = hierarchy / CGROUP_ROOT
        if not root.exists():
            continue
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
        if root.exists():
            left.append(root)
    return left


def _hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies: each v1 controller, named ones like systemd, and the v2
    ``unified`` one of a hybrid host (runc makes the pods' cgroups there too)."""
    found = []
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] in ("cgroup", "cgroup2") and fields[1].startswith(str(CGROUP_FS)):
                found.append(Path(fields[1]))
    return found


def kubelet(cp: ControlPlane, tools: NodeBinaries, runtime_paths: RuntimePaths, run_dir: Path) -> ManagedProcess:
    config = run_dir / "kubelet-config.yaml"
    config.write_text(yaml.safe_dump(kubelet_config(cp, runtime_paths, run_dir)))
    kubeconfig = cp.write_kubeconfig(run_dir / "kubeconfigs" / "kubelet", "kubelet")
    env = {"PATH": f"{tools.containerd.parent}:{os.environ.get('PATH', '')}"}
    return ManagedProcess("kubelet", [
        str(tools.kubelet),
        "--config", str(config),
        "--kubeconfig", str(kubeconfig),
        "--root-dir", str(run_dir / "kubelet"),
        "--hostname-override", NODE_NAME,
        "--node-ip", hostnet.NODE_ADDRESS,
        "--v", "1",
    ], run_dir / "logs" / "kubelet.log", env=env)


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": hostnet.CLUSTER_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": hostnet.NODE_ADDRESS,
        "healthzBindAddress": f"127.0.0.1:{free_port()}",
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        # Leave the host's conntrack table size alone (a container may not write it).
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


def kube_proxy(cp: ControlPlane, tools: NodeBinaries, run_dir: Path) -> ManagedProcess:
    kubeconfig = cp.write_kubeconfig(run_dir / "kubeconfigs" / "kube-proxy", "kube-proxy")
    config = run_dir / "kube-proxy-config.yaml"
    config.write_text(yaml.safe_dump(kube_proxy_config(kubeconfig)))
    return ManagedProcess("kube-proxy", [str(tools.kube_proxy), "--config", str(config), "--v", "1"],
                          run_dir / "logs" / "kube-proxy.log")
