"""Faults only the S3 backend has, against real processes: the store itself restarting under an
upload, an ingest SIGKILLed between the parts of a multipart upload, and a 2 GiB upload streamed to
the bucket with flat memory. (The protocol suite runs on both backends; see conftest.py.)"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ingest_support import Ingest, IngestFactory, finish, offset_of, open_patch, upload_id
from kubernetes import client

from vidup.localstack.s3_server import S3Server
from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION
from vidup.storage import S3Blobs
from vidup.storage.layout import upload_relpath
from vidup_ingest.tus.s3store import S3Storage
from vidup_ingest.tus.storage import Fence

MiB = 1024 * 1024
#: S3's smallest part: the ingest's parts are made this small so a few MiB cross part boundaries.
PART = 5 * MiB


@pytest.fixture(scope="module")
def s3_ingests(kube: Stack, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestFactory]:
    """Ingests on the session's S3 server (a key prefix per replica set, as in the suite)."""
    factory = IngestFactory(kube, tmp_path_factory.mktemp("s3-fault-ingests"), s3_server)
    yield factory
    factory.stop_all()


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server of this test's own, free to be restarted (the session's is shared)."""
    server = S3Server(tmp_path / "own-s3").start()
    yield server
    server.stop()






def _parts(ingest: Ingest, url: str) -> int:
    """Parts the store holds in the upload's open multipart upload(s), recorded or not."""
    blobs = ingest.blobs
    assert isinstance(blobs, S3Blobs)
    key = blobs.key(upload_relpath(upload_id(url)))
    count = 0
    for mpu in ingest.multipart_uploads(url):
        got = blobs.client.list_parts(Bucket=blobs.bucket, Key=key, UploadId=mpu)
        count += len({p["PartNumber"] for p in got.get("Parts", [])})
    return count


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_s3_restarted_mid_upload_loses_no_acknowledged_byte(kube: Stack, own_s3: S3Server, tmp_path: Path) -> None:
    """The store goes down in the middle of a PATCH and comes back (same ports, same data): while it
    is down the ingest answers 503 + Retry-After, or what it knows was committed (never 500, never a
    hang), and counts nothing it could not store; afterwards HEAD reports at least every
    acknowledged byte, and the client's resume ends byte-identical."""
    factory = IngestFactory(kube, tmp_path / "ingests", own_s3)
    try:
        ing = factory(VIDUP_INGEST_COMMIT_BYTES=str(MiB), VIDUP_INGEST_S3_PART_SIZE=str(PART))
        data = os.urandom(24 * MiB + 7)
        url = ing.create(len(data))
        acknowledged = 7 * MiB  # one part and a pending tail
        assert ing.patch(url, 0, data[:acknowledged]).status_code == 204

        s = open_patch(ing, url, acknowledged, len(data) - acknowledged)
        s.sendall(data[acknowledged:acknowledged + 3 * MiB])
        time.sleep(1.0)  # the ingest has stored and committed most of these
        own_s3.stop()
        s.settimeout(90)
        with contextlib.suppress(OSError):  # the server may stop reading (or answer) at any moment
            s.sendall(data[acknowledged + 3 * MiB:acknowledged + 6 * MiB])
        answer = b""
        with contextlib.suppress(OSError):
            answer = s.recv(65536)
        s.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer[:300]

        # While the store is down nothing counts. HEAD answers 503 with Retry-After, or, from the
        # process that held the upload last (it knows what it committed), that offset. A PATCH
        # answers 503, or 409 from that process when the offset the client has is older than what
        # it knows (the ingest runs two gunicorn workers: HEAD and PATCH may meet either).
        r = ing.head(url)
        known = acknowledged
        if r.status_code == 200:
            known = int(r.headers["Upload-Offset"])
            assert acknowledged <= known <= acknowledged + 6 * MiB, known
        else:
            assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.text)
        r = ing.patch(url, known, data[known:known + MiB])
        assert (r.status_code == 503 and r.headers.get("Retry-After")) or r.status_code == 409, (
            r.status_code, r.text)
        ing.process.check_running()

        own_s3.start()  # the same ports, credentials and data
        kept = offset_of(ing, url)
        assert acknowledged <= kept <= acknowledged + 6 * MiB, kept
        finish(ing, url, data)
        assert ing.stored_bytes(url) == data
        assert ing.multipart_uploads(url) == []
    finally:
        factory.stop_all()


@pytest.mark.parametrize("commit_mib", [64, 1], ids=["parts-unrecorded", "parts-recorded"])
def test_sigkill_between_two_parts_resumes_without_duplicate_or_missing_part(s3_ingests: IngestFactory,
                                                                              commit_mib: int) -> None:
    """PATCHes cross 5 MiB part boundaries and the ingest is SIGKILLed mid-stream after two parts
    reached the store. ``parts-unrecorded``: no commit since the parts went up (commits every 64
    MiB), so they are in the multipart upload but in no state: the offset heard is the last
    acknowledged one and the resume uploads those part numbers again. ``parts-recorded``: commits
    every MiB, so the kill lands between recorded parts. Either way the finished object is the
    source byte for byte: no part twice, none missing."""
    env = {"VIDUP_INGEST_S3_PART_SIZE": str(PART), "VIDUP_INGEST_COMMIT_BYTES": str(commit_mib * MiB)}
    ing = s3_ingests(**env)
    data = os.urandom(23 * MiB + 5)
    url = ing.create(len(data))
    assert ing.patch(url, 0, data[:3 * MiB]).status_code == 204  # a pending tail, no part yet
    acknowledged = 7 * MiB
    assert ing.patch(url, 3 * MiB, data[3 * MiB:acknowledged]).status_code == 204  # across the boundary
    before = _parts(ing, url)

    s = open_patch(ing, url, acknowledged, len(data) - acknowledged)
    sent = 0
    for _ in range(12):  # at most 12 MiB: two more parts of 5 MiB, and some
        s.sendall(data[acknowledged + sent:acknowledged + sent + MiB])
        sent += MiB
        if _parts(ing, url) >= before + 2:
            break
    _wait(lambda: _parts(ing, url) >= before + 2, 30, "two more parts in the store")
    ing.kill()  # master and workers, SIGKILL: the lock is still in Redis, the buffer is lost
    s.close()

    again = s3_ingests(storage=ing.storage, keys=ing.keys, port=ing.port, **env)
    kept = offset_of(again, url)
    if commit_mib == 64:
        assert kept == acknowledged, kept
    else:
        assert acknowledged < kept <= acknowledged + sent, (kept, sent)
    finish(again, url, data)
    assert again.stored_bytes(url) == data
    assert again.multipart_uploads(url) == []


