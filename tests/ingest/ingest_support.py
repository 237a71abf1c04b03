"""Helpers for the ingest tests: start real ingest processes with ``ingest_process`` (the code
`vidup up` runs) on the session's real kube-apiserver and Redis, and talk to them over HTTP only.

An ingest stores uploads on either backend (``VIDUP_STORAGE``): ``file`` (a directory per factory
or per replica set) or ``s3`` (the session's real SeaweedFS, one key prefix per replica set). What a
test checks in the storage goes through the shared :class:`~vidup.storage.Blobs` interface
(``stored_bytes``, ``upload_keys``, ``holds_data``), so the same assertion holds on both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from vidup.apikeys import new_api_key, write_api_keys_file
from vidup.localstack.components import ingest_process
from vidup.localstack.processes import ManagedProcess, free_port, wait_until
from vidup.localstack.s3_server import S3Server
from vidup.localstack.stack import Stack
from vidup.storage import Blobs, FileBlobs, S3Blobs
from vidup.storage.layout import upload_relpath

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"


@dataclass
class Ingest:
    """One running ingest replica plus what a test needs to talk to it."""

    url: str
    process: ManagedProcess
    #: The storage directory: the uploads themselves on ``file``, a scratch directory on ``s3``.
    #: Replicas started with the same one share their uploads (on s3: the same key prefix).
    storage: Path
    keys: dict[str, str]
    env: dict[str, str]
    run_dir: Path
    port: int
    #: The store this ingest writes, as the tests read it ("file" or "s3" in ``blobs.kind``).
    blobs: Blobs

    @property
    def backend(self) -> str:
        return self.blobs.kind

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

    # -- what the storage holds (through the Blobs interface: the same on both backends) --------

    def stored_bytes(self, url: str) -> bytes | None:
        """A finished upload's bytes (``uploads/<id>``), or None when there is no such object.

        On s3 an unfinished upload has no object yet (its bytes are in a multipart upload), so
        tests read this only once an upload is finished and check unfinished ones by HEAD."""
        return self.blobs.read_bytes(upload_relpath(upload_id(url)))

    def stored_size(self, url: str) -> int | None:
        return self.blobs.size(upload_relpath(upload_id(url)))

    def upload_keys(self) -> set[str]:
        """Every key under ``uploads/`` (data, info and state records of every upload)."""
        return {key for key, _ in self.blobs.keys("uploads/")}

    def keys_of(self, url: str) -> list[str]:
        """The keys one upload holds (``uploads/<id>`` and ``uploads/<id>.*``)."""
        key = upload_relpath(upload_id(url))
        return [k for k, _ in self.blobs.keys(key) if k == key or k.startswith(key + ".")]

    def multipart_uploads(self, url: str) -> list[str]:
        """The ids of the S3 multipart uploads open for this upload's keys (always none on file)."""
        return [mpu for _, mpu in self._multipart(url)]

    def _multipart(self, url: str) -> list[tuple[str, str]]:
        """(object key, upload id) of each open multipart upload of the upload's keys."""
        if not isinstance(self.blobs, S3Blobs):
            return []
        prefix = self.blobs.key(upload_relpath(upload_id(url)))
        pages = self.blobs.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.blobs.bucket, Prefix=prefix)
        return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]

    def holds_data(self, url: str) -> bool:
        """Whether the store still holds any of the upload's bytes: its data file (file), or its
        object, a pending tail object or an open multipart upload (s3). Its info alone (the
        tombstone an expired upload leaves) is not data."""
        key = upload_relpath(upload_id(url))
        if isinstance(self.blobs, FileBlobs):
            return self.blobs.size(key) is not None
        return bool([k for k in self.keys_of(url) if k != key + ".info"] or self.multipart_uploads(url))

    def forget(self, url: str) -> None:
        """Make the store lose the upload behind the ingest's back (a crash, an operator's rm)."""
        for key in self.keys_of(url):
            self.blobs.delete(key)
        for key, mpu in self._multipart(url):
            assert isinstance(self.blobs, S3Blobs)
            self.blobs.client.abort_multipart_upload(Bucket=self.blobs.bucket, Key=key, UploadId=mpu)

    def data_path(self, url: str) -> Path:
        """The data file of an upload: the file backend only (tests about files, fsync, caches)."""
        assert self.backend == "file", "data_path is the file backend's; use stored_bytes/holds_data"
        return self.storage / "uploads" / upload_id(url)

    def kill(self) -> None:
        """SIGKILL the master and its workers at once: a crashed pod, nothing gets to clean up."""
        pids = [self.process.pid, *self.worker_pids()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.stop(grace=1)


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


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
    #: The S3 server for ``VIDUP_STORAGE=s3``; None: the file backend.
    s3: S3Server | None = None
    started: list[Ingest] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return "file" if self.s3 is None else "s3"

    def s3_prefix(self, storage: Path) -> str:
        """The key prefix of a replica set on s3: named after its storage directory, so replicas
        sharing ``storage`` share uploads exactly as on the file backend, and every set (every
        test, every run) has a bucket area of its own."""
        return f"ingest-tests/{hashlib.sha256(str(storage.resolve()).encode()).hexdigest()[:16]}/"

    def blobs_for(self, storage: Path) -> Blobs:
        if self.s3 is None:
            return FileBlobs(storage)
        blobs = self.s3.blobs()
        return S3Blobs(blobs.client, blobs.bucket, prefix=self.s3_prefix(storage))

    def __call__(self, storage: Path | None = None, keys: dict[str, str] | None = None,
                 port: int | None = None, **env: str) -> Ingest:
        """Start an ingest. Replicas pass the same ``storage`` and ``keys`` to share uploads."""
        index = len(self.started)
        run_dir = self.root / f"ingest-{index}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir(parents=True)
        storage = storage or run_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        backend_env = {} if self.s3 is None else {**self.s3.env(), "VIDUP_S3_PREFIX": self.s3_prefix(storage)}
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
            **backend_env,
            **env,
        }
        port = port or free_port()
        process = ingest_process(run_dir, full_env, port, index).start()
        ingest = Ingest(f"http://127.0.0.1:{port}", process, storage, keys, full_env, run_dir, port,
                        self.blobs_for(storage))
        self.started.append(ingest)
        wait_until(lambda: _ready(ingest), 60, "the ingest to answer")
        return ingest

    def stop_all(self) -> None:
        for ingest in self.started:
            ingest.process.stop(grace=3)


def open_patch(ingest: Ingest, url: str, offset: int, total: int, checksum: str = "") -> socket.socket:
    """A PATCH that announces ``total`` bytes; the caller sends the body and decides its fate."""
    head = (f"PATCH /files/{upload_id(url)} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {ingest.keys['acme']}\r\nUpload-Offset: {offset}\r\n"
            + (f"Upload-Checksum: {checksum}\r\n" if checksum else "")
            + f"Content-Type: {OCTET}\r\nContent-Length: {total}\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", ingest.port), timeout=30)
    s.sendall(head.encode())
    return s


def offset_of(ingest: Ingest, url: str) -> int:
    """The upload's offset as HEAD reports it."""
    r = ingest.head(url)
    assert r.status_code == 200, (r.status_code, r.text)
    return int(r.headers["Upload-Offset"])


def finish(ingest: Ingest, url: str, data: bytes) -> None:
    """Resume from the server's offset and send the rest of ``data``."""
    offset = offset_of(ingest, url)
    r = ingest.patch(url, offset, data[offset:])
    assert r.status_code == 204, (r.status_code, r.text)
    assert r.headers["Upload-Offset"] == str(len(data))

