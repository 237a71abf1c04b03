"""Helpers for the ingest tests: start real ingest processes with ``ingest_process`` (the code
`vidup up` runs) on the session's real kube-apiserver and Redis, and talk to them over HTTP only."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from vidup.apikeys import new_api_key, write_api_keys_file
from vidup.localstack.components import ingest_process
from vidup.localstack.processes import ManagedProcess, free_port, wait_until
from vidup.localstack.stack import Stack

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"


@dataclass
class Ingest:
    """One running ingest replica plus what a test needs to talk to it."""

    url: str
    process: ManagedProcess
    storage: Path
    keys: dict[str, str]
    env: dict[str, str]
    run_dir: Path
    port: int

    def headers(self, tenant: str = "acme", **extra: str) -> dict[str, str]:
        h = {**TUS, "Authorization": f"Bearer {self.keys[tenant]}"}
        h.update({k.replace("_", "-"): v for k, v in extra.items()})
        return h

    def tenant(self, name: str = "acme") -> str:
        """The real tenant name behind a short alias (names are unique per fixture: rate limits)."""
        return self.env["_TENANT_PREFIX"] + name

    def worker_pids(self) -> list[int]:
        return _children(self.process.pid)

    def create(self, length: int | None, tenant: str = "acme", **extra: str) -> str:
        h = self.headers(tenant, **extra)
        if length is not None:
            h["Upload-Length"] = str(length)
        r = requests.post(f"{self.url}/files/", headers=h, timeout=30)
        assert r.status_code == 201, (r.status_code, r.text)
        return str(r.headers["Location"])

    def patch(self, url: str, offset: int, data: Any, tenant: str = "acme", **extra: str) -> requests.Response:
        h = self.headers(tenant, **extra)
        h.setdefault("Content-Type", OCTET)
        h["Upload-Offset"] = str(offset)
        return requests.patch(url, headers=h, data=data, timeout=120)

    def head(self, url: str, tenant: str = "acme") -> requests.Response:
        return requests.head(url, headers=self.headers(tenant), timeout=30)

    def data_path(self, url: str) -> Path:
        return self.storage / "uploads" / url.rstrip("/").rsplit("/", 1)[-1]

    def kill(self) -> None:
        """SIGKILL the master and its workers at once: a crashed pod, nothing gets to clean up."""
        pids = [self.process.pid, *self.worker_pids()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.stop(grace=1)


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def _ready(ingest: Ingest) -> bool:
    ingest.process.check_running()
    return requests.get(f"{ingest.url}/healthz", timeout=2).status_code == 200


@dataclass
class IngestFactory:
    kube: Stack
    root: Path
    started: list[Ingest] = field(default_factory=list)

    def __call__(self, storage: Path | None = None, keys: dict[str, str] | None = None,
                 port: int | None = None, **env: str) -> Ingest:
        """Start an ingest. Replicas pass the same ``storage`` and ``keys`` to share uploads."""
        index = len(self.started)
        run_dir = self.root / f"ingest-{index}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir(parents=True)
        storage = storage or run_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        prefix = f"t{uuid.uuid4().hex[:8]}-"
        if keys is None:
            keys = {alias: new_api_key() for alias in ("acme", "globex")}
            keys["_prefix"] = prefix
        prefix = keys["_prefix"]
        keys_file = run_dir / "api-keys.json"
        write_api_keys_file(keys_file, {prefix + alias: k for alias, k in keys.items() if alias != "_prefix"})
        full_env = {
            **self.kube.component_env(),
            "VIDUP_STORAGE_DIR": str(storage),
            "VIDUP_API_KEYS_FILE": str(keys_file),
            "VIDUP_RATE_LIMIT_REQUESTS": "100000/minute",
            "VIDUP_RATE_LIMIT_CREATIONS": "100000/minute",
            "VIDUP_MAX_UPLOAD_SIZE": str(1 << 30),
            "VIDUP_INGEST_WORKERS": "2",
            "VIDUP_INGEST_THREADS": "16",
            "_TENANT_PREFIX": prefix,
            **env,
        }
        port = port or free_port()
        process = ingest_process(run_dir, full_env, port, index).start()
        ingest = Ingest(f"http://127.0.0.1:{port}", process, storage, keys, full_env, run_dir, port)
        self.started.append(ingest)
        wait_until(lambda: _ready(ingest), 60, "the ingest to answer")
        return ingest

    def stop_all(self) -> None:
        for ingest in self.started:
            ingest.process.stop(grace=3)


