"""Build every Go binary vidup runs (control plane, node, ingress) from the Go module proxy.

kind and minikube need registry images we cannot pull, so vidup builds the real Kubernetes binaries
from source the way public projects import ``k8s.io/kubernetes``: a scratch module that requires it
and replaces every staging module with its published ``v0.Y.Z``. The node's runtime pieces
(containerd, runc, the CNI plugins), CoreDNS and the Traefik ingress controller are built the same
way at pinned versions. Binaries are cached outside the repository, keyed by version, so a machine
pays the cold build once: about seven minutes for the control plane (``vidup build``), and about
fifteen more for the node (``vidup build --node``, run by ``vidup cluster up``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
HELM_VERSION = "v4.2.4"
CONTAINERD_VERSION = "v2.4.2"
RUNC_VERSION = "v1.4.4"
CNI_PLUGINS_VERSION = "v1.10.0"
COREDNS_VERSION = "v1.15.0"
TRAEFIK_VERSION = "v3.6.12"
#: SeaweedFS publishes no tagged module versions; this is the pseudo-version of its 4.53 release.
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", re.MULTILINE)
_REPLACE_BLOCK = re.compile(r"^replace \((.*?)^\)", re.MULTILINE | re.DOTALL)

#: Kubernetes commands built from the one scratch module: output name -> main package.
CONTROL_PLANE_PACKAGES = {
    "etcd": "go.etcd.io/etcd/server/v3",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
}
NODE_KUBE_PACKAGES = {
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
}
#: ``go install``-able node tools: output name -> (package@version, needs cgo with seccomp).
NODE_INSTALLS = {
    "containerd": (f"github.com/containerd/containerd/v2/cmd/containerd@{CONTAINERD_VERSION}", False),
    "containerd-shim-runc-v2": (
        f"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@{CONTAINERD_VERSION}", False),
    "ctr": (f"github.com/containerd/containerd/v2/cmd/ctr@{CONTAINERD_VERSION}", False),
    # runc needs libseccomp (cgo) so that pods get the RuntimeDefault seccomp profile.
    "runc": (f"github.com/opencontainers/runc@{RUNC_VERSION}", True),
    "coredns": (f"github.com/coredns/coredns@{COREDNS_VERSION}", False),
}
CNI_PLUGINS = {
    "bridge": "plugins/main/bridge",
    "loopback": "plugins/main/loopback",
    "host-local": "plugins/ipam/host-local",
    "portmap": "plugins/meta/portmap",
}
TRAEFIK_MODULE = "github.com/traefik/traefik/v3"


@dataclass(frozen=True)
class Binaries:
    """Paths of the control plane's tools."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    helm: Path


@dataclass(frozen=True)
class NodeBinaries:
    """Paths of what a one-node cluster runs besides the control plane."""

    kube_controller_manager: Path
    kube_scheduler: Path
    kubelet: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    coredns: Path
    traefik: Path
    cni_dir: Path


