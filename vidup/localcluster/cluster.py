"""`vidup cluster up | env | down`: start a one-node Kubernetes as local processes, describe it,
and remove every trace of it.

Order of ``up``: node address and sysctls → etcd + kube-apiserver (serving pods) → containerd →
images (built by the private Docker engine, loaded into containerd) → kube-controller-manager,
kube-scheduler, kube-proxy, kubelet, the volume provisioner → node Ready → add-ons (Gateway API
CRDs, StorageClass, CoreDNS, Traefik) → the ingress answers on ``127.0.0.1:<port>``.

Everything lives in one run directory (``<cache>/cluster``); ``cluster.json`` records the pids,
the host settings to restore and the user's environment, so ``down`` (another process) can undo
it all: processes (including container shims and every process in the pods' cgroups), mounts,
network namespaces, links, iptables chains, cgroups and containerd's state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidup.localcluster import addons, hostnet, images, node, runtime
from vidup.localcluster.provisioner import PROVISIONER
from vidup.localstack import binaries
from vidup.localstack.controlplane import NODE_NAME, ControlPlane
from vidup.localstack.docker_engine import DockerEngine, mounts_under, remove_stale_shim_sockets
from vidup.localstack.processes import ManagedProcess, free_port, kill_group, pid_alive, wait_until

STATE_FILE = "cluster.json"
DEFAULT_INGRESS_PORT = 30080


def default_run_dir() -> Path:
    return binaries.cache_root() / "cluster"


def _say(message: str) -> None:
    print(f"[vidup cluster] {message}", file=sys.stderr, flush=True)


@dataclass
class Cluster:
    run_dir: Path = field(default_factory=default_run_dir)
    ingress_port: int = DEFAULT_INGRESS_PORT
    control_plane: ControlPlane | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    previous_sysctls: dict[str, str] = field(default_factory=dict)
    ready: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def runtime_paths(self) -> runtime.RuntimePaths:
        return runtime.RuntimePaths(self.run_dir / "containerd")

    def user_env(self) -> dict[str, str]:
        """What `vidup cluster env` exports."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "VIDUP_INGRESS_URL": self.ingress_url,
            "PATH": f"{binaries.bin_dir()}:{os.environ.get('PATH', '')}",
        }

    # -- up ------------------------------------------------------------------------------------

    def up(self, timeout: float = 300) -> Cluster:
        """Start the cluster and return once pods, DNS and the ingress work (no-op if it runs)."""
        if running(self.run_dir):
            _say(f"already running ({self.run_dir})")
            self.ingress_port = int(read_state(self.run_dir)["ingress_port"])
            return self
        if hostnet.link_exists(hostnet.NODE_LINK) and not (self.run_dir / STATE_FILE).exists():
            raise RuntimeError(f"another vidup cluster runs on this machine (its node link {hostnet.NODE_LINK} "
                               "exists): one per machine; `vidup cluster down --run-dir <its dir>` first")
        down(self.run_dir)  # whatever a crashed or half-finished run left
        started = time.monotonic()
        tools = binaries.ensure_node()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.previous_sysctls = hostnet.setup()
            self._write_state()
            _say("control plane: etcd, kube-apiserver")
            self.control_plane = ControlPlane(self.run_dir, address=hostnet.NODE_ADDRESS, serve_pods=True)
            self.control_plane.start(timeout)
            self._write_state()
            self._start_runtime(tools)
            self.load_images()
            _say("node: kube-controller-manager, kube-scheduler, kube-proxy, kubelet, provisioner")
            hostnet.write_cni_config(self.runtime_paths.cni_conf_dir, self.runtime_paths.cni_ipam_dir)
            node.make_cgroup_root()
            cp = self.control_plane
            for process in (
                node.controller_manager(cp, tools, self.run_dir),
                node.scheduler(cp, tools, self.run_dir),
                node.kube_proxy(cp, tools, self.run_dir),
                node.kubelet(cp, tools, self.runtime_paths, self.run_dir),
                self._provisioner(),
            ):
                self.processes.append(process.start())
                self._write_state()
            wait_until(self._node_ready, timeout, f"node {NODE_NAME} to be Ready", interval=1)
            _say("add-ons: Gateway API CRDs, StorageClass, CoreDNS, Traefik")
            addons.install(self.kubeconfig, {
                "COREDNS_IMAGE": images.COREDNS_IMAGE, "TRAEFIK_IMAGE": images.TRAEFIK_IMAGE,
                "CLUSTER_DNS": node.CLUSTER_DNS, "INGRESS_PORT": self.ingress_port, "PING_PORT": free_port(),
                "PROVISIONER": PROVISIONER,
            })
            wait_until(self._ingress_answers, 120, f"the ingress at {self.ingress_url}", interval=0.5)
            self.ready = True
            self._write_state()
        except BaseException:
            _say("start failed; removing what was started")
            self.down()
            raise
        _say(f"ready in {time.monotonic() - started:.0f}s: ingress {self.ingress_url}, kubeconfig {self.kubeconfig}")
        return self

    def _start_runtime(self, tools: binaries.NodeBinaries) -> None:
        _say("container runtime: containerd + runc")
        containerd = runtime.containerd_process(self.runtime_paths, tools, self.run_dir / "logs" / "containerd.log")
        self.processes.append(containerd.start())
        self._write_state()
        runtime.wait_ready(containerd, self.runtime_paths, tools)

    def load_images(self) -> None:
        """Build every image (the layer cache makes repeats quick) and load it into containerd."""
        tools = binaries.ensure_node()
        engine = DockerEngine(self.run_dir / "docker")
        _say("images: building with the private Docker engine, loading into containerd")
        engine.start()
        try:
            tags = images.build_all(engine, tools)
            images.load(engine, tags, self.runtime_paths, tools)
        finally:
            engine.stop()

    def _provisioner(self) -> ManagedProcess:
        return ManagedProcess("provisioner", [
            sys.executable, "-m", "vidup.localcluster.provisioner",
            "--kubeconfig", str(self.kubeconfig), "--root", str(self.run_dir / "volumes"),
        ], self.run_dir / "logs" / "provisioner.log")

    def _node_ready(self) -> bool:
        for process in self.processes:
            process.check_running()
        out = addons.kubectl(self.kubeconfig, "get", "node", NODE_NAME, "-o",
                             'jsonpath={.status.conditions[?(@.type=="Ready")].status}')
        return out.strip() == "True"

    def _ingress_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.ingress_url + "/", timeout=2)
        except urllib.error.HTTPError as error:
            return error.code == 404  # Traefik answers; no route matches yet
        return True

    def pids(self) -> list[int]:
        pids = [p.pid for p in self.processes if p.popen is not None]
        if self.control_plane:
            pids = [p.pid for p in self.control_plane.processes] + pids
        return pids

    def _write_state(self) -> None:
        state: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "pids": self.pids(),
            "ingress_port": self.ingress_port,
            "previous_sysctls": self.previous_sysctls,
            "env": self.user_env(),
            "ready": self.ready,
        }
        path = self.run_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)

    def down(self) -> None:
        down(self.run_dir)


