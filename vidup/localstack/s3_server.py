"""A private SeaweedFS S3 server (``weed mini``) on free ports (loopback by default), for ``VIDUP_STORAGE=s3``.

SeaweedFS is a real object store (master, volume server, filer and S3 gateway in one process here),
built from the Go module proxy like the control plane, not an S3 mock: it enforces the 5 MiB
minimum part size, keeps multipart uploads across its own restarts and serves ranged reads.
Each listener also opens ``port + 10000`` for gRPC, so ports are picked with that twin free too.
Credentials are one identity written to an ``s3.json``; the bucket is created at start.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import boto3

from vidup.localstack import binaries
from vidup.localstack.processes import ManagedProcess, wait_until
from vidup.settings import Settings
from vidup.storage.s3 import S3Blobs, make_client

BUCKET = "vidup"
REGION = "us-east-1"
_GRPC_OFFSET = 10000
#: The listeners ``weed mini`` opens (each plus its gRPC twin).
_LISTENERS = ("s3", "master", "volume", "filer", "admin")


def _free_twin_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free and whose gRPC twin (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port + _GRPC_OFFSET > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as twin:
            try:
                twin.bind((host, port + _GRPC_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


@dataclass
class S3Server:
    """One SeaweedFS under ``<run dir>/s3`` with one bucket and one access key.

    ``host`` is the address it binds and advertises (loopback by default); a test cluster's pods
    reach a server bound to the node's address (``vidup.localcluster.hostnet.NODE_ADDRESS``).
    """

    run_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    access_key: str = ""
    secret_key: str = ""
    process: ManagedProcess | None = None
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """What every component needs to use this store (VIDUP_* plus the standard AWS names)."""
        return {
            "VIDUP_STORAGE": "s3", "VIDUP_S3_ENDPOINT": self.endpoint, "VIDUP_S3_REGION": REGION,
            "VIDUP_S3_BUCKET": BUCKET, "VIDUP_S3_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def settings(self, base: Settings) -> Settings:
        return replace(base, storage="s3", s3_endpoint=self.endpoint, s3_region=REGION, s3_bucket=BUCKET,
                       s3_path_style=True)

    def blobs(self, prefix: str = "") -> S3Blobs:
        """A client of this server's bucket (keys under ``prefix``), with its own credentials (not
        the environment's)."""
        settings = self.settings(Settings())
        client = make_client(settings, boto3.session.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key))
        return S3Blobs(client, BUCKET, prefix)

    def start(self, timeout: float = 60) -> S3Server:
        weed = binaries.ensure_s3()
        data = self.run_dir / "s3"
        data.mkdir(parents=True, exist_ok=True)
        config = data / "s3.json"
        if not config.exists():  # a restart keeps its identity (and its data)
            self.access_key = self.access_key or "vidup" + secrets.token_hex(6)
            self.secret_key = self.secret_key or secrets.token_hex(20)
            config.write_text(json.dumps({"identities": [{
                "name": "vidup", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
            config.chmod(0o600)
        else:
            creds = json.loads(config.read_text())["identities"][0]["credentials"][0]
            self.access_key, self.secret_key = creds["accessKey"], creds["secretKey"]
        if not self.ports:
            self.ports = {name: _free_twin_port(self.host) for name in _LISTENERS}
        argv = [
            str(weed), "mini", f"-dir={data / 'data'}", f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-s3.port={self.ports['s3']}", f"-s3.config={config}", f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}", f"-filer.port={self.ports['filer']}",
            f"-admin.port={self.ports['admin']}", "-admin.ui=false", "-admin.port.legacy=0",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}",
        ]
        (data / "data").mkdir(exist_ok=True)
        self.process = ManagedProcess("s3", argv, self.run_dir / "logs" / "s3.log").start()
        blobs = self.blobs()

        def ready() -> bool:
            if self.process is not None:
                self.process.check_running()
            blobs.client.head_bucket(Bucket=BUCKET)
            return True

        wait_until(ready, timeout, f"SeaweedFS S3 on port {self.ports['s3']}", interval=0.3)
        return self

    def vacuum(self, settle: float = 3.0, timeout: float = 60.0) -> None:
        """Reclaim the disk space of deleted objects now, once the deletes have reached the
        volumes (the filer applies them in the background, about a second later: done when the
        volumes' delete count has not moved for ``settle`` seconds). SeaweedFS frees the space
        only when a volume is vacuumed (by its master every 15 minutes, past 30 % garbage): a
        benchmark that writes and deletes GiBs in a loop would fill the disk first, and would time
        its next run against the store's own cleanup."""
        status = f"http://{self.host}:{self.ports['volume']}/status"
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with urllib.request.urlopen(status, timeout=10) as answer:
                deleted = sum(int(v.get("DeleteCount", 0)) for v in json.load(answer).get("Volumes") or [])
            if deleted != seen:
                seen, since = deleted, time.monotonic()
            elif time.monotonic() - since >= settle:
                break
            time.sleep(0.1)
        url = f"http://{self.host}:{self.ports['master']}/vol/vacuum?garbageThreshold=0.0001"
        with urllib.request.urlopen(url, timeout=600) as answer:
            answer.read()

    def stop(self, grace: float = 10) -> None:
        if self.process is not None:
            self.process.stop(grace=grace)