def cache_root() -> Path:
    """Where built binaries live: ``$VIDUP_CACHE_DIR`` or ``$XDG_CACHE_HOME/vidup``."""
    explicit = os.environ.get("VIDUP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vidup"


def bin_dir() -> Path:
    return cache_root() / f"bin-k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-helm-{HELM_VERSION}"


def node_bin_dir() -> Path:
    return cache_root() / (
        f"bin-node-k8s-{KUBERNETES_VERSION}-containerd-{CONTAINERD_VERSION}-runc-{RUNC_VERSION}"
        f"-cni-{CNI_PLUGINS_VERSION}-coredns-{COREDNS_VERSION}-traefik-{TRAEFIK_VERSION}"
    )


def expected() -> Binaries:
    d = bin_dir()
    return Binaries(d / "etcd", d / "kube-apiserver", d / "kubectl", d / "helm")


def expected_node() -> NodeBinaries:
    d = node_bin_dir()
    return NodeBinaries(
        kube_controller_manager=d / "kube-controller-manager", kube_scheduler=d / "kube-scheduler",
        kubelet=d / "kubelet", kube_proxy=d / "kube-proxy", containerd=d / "containerd",
        containerd_shim=d / "containerd-shim-runc-v2", ctr=d / "ctr", runc=d / "runc",
        coredns=d / "coredns", traefik=d / "traefik", cni_dir=d / "cni",
    )


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules Kubernetes' own go.mod points at ``./staging``: each must be replaced by its v0.Y.Z."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def staging_version(kubernetes_version: str) -> str:
    """Kubernetes vX.Y.Z publishes its staging modules as v0.Y.Z."""
    _, minor, patch = kubernetes_version.lstrip("v").split(".")
    return f"v0.{minor}.{patch}"


def replace_lines(go_mod: str) -> list[str]:
    """The ``replace`` directives of a go.mod's block (a module's own replaces are lost when it is
    required, so a scratch module that builds its command must repeat them)."""
    lines: list[str] = []
    for block in _REPLACE_BLOCK.findall(go_mod):
        lines += [line.strip() for line in block.splitlines() if "=>" in line]
    return lines


def scratch_go_mod(kubernetes_go_mod: str) -> str:
    """A go.mod that builds the Kubernetes commands from the proxy (see the module docstring)."""
    stage = staging_version(KUBERNETES_VERSION)
    packages = {**CONTROL_PLANE_PACKAGES, **NODE_KUBE_PACKAGES}
    lines = [
        "module vidup.local/controlplane",
        "",
        "go 1.25",
        "",
        "require (",
        f"\tk8s.io/kubernetes {KUBERNETES_VERSION}",
        f"\tgo.etcd.io/etcd/server/v3 {ETCD_VERSION}",
        ")",
        "",
        "replace (",
        *(f"\t{mod} => {mod} {stage}" for mod in staging_modules(kubernetes_go_mod)),
        ")",
        "",
        "tool (",
        *(f"\t{pkg}" for pkg in packages.values()),
        ")",
        "",
    ]
    return "\n".join(lines)


def command_go_mod(name: str, module: str, version: str, command: str, module_go_mod_text: str) -> str:
    """A go.mod that builds a module's command: require the module and repeat its own replace lines
    (``go install pkg@version`` refuses modules that have any)."""
    return "\n".join([
        f"module vidup.local/{name}", "", "go 1.25", "",
        f"require {module} {version}", "",
        "replace (", *(f"\t{line}" for line in replace_lines(module_go_mod_text)), ")", "",
        f"tool {command}", "",
    ])


def _build_command(path: Path, name: str, module: str, version: str, command: str, env: dict[str, str]) -> None:
    """Build one command of a module with replace directives through a scratch module (cached)."""
    work = cache_root() / f"src-{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)
    go_mod = command_go_mod(name, module, version, command, _module_go_mod(f"{module}@{version}", work, env))
    if not (work / "go.mod").exists() or (work / "go.mod").read_text() != go_mod:
        (work / "go.mod").write_text(go_mod)
        _go(["mod", "tidy"], work, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), command], work, env)
    tmp.replace(path)


def _version_ldflags() -> str:
    major, minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _say(message: str) -> None:
    print(f"[vidup build] {message}", file=sys.stderr, flush=True)


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    started = time.monotonic()
    _say(f"go {' '.join(args[:3])}{' ...' if len(args) > 3 else ''} (in {cwd.name})")
    subprocess.run(["go", *args], cwd=cwd, env=env, check=True)
    _say(f"  done in {time.monotonic() - started:.0f}s")


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"})
    return env


