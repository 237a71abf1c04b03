"""Where upload bytes and their ``UploadInfo`` live, behind a small interface.

Protocol code only sees :class:`Storage` and :class:`UploadWriter`; ``LocalStorage`` keeps, on
the shared volume, ``uploads/<id>`` (the data), ``uploads/<id>.info`` (the JSON that changes only
at creation, completion and expiry) and ``uploads/<id>.offset`` (16 bytes: the committed offset and
the expiry it moved, rewritten in place on every commit). ``VIDUP_STORAGE=s3`` uses
:class:`~vidup_ingest.tus.s3store.S3Storage` instead: the same two interfaces over a multipart
upload (a commit = a PUT of the upload's state after its bytes are in the store).

Commits are what make bytes count: ``UploadWriter.commit`` records the offset after the bytes are
written, so the offset a client hears is always in the file, and anything past it is discarded by
``open_writer`` when the upload is resumed. The offset lives in its own record because rewriting
and renaming the JSON on every PATCH cost more than the rest of a small PATCH together; a 16-byte
``pwrite`` sits in one disk sector, so it is never torn.

The fsync policy (``VIDUP_INGEST_FSYNC``) says when bytes must be on the disk, not only in the
page cache (which survives any process crash, not a node crash). It means nothing on S3, where
every commit is already durable in the store.

* ``complete`` (default): at completion. ``persist_data`` fdatasyncs a finished upload before its
  info says so and before its VideoTranscode exists, so a transcode never starts from a source a
  node crash could cut short. Writeback of received bytes is started as they arrive, so that last
  sync waits for little. After a node crash an unfinished upload resumes from what reached the
  disk (``load`` never reports an offset past the data file's end), or, if even its creation was
  lost, answers 404 and the client creates it again.
* ``always``: additionally before every commit (each acknowledged offset survives a node crash;
  costs a disk flush per PATCH).
* ``never``: no syncs at all, tusd's policy.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from vidup.storage.layout import UPLOADS, resolve, upload_relpath
from vidup_ingest.config import FsyncPolicy
from vidup_ingest.tus import writeback
from vidup_ingest.tus.headers import is_upload_id
from vidup_ingest.tus.protocol import UploadInfo

INFO_SUFFIX = ".info"
TMP_SUFFIX = ".tmp"

#: Age past which a store's unnamed leftovers are a crash's, not a write about to be recorded.
ORPHAN_AGE = 24 * 3600.0
OFFSET_SUFFIX = ".offset"
#: The offset record: committed offset (u64) and the expiry time it set (f64), little-endian.
_OFFSET_RECORD = struct.Struct("<Qd")


@dataclass(frozen=True)
class Fence:
    """What the holder of an upload's lock knows of its lock's history: its own ``token`` and the
    token of the holder before it (``previous``; "" when unknown). A store may trust what it
    learnt under ``previous`` only if that was its own hold: nobody else can have changed the
    upload in between (see vidup_ingest.tus.locks)."""

    previous: str
    token: str


class AlreadyWhole(Exception):
    """A writer found its upload's bytes already whole in the store: a completion that a crash
    cut short before the upload was recorded as finished (the S3 store makes the finished object
    before anything records it). The caller finishes the upload (``persist_data`` under the same
    hold, then the finished info) instead of taking the rest of the body."""


class UploadWriter(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...
    def commit(self, offset: int, expires_at: float) -> None:
        """Make every byte written so far count: durable per the fsync policy, then recorded.

        The commit of an upload's last byte under a lock hold may leave its record to the
        ``persist_data`` of the same hold, which the protocol calls right after (on S3 that saves
        a state PUT and its deletion per upload): until then a crash loses only bytes the client
        has not heard counted. Any call of a writer may raise :class:`AlreadyWhole`."""
        ...

    def checkpoint(self, offset: int, expires_at: float) -> None:
        """Record progress in mid-body, so a crash keeps what arrived: like ``commit``, but a
        store that has bytes still on their way may record less than ``offset`` (never less than
        it recorded before) rather than wait for them."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FileWriter(Protocol):
    """A writer backed by a file descriptor, which a zero-copy source can write into directly."""

    def write_via(self, move: Callable[[int, int], int], count: int) -> int:
        """``move(fd, count)`` puts up to ``count`` bytes into the file at its position and
        returns how many; they count as written."""
        ...


@runtime_checkable
class LendingWriter(Protocol):
    """A writer that lends the memory its next bytes go to, so a body is read straight into it
    instead of through a buffer of the reader's (one copy fewer; the S3 store's part buffer)."""

    def window(self, count: int) -> memoryview:
        """Memory for up to ``count`` next bytes (at least one); ``wrote`` counts what was put."""
        ...

    def wrote(self, count: int) -> None: ...