def test_a_completion_cut_short_before_its_record_is_finished_by_the_resumed_patch(kube: Stack,
                                                                                  s3_ingests: IngestFactory) -> None:
    """The last commit of an upload is left to its completion (no state PUT), so an ingest that
    dies between CompleteMultipartUpload and the finished info leaves the object whole and the
    older record. That is made here as such an ingest would have made it: a store on the same
    bucket commits the last byte and completes under its own hold, and saves nothing after. The
    client's HEAD then hears the older offset and it sends the bytes again: the PATCH finds the
    object whole, answers the upload finished, hands it over, and leaves only the object and its
    info behind."""
    ing = s3_ingests(VIDUP_INGEST_S3_PART_SIZE=str(PART))
    data = os.urandom(12 * MiB + 5)
    url = ing.create(len(data))
    assert isinstance(ing.blobs, S3Blobs)
    crashed = S3Storage(ing.blobs, part_size=PART)
    fence = Fence("", "the-ingest-that-died")
    info = crashed.load(upload_id(url), fence)
    assert info is not None
    writer = crashed.open_writer(info, fence)
    try:
        writer.write(data)
        writer.commit(len(data), time.time() + 3600)
    finally:
        writer.close()
    crashed.persist_data(upload_id(url), fence)
    assert ing.stored_bytes(url) == data and ing.multipart_uploads(url) == []

    assert offset_of(ing, url) == 0
    r = ing.patch(url, 0, data)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data)), (r.status_code, r.text)
    assert offset_of(ing, url) == len(data)
    assert ing.stored_bytes(url) == data
    key = upload_relpath(upload_id(url))
    assert sorted(ing.keys_of(url)) == [key, key + ".info"], "no state and no pending object left"
    with kube.api_client() as api:
        client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL,
                                                                  upload_id(url))  # handed over


class _Blocks:
    """A ``size``-byte body made of numbered 1 MiB blocks (a part out of place changes the digest),
    read like a file, so requests sends it with a Content-Length and never holds it whole."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pos = 0
        self.block = bytearray(os.urandom(MiB))
        self.digest = hashlib.sha256()

    def __len__(self) -> int:
        return self.size - self.pos

    def _block(self, index: int) -> bytes:
        self.block[:8] = index.to_bytes(8, "big")
        return bytes(self.block)

    def read(self, n: int = -1) -> bytes:
        n = len(self) if n < 0 else min(n, len(self))
        out = bytearray()
        while len(out) < n:
            index, within = divmod(self.pos, MiB)
            chunk = self._block(index)[within:within + n - len(out)]
            out += chunk
            self.pos += len(chunk)
        self.digest.update(out)
        return bytes(out)


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_a_2_gib_upload_keeps_the_ingest_rss_flat_on_s3(s3_ingests: IngestFactory) -> None:
    """2 GiB in one PATCH goes to the bucket part by part: the worker's peak RSS (VmHWM) grows by
    no more than it did for 64 MiB (one part buffer, whatever the size), and the object is the
    source (its SHA-256, streamed back)."""
    ing = s3_ingests(VIDUP_INGEST_WORKERS="1", VIDUP_MAX_UPLOAD_SIZE=str(3 << 30))
    (worker,) = ing.worker_pids()
    warm = ing.create(7)
    assert ing.patch(warm, 0, b"warm-up").status_code == 204  # imports, pools

    def upload(size: int) -> tuple[str, float, float]:
        body = _Blocks(size)
        url = ing.create(size)
        before = _status_kib(worker, "VmHWM")
        r = ing.patch(url, 0, body)
        assert r.status_code == 204 and r.headers["Upload-Offset"] == str(size), (r.status_code, r.text)
        peak = _status_kib(worker, "VmHWM")
        digest = hashlib.sha256()
        got = ing.blobs.open_range(upload_relpath(upload_id(url)))
        with got.body as stream:
            while chunk := stream.read(8 * MiB):
                digest.update(chunk)
        assert got.size == size and digest.hexdigest() == body.digest.hexdigest()
        return url, (peak - before) / 1024, peak / 1024

    small, small_growth, small_peak = upload(64 * MiB)
    big, big_growth, big_peak = upload(2 << 30)
    print(f"\nworker VmHWM: +{small_growth:.1f} MiB for 64 MiB (peak {small_peak:.0f} MiB), "
          f"then +{big_growth:.1f} MiB for 2 GiB (peak {big_peak:.0f} MiB)")
    assert big_growth < 24, f"the peak RSS grew by {big_growth:.1f} MiB more while streaming 2 GiB"
    for url in (small, big):
        ing.blobs.delete(upload_relpath(upload_id(url)))  # the bucket is the session's: free the disk