# -- state and down -------------------------------------------------------------------------------


def read_state(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / STATE_FILE).read_text()))


def running(run_dir: Path) -> bool:
    """True when a cluster's every recorded process is alive and its ingress was reached."""
    try:
        state = read_state(run_dir)
    except (OSError, ValueError):
        return False
    return bool(state.get("ready")) and all(pid_alive(pid) for pid in state["pids"])


def cluster_processes(run_dir: Path) -> list[int]:
    """Every live process of the cluster: anything started with a path in the run directory on its
    command line (the cluster's binaries, container shims, the provisioner) and every process in
    the pods' cgroups."""
    marker = f"{run_dir.resolve()}/".encode()
    spared = _ancestors()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    for hierarchy in ("pids", "memory", "cpu"):
        root = node.CGROUP_FS / hierarchy / node.CGROUP_ROOT
        for procs in root.rglob("cgroup.procs") if root.exists() else []:
            with contextlib.suppress(OSError):
                found.update(int(pid) for pid in procs.read_text().split())
    return sorted(pid for pid in found if pid_alive(pid))


def _ancestors() -> set[int]:
    """This process and its parents (a shell whose command line names the run directory)."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def down(run_dir: Path) -> None:
    """Remove the cluster rooted at ``run_dir`` and everything it changed on the host (safe to
    repeat, and safe on a run that never finished starting)."""
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        state = read_state(run_dir)
    # The node first, so nothing restarts what is being stopped; the control plane last.
    for pid in reversed(state.get("pids", [])[2:]):
        if pid_alive(pid):
            kill_group(pid, grace=5)
    for _ in range(10):
        pids = cluster_processes(run_dir)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)
        time.sleep(0.2)
    for pid in state.get("pids", [])[:2]:
        if pid_alive(pid):
            kill_group(pid, grace=5)
    if run_dir.exists():
        for point in mounts_under(run_dir):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    tools = binaries.expected_node()
    if tools.kube_proxy.exists():
        subprocess.run([str(tools.kube_proxy), "--cleanup"], capture_output=True, check=False, timeout=60)
    hostnet.teardown(state.get("previous_sysctls"))
    node.remove_cgroup_root()
    remove_stale_shim_sockets()
    if run_dir.exists():
        for child in run_dir.iterdir():
            if child.name != "logs":
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