class Storage(Protocol):
    """An upload store. ``fence``: the caller holds the upload's lock (see :class:`Fence`), so a
    store may keep what it writes or reads for that hold's successors. ``peek`` reads only the
    info as last saved, whose offset may lag: enough to check an owner before taking the lock.
    ``collect_orphans`` deletes what a crash left that no record names, once older than
    :data:`ORPHAN_AGE` (nobody can still be about to record it), and says how many."""

    def create(self, info: UploadInfo, fence: Fence | None = None) -> None: ...
    def load(self, upload_id: str, fence: Fence | None = None) -> UploadInfo | None: ...
    def peek(self, upload_id: str) -> UploadInfo | None: ...
    def save(self, info: UploadInfo) -> None: ...
    def persist_data(self, upload_id: str, fence: Fence | None = None) -> None: ...
    def open_writer(self, info: UploadInfo, fence: Fence | None = None) -> UploadWriter: ...
    def truncate(self, info: UploadInfo) -> None: ...
    def concatenate(self, final: UploadInfo, parts: list[UploadInfo]) -> None: ...
    def delete(self, upload_id: str) -> None: ...
    def discard_data(self, upload_id: str) -> None: ...
    def ids(self) -> Iterator[str]: ...
    def collect_orphans(self, now: float) -> int: ...
    def relpath(self, upload_id: str) -> str: ...


def _write_offset_record(fd: int, offset: int, expires_at: float, sync: bool) -> None:
    os.pwrite(fd, _OFFSET_RECORD.pack(offset, expires_at), 0)
    if sync:
        os.fdatasync(fd)


