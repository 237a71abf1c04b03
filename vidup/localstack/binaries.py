"""Build the control-plane binaries (etcd, kube-apiserver, kubectl, helm) from the Go module proxy.

kind and minikube need registry images we cannot pull, so vidup builds the real Kubernetes binaries
from source the way public projects import ``k8s.io/kubernetes``: a scratch module that requires it
and replaces every staging module with its published ``v0.Y.Z``. The binaries are cached outside the
repository, keyed by version, so a machine pays the cold build (about seven minutes) once.
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

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", re.MULTILINE)


@dataclass(frozen=True)
class Binaries:
    """Paths of the built tools."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    helm: Path


def cache_root() -> Path:
    """Where built binaries live: ``$VIDUP_CACHE_DIR`` or ``$XDG_CACHE_HOME/vidup``."""
    explicit = os.environ.get("VIDUP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vidup"


def bin_dir() -> Path:
    return cache_root() / f"bin-k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-helm-{HELM_VERSION}"


def expected() -> Binaries:
    d = bin_dir()
    return Binaries(d / "etcd", d / "kube-apiserver", d / "kubectl", d / "helm")


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules Kubernetes' own go.mod points at ``./staging``: each must be replaced by its v0.Y.Z."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def staging_version(kubernetes_version: str) -> str:
    """Kubernetes vX.Y.Z publishes its staging modules as v0.Y.Z."""
    _, minor, patch = kubernetes_version.lstrip("v").split(".")
    return f"v0.{minor}.{patch}"


def scratch_go_mod(kubernetes_go_mod: str) -> str:
    """A go.mod that builds the control plane from the proxy (see the module docstring)."""
    stage = staging_version(KUBERNETES_VERSION)
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
        "\tk8s.io/kubernetes/cmd/kube-apiserver",
        "\tk8s.io/kubernetes/cmd/kubectl",
        "\tgo.etcd.io/etcd/server/v3",
        ")",
        "",
    ]
    return "\n".join(lines)


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


def build(force: bool = False) -> Binaries:
    """Build whatever is missing from the cache and return the paths."""
    want = expected()
    if shutil.which("go") is None:
        raise RuntimeError("Go is required to build the control plane (https://go.dev/dl/)")
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    env = _go_env()
    work = cache_root() / f"src-k8s-{KUBERNETES_VERSION}"
    work.mkdir(parents=True, exist_ok=True)

    kube_targets = [
        (want.etcd, "go.etcd.io/etcd/server/v3"),
        (want.kube_apiserver, "k8s.io/kubernetes/cmd/kube-apiserver"),
        (want.kubectl, "k8s.io/kubernetes/cmd/kubectl"),
    ]
    missing = [(path, pkg) for path, pkg in kube_targets if force or not path.exists()]
    if missing:
        _say(f"building Kubernetes {KUBERNETES_VERSION} and etcd {ETCD_VERSION} from the Go module proxy")
        info = subprocess.run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
            cwd=work, env=env, check=True, capture_output=True, text=True,
        )
        kube_mod = Path(json.loads(info.stdout)["GoMod"]).read_text()
        (work / "go.mod").write_text(scratch_go_mod(kube_mod))
        _go(["mod", "tidy"], work, env)
        for path, pkg in missing:
            _say(f"building {path.name} ({pkg})")
            tmp = path.with_suffix(".partial")
            _go(["build", "-trimpath", "-ldflags", _version_ldflags(), "-o", str(tmp), pkg], work, env)
            tmp.replace(path)
    if force or not want.helm.exists():
        _say(f"building helm {HELM_VERSION}")
        helm_env = dict(env, GOBIN=str(out / ".helm-gobin"))
        _go(["install", "-trimpath", f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"], out, helm_env)
        (out / ".helm-gobin" / "helm").replace(want.helm)
    _say(f"control plane binaries ready in {out}")
    return want


def ensure() -> Binaries:
    """The binaries, building them first if this machine has not yet."""
    want = expected()
    if all(p.exists() for p in (want.etcd, want.kube_apiserver, want.kubectl, want.helm)):
        return want
    return build()


if __name__ == "__main__":
    ensure()
