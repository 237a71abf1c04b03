"""The node's network on the host: its address, the pod bridge's CNI configuration, the kernel
settings a node needs, and the teardown that leaves the host's network as it was.

The node gets its own address on a link of its own (``vidup0``, a bridge without ports: this
machine's kernel has no ``dummy`` link type), so the API server, the kubelet and the ingress
listen somewhere pods can route to, without touching the host's real interfaces.
Pods live on the ``vidupbr0`` bridge in ``POD_CIDR`` (CNI bridge + host-local + portmap).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

NODE_ADDRESS = "172.31.254.1"
NODE_LINK = "vidup0"
BRIDGE = "vidupbr0"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
#: Kernel settings a node needs: forwarding, and iptables seeing bridged traffic (Services).
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
}
#: Chains the cluster's parts create (kube-proxy and kubelet: KUBE-*, the CNI plugins: CNI-*).
CHAIN_PREFIXES = ("KUBE-", "CNI-")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def read_sysctls() -> dict[str, str]:
    return {key: (Path("/proc/sys") / key).read_text().strip() for key in SYSCTLS}


def write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        (Path("/proc/sys") / key).write_text(value)


def setup() -> dict[str, str]:
    """Add the node address and the node's sysctls; returns the sysctls' earlier values."""
    if not link_exists(NODE_LINK):
        _ip("link", "add", NODE_LINK, "type", "bridge")
    addresses = _ip("-o", "addr", "show", "dev", NODE_LINK).stdout
    if f" {NODE_ADDRESS}/" not in addresses:
        _ip("addr", "add", f"{NODE_ADDRESS}/32", "dev", NODE_LINK)
    _ip("link", "set", NODE_LINK, "up")
    previous = read_sysctls()
    write_sysctls(SYSCTLS)
    return previous


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    """The pod network: one bridge, host-local addresses, masquerade out, hostPort support."""
    return {
        "cniVersion": "1.0.0",
        "name": "vidup",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_cni_config(conf_dir: Path, ipam_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-vidup.conflist").write_text(json.dumps(cni_config(ipam_dir), indent=2))


def cluster_chains() -> dict[tuple[str, str], list[str]]:
    """``{(command, table): [chain, ...]}`` of the cluster's chains now present on the host."""
    found: dict[tuple[str, str], list[str]] = {}
    for command in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            saved = subprocess.run([f"{command}-save", "-t", table], capture_output=True, text=True, check=False)
            chains = [line[1:].split()[0] for line in saved.stdout.splitlines() if line.startswith(":")]
            mine = [chain for chain in chains if chain.startswith(CHAIN_PREFIXES)]
            if mine:
                found[(command, table)] = mine
    return found


def remove_chains() -> None:
    """Delete every rule that jumps to a cluster chain, then the chains themselves."""
    for (command, table), chains in cluster_chains().items():
        saved = subprocess.run([f"{command}-save", "-t", table], capture_output=True, text=True, check=False)
        for line in saved.stdout.splitlines():
            if not line.startswith("-A "):
                continue
            words = line.split()
            if words[1] not in chains and any(target in chains for target in words):
                subprocess.run([command, "-t", table, "-D", *_rule_args(line)], capture_output=True, check=False)
        for chain in chains:
            subprocess.run([command, "-t", table, "-F", chain], capture_output=True, check=False)
        for chain in chains:
            subprocess.run([command, "-t", table, "-X", chain], capture_output=True, check=False)


def _rule_args(saved_rule: str) -> list[str]:
    """``-A CHAIN ...`` from iptables-save as arguments after ``-D`` (quoted comments kept whole)."""
    return shlex.split(saved_rule)[1:]


def teardown(previous_sysctls: dict[str, str] | None) -> None:
    """Remove the bridge, the node address and the cluster's chains; restore the sysctls."""
    for link in (BRIDGE, NODE_LINK):
        if link_exists(link):
            _ip("link", "delete", link, check=False)
    remove_chains()
    if previous_sysctls:
        with contextlib.suppress(OSError):
            write_sysctls(previous_sysctls)