class LocalWriter:
    """Appends to the data file at the committed offset with plain ``os.write`` calls.

    Unless the policy is ``never``, received bytes stream to the disk as they arrive and leave the
    page cache once written (:mod:`~vidup_ingest.tus.writeback`): an upload keeps at most a window
    of a few tens of MiB cached, and the disk works while the network does. Under ``complete`` no
    commit waits for the disk (the one ``fdatasync`` comes at completion, in ``persist_data``, and
    finds little left to write); under ``always`` every commit does.
    """

    def __init__(self, path: Path, offset_path: Path, offset: int, fsync: FsyncPolicy) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            # Cut off whatever an interrupted request left past the committed offset.
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
            self._offset_fd = os.open(offset_path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError:
            os.close(self._fd)
            raise
        self._pos = offset
        self._fsync = fsync
        self._writeback = writeback.StreamingWriteback(self._fd, offset) if fsync != "never" else None

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self._advance(n)

    def write_via(self, move: Callable[[int, int], int], count: int) -> int:
        n = move(self._fd, count)
        self._advance(n)
        return n

    def _advance(self, n: int) -> None:
        self._pos += n
        if self._writeback is not None:
            self._writeback.advance(self._pos)

    def commit(self, offset: int, expires_at: float) -> None:
        always = self._fsync == "always"
        if always:
            os.fdatasync(self._fd)
            assert self._writeback is not None
            self._writeback.synced(self._pos)
        _write_offset_record(self._offset_fd, offset, expires_at, always)

    checkpoint = commit  # nothing is ever on its way: every written byte is in the file

    def close(self) -> None:
        for fd in (self._fd, self._offset_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class LocalStorage:
    """Uploads as files in ``<storage_dir>/uploads`` (the shared volume in Kubernetes)."""

    def __init__(self, storage_dir: Path, fsync: FsyncPolicy = "complete") -> None:
        self.root = storage_dir
        self.fsync = fsync
        self.dir = resolve(storage_dir, UPLOADS)
        self.dir.mkdir(parents=True, exist_ok=True)

    def relpath(self, upload_id: str) -> str:
        return upload_relpath(upload_id)

    def _data(self, upload_id: str) -> Path:
        """A validated id is a bare hex name, so joining it to the once-resolved directory cannot
        escape it (resolving per call cost a realpath walk on every request)."""
        if not is_upload_id(upload_id):
            raise ValueError(f"bad upload id {upload_id!r}")
        return self.dir / upload_id

    def _info(self, upload_id: str) -> Path:
        return self._data(upload_id).with_name(upload_id + INFO_SUFFIX)

    def _offset(self, upload_id: str) -> Path:
        return self._data(upload_id).with_name(upload_id + OFFSET_SUFFIX)

    def create(self, info: UploadInfo, fence: Fence | None = None) -> None:
        """An empty data file, then the info: an upload exists once its info does."""
        fd = os.open(self._data(info.id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        os.close(fd)
        self.save(info)

    def peek(self, upload_id: str) -> UploadInfo | None:
        """The info as last saved (its offset may lag the committed one)."""
        try:
            raw = self._info(upload_id).read_bytes()
        except FileNotFoundError:
            return None
        return UploadInfo.from_json(json.loads(raw))

    def load(self, upload_id: str, fence: Fence | None = None) -> UploadInfo | None:
        """The info with its committed offset; local reads are cheap, so ``fence`` is not used."""
        info = self.peek(upload_id)
        if info is None:
            return None
        try:
            record = self._offset(upload_id).read_bytes()
        except FileNotFoundError:
            return info
        if len(record) < _OFFSET_RECORD.size:
            return info
        offset, expires_at = _OFFSET_RECORD.unpack_from(record)
        if offset > info.offset and info.completed_at is None:
            # Unsynced commits (not "always") may outrun the data after a node crash: never
            # report bytes the file does not hold.
            with contextlib.suppress(FileNotFoundError):
                offset = min(offset, max(info.offset, os.stat(self._data(upload_id)).st_size))
        return info.with_(offset=offset, expires_at=expires_at)

    def persist_data(self, upload_id: str, fence: Fence | None = None) -> None:
        """Flush an upload's bytes to the disk (before it is recorded as finished)."""
        if self.fsync == "never":
            return
        fd = os.open(self._data(upload_id), os.O_RDONLY)
        try:
            os.fdatasync(fd)
            writeback.drop(fd, 0, os.fstat(fd).st_size)  # clean now; see LocalWriter
        finally:
            os.close(fd)

    def _durable(self, info: UploadInfo) -> bool:
        """Whether saving ``info`` must reach the disk: always under "always"; under "complete"
        only the record of a finished upload (a lost unfinished one is simply uploaded again)."""
        return self.fsync == "always" or (self.fsync == "complete" and info.completed_at is not None)

    def save(self, info: UploadInfo) -> None:
        """The offset record, then the info atomically (write a temp file, fsync it, rename over)."""
        durable = self._durable(info)
        fd = os.open(self._offset(info.id), os.O_RDWR | os.O_CREAT, 0o640)
        try:
            _write_offset_record(fd, info.offset, info.expires_at, durable)
        finally:
            os.close(fd)
        path = self._info(info.id)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(info)}{TMP_SUFFIX}")
        payload = json.dumps(info.to_json(), separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, payload)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def open_writer(self, info: UploadInfo, fence: Fence | None = None) -> LocalWriter:
        return LocalWriter(self._data(info.id), self._offset(info.id), info.offset, self.fsync)

    def truncate(self, info: UploadInfo) -> None:
        """Drop data past the committed offset (a chunk that failed its checksum)."""
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self._data(info.id), info.offset)

    def concatenate(self, final: UploadInfo, parts: list[UploadInfo]) -> None:
        """Write the parts' data, in order, into the final upload's data file, then its info.

        ``copy_file_range`` lets the kernel copy (or reflink) without passing bytes through us.
        """
        fd_out = os.open(self._data(final.id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            for part in parts:
                fd_in = os.open(self._data(part.id), os.O_RDONLY)
                try:
                    remaining = part.offset
                    while remaining > 0:
                        try:
                            n = os.copy_file_range(fd_in, fd_out, min(remaining, 1 << 30))
                        except OSError:
                            n = os.sendfile(fd_out, fd_in, None, min(remaining, 1 << 30))
                        if n == 0:
                            raise OSError(f"partial upload {part.id} is shorter than its offset")
                        remaining -= n
                finally:
                    os.close(fd_in)
            if self.fsync != "never":
                os.fdatasync(fd_out)
        finally:
            os.close(fd_out)
        self.save(final)

    def delete(self, upload_id: str) -> None:
        """Info first, so a half-deleted upload is simply gone rather than corrupt."""
        for path in (self._info(upload_id), self._data(upload_id), self._offset(upload_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def discard_data(self, upload_id: str) -> None:
        """Delete the bytes but keep the info (expiry tombstones)."""
        with contextlib.suppress(FileNotFoundError):
            self._data(upload_id).unlink()

    def ids(self) -> Iterator[str]:
        for entry in os.scandir(self.dir):
            name = entry.name
            if name.endswith(INFO_SUFFIX) and is_upload_id(name[: -len(INFO_SUFFIX)]):
                yield name[: -len(INFO_SUFFIX)]

    def collect_orphans(self, now: float) -> int:
        """Info temp files a crash left between their write and their rename."""
        removed = 0
        for entry in os.scandir(self.dir):
            name = entry.name
            if not (name.endswith(TMP_SUFFIX) and is_upload_id(name.split(".", 1)[0])):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < now - ORPHAN_AGE:
                    os.unlink(entry.path)
                    removed += 1
        return removed