def _module_go_mod(module_at_version: str, cwd: Path, env: dict[str, str]) -> str:
    info = subprocess.run(["go", "mod", "download", "-json", module_at_version],
                          cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return Path(json.loads(info.stdout)["GoMod"]).read_text()


def module_dir(module_at_version: str) -> Path:
    """The unpacked source of a module from the proxy (e.g. to read the Gateway API's CRDs)."""
    work = cache_root()
    work.mkdir(parents=True, exist_ok=True)
    info = subprocess.run(["go", "mod", "download", "-json", module_at_version],
                          cwd=work, env=_go_env(), check=True, capture_output=True, text=True)
    return Path(json.loads(info.stdout)["Dir"])


def _build_kube(targets: dict[Path, str], env: dict[str, str]) -> None:
    """Build Kubernetes/etcd commands from the shared scratch module."""
    if not targets:
        return
    work = cache_root() / f"src-k8s-{KUBERNETES_VERSION}"
    work.mkdir(parents=True, exist_ok=True)
    _say(f"building Kubernetes {KUBERNETES_VERSION} and etcd {ETCD_VERSION} from the Go module proxy")
    kube_mod = _module_go_mod(f"k8s.io/kubernetes@{KUBERNETES_VERSION}", work, env)
    go_mod = scratch_go_mod(kube_mod)
    if not (work / "go.mod").exists() or (work / "go.mod").read_text() != go_mod:
        (work / "go.mod").write_text(go_mod)
        _go(["mod", "tidy"], work, env)
    for path, pkg in targets.items():
        _say(f"building {path.name} ({pkg})")
        tmp = path.with_suffix(".partial")
        _go(["build", "-trimpath", "-ldflags", _version_ldflags(), "-o", str(tmp), pkg], work, env)
        tmp.replace(path)


def _install(path: Path, package_at_version: str, env: dict[str, str]) -> None:
    """``go install`` one command into a private GOBIN, then move it to ``path``."""
    gobin = path.parent / f".gobin-{path.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    _go(["install", "-trimpath", "-ldflags", "-s -w", package_at_version], path.parent, dict(env, GOBIN=str(gobin)))
    next(gobin.iterdir()).replace(path)
    shutil.rmtree(gobin, ignore_errors=True)


def build(force: bool = False) -> Binaries:
    """Build whatever is missing of the control plane and return the paths."""
    want = expected()
    if shutil.which("go") is None:
        raise RuntimeError("Go is required to build the control plane (https://go.dev/dl/)")
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    env = _go_env()
    _build_kube({out / name: pkg for name, pkg in CONTROL_PLANE_PACKAGES.items()
                 if force or not (out / name).exists()}, env)
    if force or not want.helm.exists():
        _say(f"building helm {HELM_VERSION}")
        _install(want.helm, f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}", env)
    _say(f"control plane binaries ready in {out}")
    return want


def build_node(force: bool = False) -> NodeBinaries:
    """Build whatever is missing of the node (kubelet and friends, runtime, CNI, DNS, ingress)."""
    build(force)
    want = expected_node()
    out = node_bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = _go_env()
    _build_kube({out / name: pkg for name, pkg in NODE_KUBE_PACKAGES.items()
                 if force or not (out / name).exists()}, env)
    for name, (package, cgo) in NODE_INSTALLS.items():
        if force or not (out / name).exists():
            _install(out / name, package, dict(env, CGO_ENABLED="1", GOFLAGS="-mod=mod -tags=seccomp") if cgo else env)
    for name, sub in CNI_PLUGINS.items():
        if force or not (want.cni_dir / name).exists():
            _install(want.cni_dir / name, f"github.com/containernetworking/plugins/{sub}@{CNI_PLUGINS_VERSION}", env)
    if force or not want.traefik.exists():
        _build_command(want.traefik, "traefik", TRAEFIK_MODULE, TRAEFIK_VERSION, f"{TRAEFIK_MODULE}/cmd/traefik", env)
    _say(f"node binaries ready in {out} ({time.monotonic() - started:.0f}s)")
    return want


def s3_binary() -> Path:
    return cache_root() / f"bin-seaweedfs-{SEAWEEDFS_VERSION}" / "weed"


def build_s3(force: bool = False) -> Path:
    """SeaweedFS's ``weed`` (the local S3 server), about six minutes cold."""
    want = s3_binary()
    if force or not want.exists():
        if shutil.which("go") is None:
            raise RuntimeError("Go is required to build SeaweedFS (https://go.dev/dl/)")
        _say(f"building SeaweedFS {SEAWEEDFS_VERSION} (the local S3 server)")
        _build_command(want, "seaweedfs", SEAWEEDFS_MODULE, SEAWEEDFS_VERSION, f"{SEAWEEDFS_MODULE}/weed", _go_env())
    return want


def ensure_s3() -> Path:
    """The local S3 server's binary, building it first if this machine has not yet."""
    return s3_binary() if s3_binary().exists() else build_s3()


def ensure() -> Binaries:
    """The control plane's binaries, building them first if this machine has not yet."""
    want = expected()
    if all(p.exists() for p in (want.etcd, want.kube_apiserver, want.kubectl, want.helm)):
        return want
    return build()


def ensure_node() -> NodeBinaries:
    """The node's binaries, building them first if this machine has not yet."""
    want = expected_node()
    paths = [p for p in vars(want).values() if p != want.cni_dir]
    paths += [want.cni_dir / name for name in CNI_PLUGINS]
    if all(p.exists() for p in paths) and all(p.exists() for p in vars(ensure()).values()):
        return want
    return build_node()


if __name__ == "__main__":
    ensure_node() if "--node" in sys.argv else ensure_s3() if "--s3" in sys.argv else ensure()
