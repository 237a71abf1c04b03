"""A real Kubernetes control plane as local processes: etcd and kube-apiserver on free loopback
ports, started the way controller-runtime's envtest starts them (secure port, service-account
issuer and signing key, RBAC, an admin client certificate), plus a kubeconfig that points at it.

With ``serve_pods`` (the local cluster) the same API server also serves a kubelet and its pods:
it listens on the node's address, its certificate covers the ``kubernetes`` Service IP, the
ServiceAccount and NodeRestriction admission plugins and the Node authorizer are on, and it holds
a client certificate for kubelets (``kubectl logs/exec/port-forward``)."""

from __future__ import annotations

import base64
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vidup.localstack import binaries
from vidup.localstack.pki import Pki, make_pki
from vidup.localstack.processes import ManagedProcess, free_port, wait_until

SERVICE_CIDR = "10.0.0.0/24"
#: The first address of SERVICE_CIDR: the ``kubernetes`` Service in ``default``.
KUBERNETES_SERVICE_IP = "10.0.0.1"
#: Client certificates a pod-serving control plane makes: file name -> (CN, O).
NODE_NAME = "vidup-node"
CLUSTER_CLIENTS: dict[str, tuple[str, str | None]] = {
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kube-proxy": ("system:kube-proxy", None),
}


@dataclass
class ControlPlane:
    run_dir: Path
    etcd_port: int = 0
    apiserver_port: int = 0
    processes: list[ManagedProcess] = field(default_factory=list)
    pki: Pki | None = None
    #: Where the API server listens (and what it advertises to pods).
    address: str = "127.0.0.1"
    serve_pods: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def server_url(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    def start(self, timeout: float = 120) -> ControlPlane:
        tools = binaries.ensure()
        if self.serve_pods:
            self.pki = make_pki(self.run_dir / "pki", (KUBERNETES_SERVICE_IP, self.address), CLUSTER_CLIENTS)
        else:
            self.pki = make_pki(self.run_dir / "pki")
        self.etcd_port = self.etcd_port or free_port()
        self.apiserver_port = self.apiserver_port or free_port()
        peer_port = free_port()
        logs = self.run_dir / "logs"
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = ManagedProcess("etcd", [
            str(tools.etcd),
            "--name", "vidup",
            "--data-dir", str(self.run_dir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"vidup={peer_url}",
            # The data is throwaway: skip fsync like envtest does, which makes writes much faster.
            "--unsafe-no-fsync",
            "--log-level", "warn",
        ], logs / "etcd.log").start()
        self.processes.append(etcd)
        try:
            wait_until(lambda: _http_ok(f"{etcd_url}/health", etcd), timeout, "etcd to become healthy")
            apiserver = ManagedProcess("kube-apiserver", [
                str(tools.kube_apiserver), *self._apiserver_args(etcd_url),
            ], logs / "kube-apiserver.log").start()
            self.processes.append(apiserver)
            self._write_kubeconfig()
            context = self.ssl_context()
            wait_until(
                lambda: _https_ok(f"{self.server_url}/readyz", context, apiserver),
                timeout, "kube-apiserver /readyz",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _apiserver_args(self, etcd_url: str) -> list[str]:
        pki = self.pki
        assert pki is not None
        args = [
            "--etcd-servers", etcd_url,
            "--bind-address", self.address,
            "--advertise-address", self.address,
            "--secure-port", str(self.apiserver_port),
            "--cert-dir", str(self.run_dir / "apiserver-certs"),
            "--tls-cert-file", str(pki.serving_cert),
            "--tls-private-key-file", str(pki.serving_key),
            "--client-ca-file", str(pki.ca_cert),
            "--service-account-key-file", str(pki.sa_public),
            "--service-account-signing-key-file", str(pki.sa_private),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--allow-privileged=true",
            "--v", "1",
        ]
        if not self.serve_pods:
            return [
                *args,
                "--service-account-issuer", f"https://127.0.0.1:{self.apiserver_port}",
                "--authorization-mode", "RBAC",
                # No controller manager runs, so nothing would create service-account tokens.
                "--disable-admission-plugins", "ServiceAccount",
            ]
        kubelet_cert, kubelet_key = pki.client("apiserver-kubelet-client")
        return [
            *args,
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--api-audiences", "https://kubernetes.default.svc.cluster.local",
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--kubelet-client-certificate", str(kubelet_cert),
            "--kubelet-client-key", str(kubelet_key),
            "--kubelet-preferred-address-types", "InternalIP",
        ]

    def write_kubeconfig(self, path: Path, client: str | None = None) -> Path:
        """A kubeconfig for this API server as the admin, or as one of ``CLUSTER_CLIENTS``."""
        assert self.pki is not None
        cert, key = self.pki.client(client) if client else (self.pki.admin_cert, self.pki.admin_key)
        write_kubeconfig(path, self.server_url, self.pki.ca_cert, cert, key)
        return path

    def ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.kubeconfig)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path) -> None:
    """A one-context kubeconfig with the certificates inlined (private: mode 0600)."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "vidup-local", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": "vidup-admin", "user": {
            "client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "vidup-local", "context": {
            "cluster": "vidup-local", "user": "vidup-admin", "namespace": "default"}}],
        "current-context": "vidup-local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _http_ok(url: str, process: ManagedProcess) -> bool:
    process.check_running()
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _https_ok(url: str, context: ssl.SSLContext, process: ManagedProcess) -> bool:
    process.check_running()
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return response.status == 200
