"""The node's container runtime: containerd 2.x with runc, every path inside the cluster's run
directory (root, state, sockets, runc's state, network namespaces), so ``down`` can remove all of it.

containerd 2.x is what kubelet supports now and after Kubernetes 1.37 (1.35 was the last release
for containerd 1.x). ``restrict_oom_score_adj`` is on because this machine lacks CAP_SYS_RESOURCE:
without it every pod sandbox fails to start (runc cannot lower the OOM score).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vidup.localstack.binaries import NodeBinaries
from vidup.localstack.processes import ManagedProcess, wait_until

PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"
NAMESPACE = "k8s.io"


@dataclass(frozen=True)
class RuntimePaths:
    """Where containerd keeps everything, under one directory."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def config(self) -> Path:
        return self.base / "config.toml"

    @property
    def runc_root(self) -> Path:
        return self.base / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.base / "cni" / "ipam"


def config_toml(paths: RuntimePaths, tools: NodeBinaries) -> str:
    """containerd's configuration (version 3, containerd 2.x plugin ids)."""
    return f"""version = 3
root = "{paths.root}"
state = "{paths.state}"

[grpc]
  address = "{paths.socket}"

[ttrpc]
  address = "{paths.base / 'containerd.sock.ttrpc'}"

[debug]
  level = "warn"

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = "{paths.base / 'opt'}"

  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{PAUSE_IMAGE}"

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "{tools.runc}"
          Root = "{paths.runc_root}"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["{tools.cni_dir}"]
      conf_dir = "{paths.cni_conf_dir}"

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"""


def containerd_process(paths: RuntimePaths, tools: NodeBinaries, log: Path) -> ManagedProcess:
    paths.base.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(config_toml(paths, tools))
    # The shim and runc are found next to containerd.
    env = {"PATH": f"{tools.containerd.parent}:{os.environ.get('PATH', '')}"}
    return ManagedProcess("containerd", [str(tools.containerd), "--config", str(paths.config)], log, env=env)


def ctr(paths: RuntimePaths, tools: NodeBinaries, *args: str, stdin: IO[bytes] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(tools.ctr), "--address", str(paths.socket), "--namespace", NAMESPACE, *args],
        stdin=stdin, capture_output=True, check=False, timeout=1800,
    )
    result = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                         done.stderr.decode(errors="replace"))
    if check and done.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def wait_ready(process: ManagedProcess, paths: RuntimePaths, tools: NodeBinaries, timeout: float = 60) -> None:
    def answers() -> bool:
        process.check_running()
        return ctr(paths, tools, "version", check=False).returncode == 0

    wait_until(answers, timeout, "containerd to answer")


def image_names(paths: RuntimePaths, tools: NodeBinaries) -> set[str]:
    listed = ctr(paths, tools, "images", "list", "--quiet").stdout
    return set(listed.split())
