"""`vidup cluster down` leaves the machine as it found it: no process, mount, network namespace,
link, iptables chain, cgroup or sysctl change of the cluster remains; a second `down` is harmless.
It runs last in this folder (the cluster fixture is shared by every module here)."""

from __future__ import annotations

import subprocess
import sys

from cluster_support import HostSnapshot

from vidup.localcluster.cluster import Cluster, cluster_processes
from vidup.localstack.docker_engine import mounts_under


def test_down_twice_leaves_nothing_behind(local_cluster: Cluster, host_before_cluster: HostSnapshot) -> None:
    assert cluster_processes(local_cluster.run_dir), "the cluster should be running before down"
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "vidup.cli", "cluster", "down", "--run-dir",
                               str(local_cluster.run_dir)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert cluster_processes(local_cluster.run_dir) == []
        assert mounts_under(local_cluster.run_dir) == []
        after = HostSnapshot.take()
        assert after.links == host_before_cluster.links
        assert after.netns == host_before_cluster.netns
        assert after.chains == host_before_cluster.chains
        assert after.cgroup_roots == host_before_cluster.cgroup_roots
        assert after.sysctls == host_before_cluster.sysctls
        assert after.run_containerd == host_before_cluster.run_containerd
