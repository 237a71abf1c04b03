"""The TUS upload store behaves the same on the shared volume and in a real S3 bucket (SeaweedFS):
bytes survive writer sessions and commits whatever the chunk size, uncommitted bytes never count,
completion is idempotent, concatenation is byte-exact, and deleting leaves nothing behind.

The S3 store runs with 5 MiB parts (the smallest S3 allows) so a few MiB of test data already
crosses part boundaries, pending objects and the 5 MiB rule SeaweedFS enforces.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from vidup.localstack.s3_server import S3Server
from vidup.settings import Settings
from vidup.storage import Blobs, FileBlobs, S3Blobs
from vidup.storage.layout import upload_relpath
from vidup.storage.s3 import make_client
from vidup_ingest.config import IngestConfig
from vidup_ingest.tus.partmemory import SMALL_PAGES, MapPool, new_map
from vidup_ingest.tus.protocol import UploadInfo
from vidup_ingest.tus.s3store import MIN_PART_SIZE, S3Storage
from vidup_ingest.tus.storage import ORPHAN_AGE, AlreadyWhole, Fence, LocalStorage, Storage

KIB = 1 << 10
MIB = 1 << 20


@dataclass
class Backend:
    kind: str
    store: Storage
    blobs: Blobs

    def data(self, upload_id: str) -> bytes | None:
        return self.blobs.read_bytes(upload_relpath(upload_id))

    def stored_keys(self) -> set[str]:
        return {key for key, _ in self.blobs.keys("uploads/")}

    def multipart_uploads(self) -> list[str]:
        assert isinstance(self.blobs, S3Blobs)
        listed = self.blobs.client.list_multipart_uploads(Bucket=self.blobs.bucket, Prefix=self.blobs.prefix)
        return [u["Key"] for u in listed.get("Uploads", [])]


def _s3_backend(request: pytest.FixtureRequest) -> Backend:
    server: S3Server = request.getfixturevalue("s3_server")
    plain = server.blobs()
    blobs = S3Blobs(plain.client, plain.bucket, prefix=f"tus-{uuid.uuid4().hex[:8]}/")
    return Backend("s3", S3Storage(blobs, part_size=MIN_PART_SIZE), blobs)


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        return Backend("file", LocalStorage(tmp_path / "root"), FileBlobs(tmp_path / "root"))
    return _s3_backend(request)


@pytest.fixture
def s3(request: pytest.FixtureRequest) -> Backend:
    return _s3_backend(request)


def new_upload(store: Storage, length: int | None, concat: str = "") -> UploadInfo:
    now = time.time()
    info = UploadInfo(id=uuid.uuid4().hex, tenant="acme", length=length, created_at=now,
                      expires_at=now + 3600, concat=concat)
    store.create(info)
    return info


def append(store: Storage, upload_id: str, data: bytes, chunk: int, commit: bool = True) -> UploadInfo:
    """One writer session (one PATCH): write ``data`` in ``chunk``-sized writes, commit at the end."""
    info = store.load(upload_id)
    assert info is not None
    writer = store.open_writer(info)
    try:
        for i in range(0, len(data), chunk):
            writer.write(memoryview(data)[i:i + chunk])
        if commit:
            writer.commit(info.offset + len(data), time.time() + 3600)
    finally:
        writer.close()
    loaded = store.load(upload_id)
    assert loaded is not None
    return loaded


def finish(store: Storage, upload_id: str) -> UploadInfo:
    """What the protocol does when an upload's offset reaches its length."""
    info = store.load(upload_id)
    assert info is not None and info.complete
    store.persist_data(upload_id)
    info = info.with_(completed_at=time.time())
    store.save(info)
    return info


def upload(store: Storage, data: bytes, chunk: int, patch: int, concat: str = "") -> UploadInfo:
    info = new_upload(store, len(data), concat)
    for start in range(0, len(data), patch):
        append(store, info.id, data[start:start + patch], chunk)
    return finish(store, info.id)


