"""Where upload bytes and their ``UploadInfo`` live, behind a small interface.

Protocol code only sees :class:`Storage` and :class:`UploadWriter`; ``LocalStorage`` keeps
``uploads/<id>`` (the data) and ``uploads/<id>.info`` (JSON) on the shared volume. An S3-compatible
store would implement the same two classes with multipart uploads (a commit = a completed part).

Durability: ``UploadWriter.sync`` makes everything written so far survive a crash (fdatasync
unless the fsync policy is "never"); callers commit an offset in the info only after a sync, so
the offset a client hears is always stored, and anything past it in the file is discarded by
``open_writer`` when the upload is resumed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from vidup.storage_layout import UPLOADS, resolve, upload_relpath
from vidup_ingest.headers import is_upload_id
from vidup_ingest.protocol import UploadInfo

INFO_SUFFIX = ".info"


class UploadWriter(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...
    def sync(self) -> None: ...
    def position(self) -> int: ...
    def close(self) -> None: ...


class Storage(Protocol):
    def create(self, info: UploadInfo) -> None: ...
    def load(self, upload_id: str) -> UploadInfo | None: ...
    def save(self, info: UploadInfo) -> None: ...
    def open_writer(self, info: UploadInfo) -> UploadWriter: ...
    def truncate(self, info: UploadInfo) -> None: ...
    def concatenate(self, final: UploadInfo, parts: list[UploadInfo]) -> None: ...
    def delete(self, upload_id: str) -> None: ...
    def discard_data(self, upload_id: str) -> None: ...
    def ids(self) -> Iterator[str]: ...
    def relpath(self, upload_id: str) -> str: ...


class LocalWriter:
    """Appends to the data file at the committed offset with plain ``os.write`` calls."""

    def __init__(self, path: Path, offset: int, fsync: bool) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        # Cut off whatever an interrupted request left past the committed offset.
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        self._pos = offset
        self._fsync = fsync

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self._pos += n

    def sync(self) -> None:
        if self._fsync:
            os.fdatasync(self._fd)

    def position(self) -> int:
        return self._pos

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class LocalStorage:
    """Uploads as files in ``<storage_dir>/uploads`` (the shared volume in Kubernetes)."""

    def __init__(self, storage_dir: Path, fsync: bool = True) -> None:
        self.root = storage_dir
        self.fsync = fsync
        self.dir = resolve(storage_dir, UPLOADS)
        self.dir.mkdir(parents=True, exist_ok=True)

    def relpath(self, upload_id: str) -> str:
        return upload_relpath(upload_id)

    def _data(self, upload_id: str) -> Path:
        if not is_upload_id(upload_id):
            raise ValueError(f"bad upload id {upload_id!r}")
        return resolve(self.root, upload_relpath(upload_id))

    def _info(self, upload_id: str) -> Path:
        data = self._data(upload_id)
        return data.with_name(data.name + INFO_SUFFIX)

    def create(self, info: UploadInfo) -> None:
        """An empty data file, then the info: an upload exists once its info does."""
        fd = os.open(self._data(info.id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        os.close(fd)
        self.save(info)

    def load(self, upload_id: str) -> UploadInfo | None:
        try:
            raw = self._info(upload_id).read_bytes()
        except FileNotFoundError:
            return None
        return UploadInfo.from_json(json.loads(raw))

    def save(self, info: UploadInfo) -> None:
        """Atomically replace the info (write a temp file, fsync it, rename over)."""
        path = self._info(info.id)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(info)}.tmp")
        payload = json.dumps(info.to_json(), separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, payload)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if self.fsync:
            self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def open_writer(self, info: UploadInfo) -> LocalWriter:
        return LocalWriter(self._data(info.id), info.offset, self.fsync)

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
            if self.fsync:
                os.fdatasync(fd_out)
        finally:
            os.close(fd_out)
        self.save(final)

    def delete(self, upload_id: str) -> None:
        """Info first, so a half-deleted upload is simply gone rather than corrupt."""
        for path in (self._info(upload_id), self._data(upload_id)):
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
