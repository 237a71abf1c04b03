"""A real Kubernetes control plane as local processes: etcd and kube-apiserver on free loopback
ports, started the way controller-runtime's envtest starts them (secure port, service-account
issuer and signing key, RBAC, an admin client certificate), plus a kubeconfig that points at it."""

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


@dataclass
class ControlPlane:
    run_dir: Path
    etcd_port: int = 0
    apiserver_port: int = 0
    processes: list[ManagedProcess] = field(default_factory=list)
    pki: Pki | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def start(self, timeout: float = 120) -> ControlPlane:
        tools = binaries.ensure()
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
            pki = self.pki
            apiserver = ManagedProcess("kube-apiserver", [
                str(tools.kube_apiserver),
                "--etcd-servers", etcd_url,
                "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1",
                "--secure-port", str(self.apiserver_port),
                "--cert-dir", str(self.run_dir / "apiserver-certs"),
                "--tls-cert-file", str(pki.serving_cert),
                "--tls-private-key-file", str(pki.serving_key),
                "--client-ca-file", str(pki.ca_cert),
                "--service-account-key-file", str(pki.sa_public),
                "--service-account-signing-key-file", str(pki.sa_private),
                "--service-account-issuer", f"https://127.0.0.1:{self.apiserver_port}",
                "--service-cluster-ip-range", "10.0.0.0/24",
                "--authorization-mode", "RBAC",
                "--allow-privileged=true",
                # No controller manager runs, so nothing would create service-account tokens.
                "--disable-admission-plugins", "ServiceAccount",
                "--v", "1",
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

    def ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def _write_kubeconfig(self) -> None:
        assert self.pki is not None

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "vidup-local", "cluster": {
                "server": self.server_url, "certificate-authority-data": b64(self.pki.ca_cert)}}],
            "users": [{"name": "vidup-admin", "user": {
                "client-certificate-data": b64(self.pki.admin_cert),
                "client-key-data": b64(self.pki.admin_key)}}],
            "contexts": [{"name": "vidup-local", "context": {
                "cluster": "vidup-local", "user": "vidup-admin", "namespace": "default"}}],
            "current-context": "vidup-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def _http_ok(url: str, process: ManagedProcess) -> bool:
    process.check_running()
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _https_ok(url: str, context: ssl.SSLContext, process: ManagedProcess) -> bool:
    process.check_running()
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return response.status == 200
