"""Real tus clients against the ingest: tuspy (Python) and tus-js-client (Node, from npm).
Each is cut off mid-upload, resumes, and the stored file must be byte-identical to the source."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from ingest_support import OCTET, Ingest, offset_of
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

JS_DIR = Path(__file__).parent / "js"


def _source(tmp_path: Path, size: int, name: str = "source.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(hashlib.sha256(name.encode()).digest() * (size // 32) + b"t" * (size % 32))
    return path


def _cut_patch(ingest: Ingest, url: str, offset: int, data: bytes, send: int) -> None:
    """Start a PATCH announcing all of ``data`` but send only ``send`` bytes, then drop the connection."""
    host_path = url.split(str(ingest.port), 1)[1]
    head = (f"PATCH {host_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {ingest.keys['acme']}\r\nUpload-Offset: {offset}\r\n"
            f"Content-Type: {OCTET}\r\nContent-Length: {len(data)}\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", ingest.port))
    s.sendall(head.encode() + data[:send])
    time.sleep(0.3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST: a phone that lost its network


def test_tuspy_cut_resume_with_checksums(ingest: Ingest, tmp_path: Path) -> None:
    src = _source(tmp_path, 3 * 1024 * 1024 + 17)
    data = src.read_bytes()
    c = tus_client.TusClient(f"{ingest.url}/files/", headers={"Authorization": f"Bearer {ingest.keys['acme']}"})
    up = c.uploader(file_path=str(src), chunk_size=512 * 1024, upload_checksum=True,
                    metadata={"filename": "source.bin"})
    up.upload(stop_at=1024 * 1024)
    url = up.url
    assert offset_of(ingest, url) == 1024 * 1024
    # the connection dies in the middle of the next chunk
    _cut_patch(ingest, url, 1024 * 1024, data[1024 * 1024:], 700_000)
    kept = offset_of(ingest, url)
    assert 1024 * 1024 <= kept <= 1024 * 1024 + 700_000
    # a fresh client process resumes from the server's offset
    resumed = tus_client.TusClient(f"{ingest.url}/files/", headers={"Authorization": f"Bearer {ingest.keys['acme']}"}
                                   ).uploader(file_path=str(src), url=url, chunk_size=512 * 1024,
                                              upload_checksum=True)
    assert resumed.offset == kept
    resumed.upload()
    assert ingest.stored_bytes(url) == data


def test_tuspy_checksums_are_verified(ingest: Ingest, tmp_path: Path) -> None:
    """tuspy sends Upload-Checksum with every chunk; a wrong one must be refused with 460."""
    src = _source(tmp_path, 300_000)
    c = tus_client.TusClient(f"{ingest.url}/files/", headers={"Authorization": f"Bearer {ingest.keys['acme']}"})
    up = c.uploader(file_path=str(src), chunk_size=100_000, upload_checksum=True)
    up.upload(stop_at=100_000)
    assert offset_of(ingest, up.url) == 100_000

    class Wrong:
        def __init__(self, *_: Any) -> None:
            self.h = hashlib.sha1(b"corrupted in transit")

        def digest(self) -> bytes:
            return self.h.digest()

    up._BaseUploader__checksum_algorithm = Wrong  # the bytes no longer match the digest sent
    with pytest.raises(TusCommunicationError) as exc:
        up.upload()
    assert exc.value.status_code == 460
    assert offset_of(ingest, up.url) == 100_000


def _node(args: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is required (tus-js-client tests)"
    assert (JS_DIR / "node_modules" / "tus-js-client").exists(), "run: npm ci --prefix tests/ingest/js"
    proc = subprocess.run([node, str(JS_DIR / "upload.js"), json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout, cwd=JS_DIR)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result from node: {proc.stdout}\n{proc.stderr}"
    return dict(json.loads(lines[-1]))


def test_tus_js_client_cut_and_resume(ingest: Ingest, tmp_path: Path) -> None:
    src = _source(tmp_path, 4 * 1024 * 1024 + 5)
    headers = {"Authorization": f"Bearer {ingest.keys['acme']}"}
    first = _node({"file": str(src), "endpoint": f"{ingest.url}/files/", "headers": headers,
                   "chunkSize": 1024 * 1024, "stopAfter": 1536 * 1024, "metadata": {"filename": "a.mp4"}})
    assert first.get("aborted"), first
    url = first["url"]
    kept = offset_of(ingest, url)
    assert 0 < kept < src.stat().st_size
    second = _node({"file": str(src), "endpoint": f"{ingest.url}/files/", "uploadUrl": url,
                    "headers": headers, "chunkSize": 1024 * 1024})
    assert second.get("done"), second
    assert second["url"] == url
    assert ingest.stored_bytes(url) == src.read_bytes()
    r = ingest.head(url)
    assert r.headers["Upload-Offset"] == str(src.stat().st_size) and "Video-Location" in r.headers


def test_tus_js_client_parallel_uploads_use_concatenation(ingest: Ingest, tmp_path: Path) -> None:
    src = _source(tmp_path, 3 * 1024 * 1024 + 333, "parallel.bin")
    result = _node({"file": str(src), "endpoint": f"{ingest.url}/files/", "parallel": 3,
                    "headers": {"Authorization": f"Bearer {ingest.keys['acme']}"},
                    "metadata": {"filename": "parallel.mp4"}})
    assert result.get("done"), result
    url = result["url"]
    r = ingest.head(url)
    assert r.headers["Upload-Concat"].startswith("final;")
    assert len(r.headers["Upload-Concat"][len("final;"):].split()) == 3
    assert ingest.stored_bytes(url) == src.read_bytes()


def test_tus_js_client_creation_with_upload_and_token(ingest: Ingest, tmp_path: Path) -> None:
    """The browser path: an upload token from /api/uploads, data sent with the creation request."""
    token = requests.post(f"{ingest.url}/api/uploads",
                          headers={"Authorization": f"Bearer {ingest.keys['acme']}"}).json()
    src = _source(tmp_path, 1024 * 1024 + 1, "browser.bin")
    result = _node({"file": str(src), "endpoint": token["upload_url"], "withUpload": True,
                    "headers": {"Authorization": f"Bearer {token['token']}"}})
    assert result.get("done"), result
    assert ingest.stored_bytes(result["url"]) == src.read_bytes()