def held_patch(store: S3Storage, upload_id: str, fence: Fence, data: bytes) -> int:
    """One PATCH as the protocol makes it, under a hold of the upload's lock (``fence``): load,
    write, commit the end. Returns the offset it started from."""
    info = store.load(upload_id, fence)
    assert info is not None
    writer = store.open_writer(info, fence)
    try:
        writer.write(data)
        writer.commit(info.offset + len(data), time.time() + 3600)
    finally:
        writer.close()
    return info.offset


def digest(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("patch", [100 * KIB, 1 * MIB, 6 * MIB, 13 * MIB])
def test_bytes_survive_sessions_and_commits_whatever_the_chunk(backend: Backend, patch: int) -> None:
    size = 12 * MIB + 12_345 if patch > 100 * KIB else 6 * MIB + 7
    data = os.urandom(size)
    info = new_upload(backend.store, size)
    for start in range(0, size, patch):
        info = append(backend.store, info.id, data[start:start + patch], chunk=64 * KIB)
        assert info.offset == min(size, start + patch)
    info = finish(backend.store, info.id)
    assert digest(backend.data(info.id)) == digest(data)
    loaded = backend.store.load(info.id)
    assert loaded is not None and loaded.offset == size and loaded.completed_at is not None
    if backend.kind == "s3":  # the state and every pending object are retired at completion
        assert backend.stored_keys() == {f"uploads/{info.id}", f"uploads/{info.id}.info"}
        assert backend.multipart_uploads() == []


def test_one_big_write_spans_parts_within_one_commit(backend: Backend) -> None:
    data = os.urandom(17 * MIB + 3)
    info = upload(backend.store, data, chunk=len(data), patch=len(data))
    assert digest(backend.data(info.id)) == digest(data)


def test_uncommitted_bytes_are_discarded_on_reopen(backend: Backend) -> None:
    first, lost, second = os.urandom(3 * MIB), os.urandom(9 * MIB), os.urandom(4 * MIB + 1)
    info = new_upload(backend.store, len(first) + len(second))
    append(backend.store, info.id, first, chunk=256 * KIB)
    # A session that crashes: a part (the pending 3 MiB plus new bytes) goes up, nothing commits.
    info = append(backend.store, info.id, lost, chunk=1 * MIB, commit=False)
    assert info.offset == len(first)
    append(backend.store, info.id, second, chunk=1 * MIB)
    finish(backend.store, info.id)
    assert digest(backend.data(info.id)) == digest(first + second)


def test_a_rolled_back_patch_never_counts(backend: Backend) -> None:
    """The protocol's roll-back (save(original) + truncate(original)) after a body that committed
    on the way (an overflowing chunked body) restores the upload exactly."""
    head, tail = os.urandom(2 * MIB), os.urandom(7 * MIB)
    info = new_upload(backend.store, len(head) + len(tail))
    original = append(backend.store, info.id, head, chunk=512 * KIB)
    writer = backend.store.open_writer(original)
    try:
        junk = os.urandom(6 * MIB)  # fills a part with the pending 2 MiB, then commits again
        writer.write(junk[:4 * MIB])
        writer.commit(original.offset + 4 * MIB, time.time() + 3600)
        writer.write(junk[4 * MIB:])
        writer.commit(original.offset + 6 * MIB, time.time() + 3600)
    finally:
        writer.close()
    backend.store.save(original)
    backend.store.truncate(original)
    loaded = backend.store.load(info.id)
    assert loaded is not None and loaded.offset == original.offset
    append(backend.store, info.id, tail, chunk=1 * MIB)
    finish(backend.store, info.id)
    assert digest(backend.data(info.id)) == digest(head + tail)


def test_a_checksum_failure_leaves_the_offset(backend: Backend) -> None:
    """A checksummed body commits nothing until verified: its bytes (parts included) never count."""
    head, tail = os.urandom(1 * MIB), os.urandom(1 * MIB)
    info = new_upload(backend.store, len(head) + len(tail))
    original = append(backend.store, info.id, head, chunk=512 * KIB)
    append(backend.store, info.id, os.urandom(11 * MIB), chunk=1 * MIB, commit=False)
    backend.store.save(original)
    backend.store.truncate(original)
    append(backend.store, info.id, tail, chunk=1 * MIB)
    finish(backend.store, info.id)
    assert digest(backend.data(info.id)) == digest(head + tail)


@pytest.mark.parametrize("size", [300 * KIB, 11 * MIB + 5])
def test_persist_data_is_idempotent(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    info = new_upload(backend.store, size)
    append(backend.store, info.id, data, chunk=1 * MIB)
    backend.store.persist_data(info.id)
    # A crash before the info said so: the retry (through load, as the protocol does) finds the
    # upload complete and persists again.
    loaded = backend.store.load(info.id)
    assert loaded is not None and loaded.complete and loaded.completed_at is None
    backend.store.persist_data(info.id)
    finish(backend.store, info.id)
    backend.store.persist_data(info.id)  # and once more after the state is retired
    assert digest(backend.data(info.id)) == digest(data)
    if backend.kind == "s3":
        assert backend.multipart_uploads() == []


def test_zero_length_upload(backend: Backend) -> None:
    info = new_upload(backend.store, 0)
    finish(backend.store, info.id)
    assert backend.data(info.id) == b""
    if backend.kind == "s3":
        assert backend.multipart_uploads() == []
        assert backend.stored_keys() == {f"uploads/{info.id}", f"uploads/{info.id}.info"}


@pytest.mark.parametrize(("sizes", "copies", "streamed"), [
    pytest.param([6 * MIB, 7 * MIB + 1, 1 * MIB], 3, 0, id="copied"),
    # Parts of 5 MiB here: 100 KiB and 3 MiB are streamed, 1.9 MiB of the last tops the buffer up
    # to a part, and the rest of the last is copied as the (small) last part.
    pytest.param([100 * KIB, 3 * MIB, 2 * MIB + 5], 1, 3, id="small-streamed"),
    # 1 MiB + 4 MiB of the 12 streamed, its other 8 copied; 300 KiB + 4.7 MiB of the 6 streamed,
    # its last 1.3 MiB + 3.7 MiB of the 4 streamed, the rest of the 4 copied.
    pytest.param([1 * MIB, 12 * MIB, 0, 300 * KIB, 6 * MIB, 4 * MIB], 2, 6, id="mixed"),
    pytest.param([0, 0], 0, 0, id="empty"),
    pytest.param([7 * MIB], 1, 0, id="one"),
])
def test_concatenation_is_byte_exact(backend: Backend, sizes: list[int], copies: int, streamed: int) -> None:
    datas = [os.urandom(n) for n in sizes]
    parts = [upload(backend.store, d, chunk=1 * MIB, patch=8 * MIB, concat="partial") for d in datas]
    total = sum(sizes)
    now = time.time()
    final = UploadInfo(id=uuid.uuid4().hex, tenant="acme", length=total, offset=total, created_at=now,
                       expires_at=now + 3600, concat="final")
    calls: list[str] = []
    if isinstance(backend.blobs, S3Blobs):  # count what goes to the store (botocore's own events)
        events = backend.blobs.client.meta.events
        events.register("before-call.s3.UploadPartCopy", lambda **kw: calls.append("copy"))
        events.register("before-call.s3.GetObject", lambda **kw: calls.append("get"))
    backend.store.concatenate(final, parts)
    if isinstance(backend.blobs, S3Blobs):
        assert (calls.count("copy"), calls.count("get")) == (copies, streamed)
    loaded = backend.store.load(final.id)
    assert loaded is not None and loaded.complete
    finish(backend.store, final.id)
    assert digest(backend.data(final.id)) == digest(b"".join(datas))
    if backend.kind == "s3":
        assert backend.multipart_uploads() == []


def test_delete_and_discard_leave_nothing(backend: Backend) -> None:
    store = backend.store
    deleted = new_upload(store, 20 * MIB)
    append(store, deleted.id, os.urandom(7 * MIB), chunk=1 * MIB)  # a part and a pending object
    append(store, deleted.id, os.urandom(6 * MIB), chunk=1 * MIB, commit=False)  # an unrecorded part
    expired = new_upload(store, 20 * MIB)
    append(store, expired.id, os.urandom(6 * MIB + 3), chunk=1 * MIB)
    if backend.kind == "s3":
        assert len(backend.multipart_uploads()) == 2
    store.delete(deleted.id)
    assert store.load(deleted.id) is None
    store.discard_data(expired.id)
    tombstone = store.load(expired.id)
    assert tombstone is not None  # the info stays for the 410
    store.save(tombstone.with_(extra={"gone": time.time()}))
    assert set(store.ids()) == {expired.id}
    if backend.kind == "s3":
        assert backend.multipart_uploads() == []
        assert backend.stored_keys() == {f"uploads/{expired.id}.info"}
    store.delete(expired.id)
    assert list(store.ids()) == []
    assert backend.stored_keys() <= {f"uploads/{expired.id}.offset"}  # the file store's record may stay


def test_collect_orphans_takes_only_old_leftovers_no_record_names(backend: Backend, tmp_path: Path) -> None:
    """What a crash leaves between a write and the record naming it (S3: a pending object, a
    multipart upload of an upload with a state, one of an upload never recorded; files: an info
    temp file) is collected once older than ORPHAN_AGE, and nothing a record names is touched."""
    store = backend.store
    data = os.urandom(7 * MIB)
    info = new_upload(store, 20 * MIB)
    append(store, info.id, data, chunk=1 * MIB)  # a part and a pending object, both recorded
    idle = new_upload(store, 20 * MIB)  # S3: a multipart upload only its info names (no commit yet)
    before = backend.stored_keys()
    stray = uuid.uuid4().hex
    if isinstance(backend.blobs, S3Blobs):
        client, bucket = backend.blobs.client, backend.blobs.bucket
        client.put_object(Bucket=bucket, Key=backend.blobs.key(f"uploads/{info.id}.pending.0ddba11"), Body=b"x")
        for upload_id in (info.id, stray):
            client.create_multipart_upload(Bucket=bucket, Key=backend.blobs.key(f"uploads/{upload_id}"))
        assert len(backend.multipart_uploads()) == 4
        expected = 3
    else:
        assert isinstance(backend.blobs, FileBlobs)
        leftover = tmp_path / "root" / "uploads" / f"{info.id}.info.4242.99.tmp"
        leftover.write_bytes(b"{}")
        expected = 1
    assert store.collect_orphans(time.time()) == 0  # young: maybe a write about to be recorded
    assert store.collect_orphans(time.time() + ORPHAN_AGE + 60) == expected
    assert backend.stored_keys() == before
    if backend.kind == "s3":
        assert sorted(backend.multipart_uploads()) == sorted(
            backend.blobs.key(f"uploads/{upload_id}") for upload_id in (info.id, idle.id))
    rest = os.urandom(13 * MIB)
    append(store, info.id, rest, chunk=1 * MIB)
    finish(store, info.id)
    assert digest(backend.data(info.id)) == digest(data + rest)
    whole = os.urandom(20 * MIB)  # the idle upload's multipart upload still takes its parts
    append(store, idle.id, whole, chunk=4 * MIB)
    finish(store, idle.id)
    assert digest(backend.data(idle.id)) == digest(whole)


def test_ids_lists_uploads_and_load_misses(backend: Backend) -> None:
    made = {new_upload(backend.store, n).id for n in (0, 10, None)}
    assert set(backend.store.ids()) == made
    assert backend.store.load(uuid.uuid4().hex) is None


def test_s3_commits_cost_only_the_new_bytes(s3: Backend) -> None:
    """Small PATCHes each add one pending object (no re-upload of the earlier ones), merged when
    they reach a part; pending objects are capped so the state stays small."""
    store = s3.store
    info = new_upload(store, 40 * MIB)
    chunks = [os.urandom(40 * KIB) for _ in range(40)]
    for c in chunks:
        append(store, info.id, c, chunk=len(c))
    pending = [k for k in s3.stored_keys() if ".pending." in k]
    assert 1 <= len(pending) <= 32
    assert sum(s for k, s in s3.blobs.keys("uploads/") if ".pending." in k) == 40 * 40 * KIB
    rest = os.urandom(40 * MIB - 40 * 40 * KIB)
    append(store, info.id, rest, chunk=1 * MIB)
    finish(store, info.id)
    assert digest(s3.data(info.id)) == digest(b"".join(chunks) + rest)


def test_s3_a_checkpoint_records_the_stored_parts_and_waits_for_none(s3: Backend, s3_server: S3Server) -> None:
    """A checkpoint in mid-body never waits for a part in flight (the store is frozen here: any
    request would hang) and records nothing new then; once no part is in flight it is a commit
    (every byte received counts), and the upload still completes byte-exact."""
    store = s3.store
    data = os.urandom(2 * MIN_PART_SIZE + 2 * MIB + 3)
    info = new_upload(store, len(data))
    writer = store.open_writer(info)

    def recorded() -> int:
        fresh = S3Storage(s3.blobs, part_size=MIN_PART_SIZE).load(info.id)  # the bucket's state, no memory
        assert fresh is not None
        return fresh.offset

    try:
        writer.write(data[:MIN_PART_SIZE])
        writer.commit(MIN_PART_SIZE, time.time() + 3600)
        os.kill(s3_server.process.pid, signal.SIGSTOP)
        try:
            writer.write(data[MIN_PART_SIZE:2 * MIN_PART_SIZE + MIB])  # part 2 goes up, and hangs
            started = time.monotonic()
            writer.checkpoint(2 * MIN_PART_SIZE + MIB, time.time() + 3600)
            assert time.monotonic() - started < 1
        finally:
            os.kill(s3_server.process.pid, signal.SIGCONT)
        assert recorded() == MIN_PART_SIZE
        deadline = time.monotonic() + 30
        while recorded() == MIN_PART_SIZE:
            assert time.monotonic() < deadline, "part 2 never recorded by a checkpoint"
            time.sleep(0.05)
            writer.checkpoint(2 * MIN_PART_SIZE + MIB, time.time() + 3600)
        assert recorded() == 2 * MIN_PART_SIZE + MIB
        writer.write(data[2 * MIN_PART_SIZE + MIB:])
        writer.commit(len(data), time.time() + 3600)
    finally:
        writer.close()
    assert recorded() == len(data)
    finish(store, info.id)
    assert digest(s3.data(info.id)) == digest(data)


def test_s3_a_returning_holder_reads_nothing_and_any_other_hold_reads_again(s3: Backend) -> None:
    """PATCH after PATCH under this process's own lock holds costs no GET of the info or the state;
    a hold by anyone else in between (another replica here: a second store on the same bucket), or
    no known previous holder, makes the next load read the bucket, and the bytes stay exact."""
    store = s3.store
    assert isinstance(store, S3Storage) and isinstance(s3.blobs, S3Blobs)
    gets: list[str] = []
    records = (".info", ".state")  # pending bytes are read back when they join a part, as ever
    s3.blobs.client.meta.events.register(
        "before-call.s3.GetObject",
        lambda params, **_: gets.append(params["url_path"]) if params["url_path"].endswith(records) else None)

    def patch(on: S3Storage, fence: Fence, data: bytes) -> int:
        return held_patch(on, upload_id, fence, data)

    info = new_upload(store, 20 * MIB)
    upload_id = info.id
    chunks = [os.urandom(n) for n in (1 * MIB, 6 * MIB, 2 * MIB, 3 * MIB, 8 * MIB)]
    assert patch(store, Fence("", "t1"), chunks[0]) == 0
    assert len(gets) == 2  # info and state: nobody vouched for anything
    gets.clear()
    assert patch(store, Fence("t1", "t2"), chunks[1]) == 1 * MIB  # crosses a part: the mpu is recorded too
    assert patch(store, Fence("t2", "t3"), chunks[2]) == 7 * MIB
    assert gets == []
    replica = S3Storage(s3.blobs, part_size=MIN_PART_SIZE)
    assert patch(replica, Fence("t3", "r1"), chunks[3]) == 9 * MIB
    gets.clear()
    loaded = store.load(upload_id, Fence("", "t4"))  # the record of holders was lost: read again
    assert loaded is not None and loaded.offset == 12 * MIB and len(gets) == 2
    gets.clear()
    assert patch(store, Fence("r1", "t5"), chunks[4]) == 12 * MIB  # what the replica committed
    assert len(gets) == 2
    store.persist_data(upload_id, Fence("r1", "t5"))  # the last byte's hold completes, as the protocol does
    assert digest(s3.data(upload_id)) == digest(b"".join(chunks))


def test_s3_an_upload_in_one_patch_costs_its_parts_and_its_info_and_reads_nothing(s3: Backend) -> None:
    """The requests of one upload as the protocol makes them (created under its lock, one PATCH
    under the next hold, completion, the saves before and after the handover): the multipart
    upload starts with the upload, the last bytes go up as its last part (no pending object to
    copy), the commit of the last byte leaves its record to the completion (no state to write,
    then delete), and nothing is read back."""
    store = s3.store
    assert isinstance(store, S3Storage) and isinstance(s3.blobs, S3Blobs)
    calls: list[str] = []
    s3.blobs.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    data = os.urandom(12 * MIB + 7)
    now = time.time()
    info = UploadInfo(id=uuid.uuid4().hex, tenant="acme", length=len(data), created_at=now, expires_at=now + 3600)
    store.create(info, Fence("", "t1"))
    assert calls == ["CreateMultipartUpload", "PutObject"]  # then its info, which names it: no state yet
    calls.clear()
    assert held_patch(store, info.id, Fence("t1", "t2"), data) == 0
    assert s3.stored_keys() == {f"uploads/{info.id}.info"}  # no state
    calls.remove("ListObjectsV2")  # that look
    store.persist_data(info.id, Fence("t1", "t2"))
    done = info.with_(offset=len(data), completed_at=time.time())
    store.save(done)
    store.save(done.with_(handed_over=True))
    # The parts, the object, the finished info before and after the handover.
    assert sorted(calls) == sorted(["UploadPart"] * 3 + ["CompleteMultipartUpload", "PutObject", "PutObject"])
    assert digest(s3.data(info.id)) == digest(data)
    assert s3.stored_keys() == {f"uploads/{info.id}", f"uploads/{info.id}.info"}
    assert s3.multipart_uploads() == []
    calls.clear()
    assert store.peek(info.id) == done.with_(handed_over=True) and calls == ["GetObject"]


@pytest.mark.parametrize("resume", ["one-body", "small-patches"])
def test_s3_a_completion_a_crash_cut_short_is_finished_by_the_resuming_writer(s3: Backend, resume: str) -> None:
    """The window the unrecorded last commit opens: the object is made, then the process dies
    before the finished info is saved, so the next process reads the older record (here the
    first one: offset 0) and the client sends the bytes again. The first part it tries meets the
    completed multipart upload: the writer finds the object whole and says so (AlreadyWhole),
    the completion under that hold keeps the object as it is, and nothing is left behind.
    ``small-patches``: the resumed bytes come as 1 MiB PATCHes, each recorded with its pending
    object, until one fills a part."""
    store = s3.store
    assert isinstance(store, S3Storage)
    data = os.urandom(12 * MIB + 7)
    now = time.time()
    info = UploadInfo(id=uuid.uuid4().hex, tenant="acme", length=len(data), created_at=now, expires_at=now + 3600)
    store.create(info, Fence("", "t1"))
    held_patch(store, info.id, Fence("t1", "t2"), data)
    store.persist_data(info.id, Fence("t1", "t2"))
    assert s3.multipart_uploads() == [] and digest(s3.data(info.id)) == digest(data)

    replica = S3Storage(s3.blobs, part_size=MIN_PART_SIZE)  # the next process: no memory of the upload
    step = len(data) if resume == "one-body" else 1 * MIB
    sessions = 0
    for start in range(0, len(data), step):
        fence = Fence(f"r{sessions}" if sessions else "", f"r{sessions + 1}")
        sessions += 1
        try:
            assert held_patch(replica, info.id, fence, data[start:start + step]) == start
        except AlreadyWhole:
            break
    else:
        pytest.fail("no writer found the object whole")
    assert sessions == (1 if resume == "one-body" else 5)  # the fifth MiB fills the first 5 MiB part
    replica.persist_data(info.id, fence)
    replica.save(info.with_(offset=len(data), completed_at=time.time()))
    assert digest(s3.data(info.id)) == digest(data)
    assert s3.stored_keys() == {f"uploads/{info.id}", f"uploads/{info.id}.info"}, "no state, no pending object"
    assert s3.multipart_uploads() == []


def test_s3_storage_errors_are_os_errors(s3: Backend) -> None:
    """A store that refuses (here: bad credentials) is an OSError, which the app answers 503."""
    assert isinstance(s3.blobs, S3Blobs)
    settings = Settings(storage="s3", s3_endpoint=s3.blobs.client.meta.endpoint_url, s3_bucket=s3.blobs.bucket)
    client = make_client(settings, boto3.session.Session(aws_access_key_id="nobody", aws_secret_access_key="x" * 40))
    store = S3Storage(S3Blobs(client, s3.blobs.bucket, s3.blobs.prefix))
    with pytest.raises(OSError):
        store.create(UploadInfo(id=uuid.uuid4().hex, tenant="acme", length=1))


def test_the_part_size_knob_refuses_parts_s3_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDUP_INGEST_S3_PART_SIZE", str(4 * MIB))
    with pytest.raises(ValueError, match="VIDUP_INGEST_S3_PART_SIZE"):
        IngestConfig.from_env()
    monkeypatch.setenv("VIDUP_INGEST_S3_PART_SIZE", str(16 * MIB))
    assert IngestConfig.from_env().s3_part_size == 16 * MIB


def test_parts_grow_so_the_largest_upload_fits_in_10000(s3: Backend) -> None:
    assert isinstance(s3.blobs, S3Blobs)
    store = S3Storage(s3.blobs, part_size=MIN_PART_SIZE, max_size=200 << 30)
    assert store.commit_part_size * 9_900 >= 200 << 30 and store.part_size >= store.commit_part_size


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _huge_pages() -> int:
    """Bytes of this process's anonymous memory in transparent huge pages."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no AnonHugePages in /proc/self/smaps_rollup")


def test_a_part_map_takes_huge_pages_past_its_first_two_mib_and_a_trickle_stays_small() -> None:
    """A full 8 MiB part faults its pages past ``SMALL_PAGES`` in as 2 MiB pages (a handful of
    faults instead of 1,536) where the kernel offers transparent huge pages on advice, as this
    project's machines do; a few kilobytes cost no huge page."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    assert "[never]" not in thp, f"this machine's kernel gives no transparent huge pages: {thp}"
    size = 8 * MIB
    huge = _huge_pages()
    trickle = new_map(size)
    trickle[:4096] = b"\x01" * 4096
    assert _huge_pages() == huge
    full, data = new_map(size), b"\xff" * size
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    full[:] = data
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    assert _huge_pages() - huge == size - SMALL_PAGES
    assert faults < SMALL_PAGES // 4096 + 256, faults  # the small pages, and other threads' faults


def test_the_map_pool_keeps_what_a_burst_used_then_gives_it_back() -> None:
    """Maps given back are taken again (their pages need no fresh faults) while the burst lasts;
    ``decay`` after their last use all but ``keep`` leave the process, with nobody touching the
    pool again (its own timer), and the ones kept stay."""
    size = 8 * MIB
    pool = MapPool(keep=2, decay=0.5)
    maps = [pool.take(size) for _ in range(6)]
    for m in maps:
        m.write(b"\xff" * size)  # every page resident
    for m in maps:
        pool.give(m)
    assert pool.idle(size) == 6
    again = [pool.take(size) for _ in range(6)]
    assert {id(m) for m in again} == {id(m) for m in maps}
    for m in again:
        pool.give(m)
    del maps, again, m
    resident = _rss()
    deadline = time.monotonic() + 5
    while pool.idle(size) > 2:
        assert time.monotonic() < deadline, "the pool never shrank"
        time.sleep(0.05)
    assert resident - _rss() >= 4 * size * 9 // 10  # unmapped, not only forgotten
    time.sleep(1)
    assert pool.idle(size) == 2

