"""Replicas, crashes, lock takeover and flat memory, against real ingest processes."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from ingest_support import Ingest, finish, offset_of, open_patch

MiB = 1024 * 1024






def _on(ingest: Ingest, url: str) -> str:
    """The same upload addressed through another replica."""
    return f"{ingest.url}/files/{url.rsplit('/', 1)[1]}"


def test_two_replicas_share_uploads(start_ingest: Any, tmp_path: Path) -> None:
    a = start_ingest()
    b = start_ingest(storage=a.storage, keys=a.keys)
    data = os.urandom(3 * MiB + 11)
    url = a.create(len(data))
    assert a.patch(url, 0, data[:MiB]).status_code == 204
    # cut off on A in the middle of the next chunk ...
    s = open_patch(a, url, MiB, len(data) - MiB)
    s.sendall(data[MiB:2 * MiB])
    time.sleep(0.5)
    s.close()
    # ... resumed on B, which sees what A stored
    finish(b, _on(b, url), data)
    assert a.stored_bytes(url) == data
    assert offset_of(a, url) == len(data)


def test_new_request_takes_over_a_stale_patch(start_ingest: Any) -> None:
    """A PATCH whose client vanished (connection still open, no bytes coming) is asked to stop by
    the resuming client's HEAD — here on another replica — which then gets its answer instead of
    waiting for the lock (LOCK_WAIT=4: without takeover the HEAD would end in 423)."""
    a = start_ingest(VIDUP_INGEST_LOCK_WAIT="4")
    b = start_ingest(storage=a.storage, keys=a.keys, VIDUP_INGEST_LOCK_WAIT="4")
    data = os.urandom(4 * MiB)
    url = a.create(len(data))
    stale = open_patch(a, url, 0, len(data))
    stale.sendall(data[: 2 * MiB])
    time.sleep(1.0)  # the ingest has read these and now blocks waiting for more
    started = time.monotonic()
    r = b.head(_on(b, url))
    took = time.monotonic() - started
    assert r.status_code == 200, (r.status_code, r.text)
    kept = int(r.headers["Upload-Offset"])
    assert 0 < kept <= 2 * MiB
    assert took < 4, took
    # the stale request was answered (and closed), not left hanging
    stale.settimeout(5)
    reply = stale.recv(65536)
    assert reply.startswith(b"HTTP/1.1 409"), reply[:200]
    stale.close()
    finish(b, _on(b, url), data)
    assert b.stored_bytes(url) == data


@pytest.mark.parametrize("checksum", [False, True], ids=["spliced", "buffered"])
def test_a_stalled_body_ends_after_the_read_timeout_and_keeps_what_arrived(start_ingest: Any,
                                                                           checksum: bool) -> None:
    """A client that stops sending without closing is given up after VIDUP_INGEST_READ_TIMEOUT:
    the server answers on its own (no newcomer has to take over), with what arrived counted when
    no checksum is pending (the body moves socket -> file in the kernel) and nothing counted when
    one is (the chunk could not be verified)."""
    ing = start_ingest(VIDUP_INGEST_READ_TIMEOUT="1")
    url = ing.create(4 * MiB)
    digest = base64.b64encode(hashlib.sha1(b"x").digest()).decode()
    s = open_patch(ing, url, 0, 2 * MiB, checksum=f"sha1 {digest}" if checksum else "")
    s.sendall(os.urandom(MiB))
    started = time.monotonic()
    s.settimeout(15)
    answer = s.recv(65536).decode(errors="replace")
    waited = time.monotonic() - started
    s.close()
    assert answer.startswith("HTTP/1.1 "), answer
    assert 0.8 < waited < 10, f"the server answered after {waited:.1f} s"
    assert offset_of(ing, url) == (0 if checksum else MiB)


def test_sigkill_mid_upload_restart_resume(start_ingest: Any) -> None:
    env = {"VIDUP_INGEST_COMMIT_BYTES": str(256 * 1024)}
    ing = start_ingest(**env)
    data = os.urandom(6 * MiB + 3)
    url = ing.create(len(data))
    s = open_patch(ing, url, 0, len(data))
    for i in range(3):
        s.sendall(data[i * MiB:(i + 1) * MiB])
        time.sleep(0.2)
    time.sleep(0.5)
    ing.kill()  # master and workers, SIGKILL: no cleanup, the lock is still in Redis
    s.close()
    again = start_ingest(storage=ing.storage, keys=ing.keys, port=ing.port, **env)
    kept = offset_of(again, url)
    assert 0 < kept <= 3 * MiB  # committed progress survived, never more than was sent
    finish(again, url, data)
    assert again.stored_bytes(url) == data


@pytest.mark.file_only("cuts the data file back as a node crash under lazy fsync would; an S3 part is "
                       "durable once acknowledged")
def test_a_tail_lost_before_it_reached_the_disk_is_sent_again(start_ingest: Any) -> None:
    """Under the default policy commits are not fdatasynced, so a node crash can leave the offset
    record ahead of the data file. The offset heard after it is what the file holds, and a resume
    from there is byte-identical (simulated: the data file is cut back, as the crash would)."""
    ing = start_ingest()
    data = os.urandom(3 * MiB)
    url = ing.create(len(data))
    assert ing.patch(url, 0, data[: 2 * MiB]).headers["Upload-Offset"] == str(2 * MiB)
    os.truncate(ing.data_path(url), MiB + 17)
    assert offset_of(ing, url) == MiB + 17
    finish(ing, url, data)
    assert ing.data_path(url).read_bytes() == data


@pytest.mark.file_only("VIDUP_INGEST_FSYNC is the file store's policy; s3 has no fsync")
@pytest.mark.parametrize("policy", ["always", "complete", "never"])
def test_every_fsync_policy_commits_and_completes(start_ingest: Any, policy: str) -> None:
    """Each policy keeps what a cut-off PATCH delivered and finishes byte-identical."""
    ing = start_ingest(VIDUP_INGEST_FSYNC=policy, VIDUP_INGEST_COMMIT_BYTES=str(MiB))
    data = os.urandom(20 * MiB + 5)
    url = ing.create(len(data))
    s = open_patch(ing, url, 0, len(data))
    s.sendall(data[: 12 * MiB])
    deadline = time.monotonic() + 10
    while ing.data_path(url).stat().st_size < 12 * MiB and time.monotonic() < deadline:
        time.sleep(0.05)
    s.close()  # the client is cut off: everything that arrived counts
    assert offset_of(ing, url) == 12 * MiB
    finish(ing, url, data)
    assert ing.data_path(url).read_bytes() == data


def _cached_mib(path: Path) -> float:
    """How much of ``path`` is in the page cache (util-linux's fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out) / MiB


@pytest.mark.file_only("the page cache of the data file; s3 keeps no local file")
@pytest.mark.parametrize("policy", ["complete", "never"])
def test_an_upload_does_not_pile_up_in_the_page_cache(start_ingest: Any, policy: str) -> None:
    """Unless the policy is ``never`` (tusd's way, which keeps everything cached), received bytes
    are written back and dropped as they arrive, and a finished upload leaves nothing cached: in
    Kubernetes the page cache counts against the ingest pod's memory limit."""
    ing = start_ingest(VIDUP_INGEST_FSYNC=policy)
    data = os.urandom(96 * MiB)
    url = ing.create(len(data) + 1)
    assert ing.patch(url, 0, data).status_code == 204
    during = _cached_mib(ing.data_path(url))
    assert ing.patch(url, len(data), b"!").headers["Upload-Offset"] == str(len(data) + 1)
    after = _cached_mib(ing.data_path(url))
    if policy == "never":
        assert during > 90 and after > 90
    else:
        assert during <= 24, f"{during:.0f} MiB of an unfinished upload stayed in the page cache"
        assert after < 1, f"{after:.1f} MiB of a finished upload stayed in the page cache"


def test_an_unknown_fsync_policy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidup_ingest.config import IngestConfig

    monkeypatch.setenv("VIDUP_INGEST_FSYNC", "sometimes")
    with pytest.raises(ValueError, match="VIDUP_INGEST_FSYNC"):
        IngestConfig.from_env()
    monkeypatch.setenv("VIDUP_INGEST_FSYNC", "")
    assert IngestConfig.from_env().fsync == "complete"


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_streaming_200_mib_keeps_memory_flat(start_ingest: Any, tmp_path: Path) -> None:
    ing = start_ingest(VIDUP_INGEST_WORKERS="1")
    size = 200 * MiB
    src = tmp_path / "big.bin"
    block = os.urandom(MiB)
    with open(src, "wb") as f:
        for _ in range(200):
            f.write(block)
    # First requests paid: imports, pools, the first handover (a finished upload creates its
    # VideoTranscode: the Kubernetes client's first call loads its models) and, on S3, the part
    # buffers and upload threads a body fills once (a few parts). What is measured is growth
    # while 200 MiB more stream through: flat means none of it stays.
    warm = 32 * MiB
    url = ing.create(warm)
    assert ing.patch(url, 0, os.urandom(warm)).status_code == 204
    url = ing.create(size)
    (worker,) = ing.worker_pids()
    before = _status_kib(worker, "VmRSS")
    with open(src, "rb") as f:
        r = ing.patch(url, 0, f)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(size)
    peak = _status_kib(worker, "VmHWM")
    growth_mib = (peak - before) / 1024
    # The file backend moves bodies in the kernel; on S3 an upload holds its part buffers while it
    # streams: the one filling and those uploading (tus/s3store.py), a bound, not a function of size.
    from vidup_ingest.config import IngestConfig
    from vidup_ingest.tus.s3store import PARTS_IN_FLIGHT

    part_mib = int(ing.env.get("VIDUP_INGEST_S3_PART_SIZE") or IngestConfig().s3_part_size) / MiB
    limit = 24 + ((PARTS_IN_FLIGHT + 1) * part_mib if ing.backend == "s3" else 0)
    assert growth_mib < limit, f"RSS grew by {growth_mib:.1f} MiB (limit {limit:.0f}) while streaming 200 MiB"
    assert ing.stored_size(url) == size
    assert requests.head(url, headers=ing.headers()).headers["Upload-Offset"] == str(size)
