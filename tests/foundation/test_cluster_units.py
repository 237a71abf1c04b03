"""Pure pieces of the local cluster: the scratch go.mod files, the CNI and kubelet
configuration, the provisioner's decisions, and the chart-default image names."""

from __future__ import annotations

from pathlib import Path

from vidup.localcluster import hostnet, images, node, provisioner
from vidup.localcluster.runtime import RuntimePaths, config_toml
from vidup.localstack import binaries
from vidup.localstack.controlplane import ControlPlane
from vidup.localstack.pki import make_pki

TRAEFIK_GO_MOD = """module github.com/traefik/traefik/v3

go 1.25.0

require (
\tgithub.com/abbot/go-http-auth v0.0.0-00010101000000-000000000000
)

replace (
\tgithub.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.20200324110947-a37a7636d23e
\tgithub.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
)
"""


def test_traefik_scratch_module_repeats_its_replace_lines() -> None:
    text = binaries.command_go_mod("traefik", binaries.TRAEFIK_MODULE, binaries.TRAEFIK_VERSION,
                                   "github.com/traefik/traefik/v3/cmd/traefik", TRAEFIK_GO_MOD)
    assert f"require github.com/traefik/traefik/v3 {binaries.TRAEFIK_VERSION}" in text
    assert "\tgithub.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59" in text
    assert text.count("=>") == 2
    assert "tool github.com/traefik/traefik/v3/cmd/traefik" in text


def test_kubernetes_scratch_module_builds_the_node_commands_too() -> None:
    text = binaries.scratch_go_mod("replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n)\n")
    for package in (*binaries.CONTROL_PLANE_PACKAGES.values(), *binaries.NODE_KUBE_PACKAGES.values()):
        assert f"\t{package}\n" in text
    assert "\tk8s.io/api => k8s.io/api v0.36.3" in text


def test_cni_config_is_a_masquerading_bridge_with_host_local_addresses(tmp_path: Path) -> None:
    config = hostnet.cni_config(tmp_path / "ipam")
    bridge, portmap = config["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == hostnet.BRIDGE
    assert bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": hostnet.POD_CIDR}]]
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_containerd_keeps_every_path_in_its_directory(tmp_path: Path) -> None:
    paths = RuntimePaths(tmp_path / "containerd")
    text = config_toml(paths, binaries.expected_node())
    assert "restrict_oom_score_adj = true" in text
    assert "netns_mounts_under_state_dir = true" in text
    assert "SystemdCgroup = false" in text
    for line in text.splitlines():
        if "= \"/" in line and "bin" not in line:
            assert str(tmp_path) in line, line


def test_kubelet_config_fits_this_machine(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path, address=hostnet.NODE_ADDRESS, serve_pods=True)
    cp.pki = make_pki(tmp_path / "pki")
    config = node.kubelet_config(cp, RuntimePaths(tmp_path / "containerd"), tmp_path)
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == f"/{node.CGROUP_ROOT}"
    assert config["clusterDNS"] == [node.CLUSTER_DNS]
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["authentication"]["anonymous"]["enabled"] is False


def _claim(**annotations: str) -> dict[str, object]:
    return {
        "metadata": {"name": "data", "namespace": "ns", "uid": "u-1", "annotations": annotations},
        "spec": {"resources": {"requests": {"storage": "2Gi"}}, "accessModes": ["ReadWriteMany"],
                 "storageClassName": "standard"},
        "status": {"phase": "Pending"},
    }


def test_provisioner_waits_for_a_selected_node_and_its_own_claims() -> None:
    ours = {provisioner.WANTS_PROVISIONER: provisioner.PROVISIONER}
    assert not provisioner.wants_volume(_claim(**ours))
    assert provisioner.wants_volume(_claim(**ours, **{provisioner.SELECTED_NODE: "vidup-node"}))
    assert not provisioner.wants_volume(_claim(**{provisioner.WANTS_PROVISIONER: "other",
                                                  provisioner.SELECTED_NODE: "vidup-node"}))


def test_provisioned_volume_is_bound_to_its_claim(tmp_path: Path) -> None:
    volume = provisioner.volume_for(_claim(), tmp_path)
    spec = volume["spec"]
    assert volume["metadata"]["name"] == "pvc-u-1"
    assert spec["claimRef"] == {"namespace": "ns", "name": "data", "uid": "u-1"}
    assert spec["capacity"] == {"storage": "2Gi"} and spec["accessModes"] == ["ReadWriteMany"]
    assert spec["hostPath"]["path"] == str(tmp_path / "ns-data-u-1")
    assert spec["persistentVolumeReclaimPolicy"] == "Delete"


def test_cluster_loads_the_chart_default_image_names() -> None:
    defaults = images.chart_default_images()
    assert set(defaults) == {"ingest", "operator", "worker", "redis"}
    assert all(":" in image for image in defaults.values())
