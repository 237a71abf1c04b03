"""What a usable cluster has beyond its processes, applied with the built kubectl: the Gateway API
CRDs (from the Go module proxy, the version Traefik is built against), a default StorageClass,
CoreDNS and the Traefik ingress controller."""

from __future__ import annotations

import string
import subprocess
from pathlib import Path

from vidup.localstack import binaries

MANIFESTS = Path(__file__).with_name("manifests")
#: The Gateway API release Traefik v3.6.12 is built against (its go.mod).
GATEWAY_API_VERSION = "v1.4.0"


def render(name: str, **values: object) -> str:
    """A manifest from ``manifests/<name>.yaml`` with ``${NAME}`` placeholders filled in."""
    return string.Template((MANIFESTS / f"{name}.yaml").read_text()).substitute(
        {key: str(value) for key, value in values.items()})


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
    done = subprocess.run([str(binaries.expected().kubectl), "--kubeconfig", str(kubeconfig), *args],
                          input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def apply(kubeconfig: Path, manifest: str) -> None:
    # Server-side apply: the Gateway API CRDs are too large for the last-applied annotation.
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest)


def gateway_api_crds() -> str:
    directory = binaries.module_dir(f"sigs.k8s.io/gateway-api@{GATEWAY_API_VERSION}") / "config" / "crd" / "standard"
    return "\n---\n".join(path.read_text() for path in sorted(directory.glob("gateway.networking.k8s.io_*.yaml")))


def install(kubeconfig: Path, values: dict[str, object]) -> None:
    """Apply every add-on and wait until DNS and the ingress controller are available."""
    apply(kubeconfig, gateway_api_crds())
    kubectl(kubeconfig, "wait", "--for", "condition=Established", "--timeout", "60s",
            "crd/gatewayclasses.gateway.networking.k8s.io", "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io")
    for name in ("storage", "coredns", "traefik"):
        apply(kubeconfig, render(name, **values))
    for namespace, deployment in (("kube-system", "coredns"), ("traefik", "traefik")):
        kubectl(kubeconfig, "-n", namespace, "rollout", "status", f"deployment/{deployment}", "--timeout", "180s")
