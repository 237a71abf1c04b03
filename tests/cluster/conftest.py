"""One real local cluster for every test in this folder, started by the same code as
`vidup cluster up`. Modules run in name order: the node (`test_a_*`), the chart on it
(`test_b_*`), and last `test_z_down.py`, which takes the cluster down and checks the host."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster_support import HostSnapshot

from vidup.localcluster import hostnet
from vidup.localcluster.cluster import Cluster
from vidup.localstack.processes import free_port


@pytest.fixture(scope="session")
def host_before_cluster() -> HostSnapshot:
    return HostSnapshot.take()


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory, host_before_cluster: HostSnapshot) -> Iterator[Cluster]:
    if hostnet.link_exists(hostnet.NODE_LINK):
        pytest.fail("a vidup cluster already runs on this machine (one per machine): `vidup cluster down` first")
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), ingress_port=free_port()).up()
    yield cluster
    cluster.down()
