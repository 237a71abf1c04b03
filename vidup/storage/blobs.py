"""The object interface every component shares: named byte strings ("keys") under one root.

Keys are the relative paths of :mod:`vidup.storage.layout` (``uploads/<id>``,
``outputs/<id>/720p/seg_00001.ts``), so a resource's ``sourcePath`` or ``outputPath`` means the
same thing on the shared volume and in a bucket. Two implementations:

* :class:`FileBlobs`: files under ``VIDUP_STORAGE_DIR`` (the shared volume). Offers
  :meth:`FileBlobs.local_path`, so readers that can use a file directly (FFmpeg, ``send_file``)
  do, and writers keep their atomic renames.
* :class:`vidup.storage.s3.S3Blobs`: objects in an S3-compatible bucket.

Code that stores things asks for behaviour (open a range, upload a file, delete a prefix), never
for a backend; the few places where the backends truly differ in *how* (a multipart upload versus
an appended file) have their own classes behind their own interfaces, like the TUS store.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from vidup.storage.layout import resolve


class BlobNotFound(FileNotFoundError):
    """The key names nothing."""


@dataclass(frozen=True)
class BlobRange:
    """An open byte range of a blob: read ``body`` (``length`` bytes from ``start``); ``size`` is the
    whole blob's; ``etag`` changes whenever the blob does."""

    body: BinaryIO
    start: int
    length: int
    size: int
    etag: str
    modified: float


class Blobs(Protocol):
    #: "file" or "s3", for messages and metrics only: callers never branch on it.
    kind: str

    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` when the store is a filesystem, else None."""
        ...

    def size(self, key: str) -> int | None:
        """The blob's size, or None when it does not exist."""
        ...

    def read_bytes(self, key: str) -> bytes | None:
        """A small blob's content, or None when it does not exist."""
        ...

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> BlobRange:
        """Bytes ``start`` to ``end`` inclusive (the end of the blob when None), streamed.

        Raises :class:`BlobNotFound`, or ``ValueError`` for a range past the end."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    def upload_file(self, key: str, path: Path, content_type: str | None = None) -> None: ...

    def download_file(self, key: str, path: Path) -> None:
        """Copy the blob to a local file (raises :class:`BlobNotFound`)."""
        ...

    def delete(self, key: str) -> None:
        """Remove one blob; a missing one is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every blob whose key starts with ``prefix``; returns how many."""
        ...

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every blob under ``prefix``, in key order."""
        ...


class _Window(io.RawIOBase):
    """A file read only from where it was positioned for ``length`` bytes (a range's body)."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self._left]
        n = self._f.readinto(view)  # type: ignore[attr-defined]
        self._left -= n
        return int(n)

    def close(self) -> None:
        self._f.close()
        super().close()


class FileBlobs:
    """Blobs as files under ``root``: a key is a path relative to it (and never escapes it)."""

    kind = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def local_path(self, key: str) -> Path:
        return resolve(self.root, key)

    def size(self, key: str) -> int | None:
        try:
            st = os.stat(self.local_path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_size

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.local_path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> BlobRange:
        path = self.local_path(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - handed to the caller, who closes it
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None
        st = os.fstat(f.fileno())
        last = st.st_size - 1 if end is None else min(end, st.st_size - 1)
        if start > max(last, 0) or (st.st_size and start > last):
            f.close()
            raise ValueError(f"range {start}-{end} is past the end of {key} ({st.st_size} bytes)")
        f.seek(start)
        etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"
        length = max(last - start + 1, 0)
        body = cast(BinaryIO, io.BufferedReader(_Window(f, length)))
        return BlobRange(body, start, length, st.st_size, etag, st.st_mtime)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Atomically: a temp file renamed over the key."""
        path = self.local_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def upload_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        dest = self.local_path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)

    def download_file(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self.local_path(key), path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self.local_path(key).unlink()

    def delete_prefix(self, prefix: str) -> int:
        found = list(self.keys(prefix))
        for key, _ in found:
            self.delete(key)
        # Directories a prefix ending in "/" named are gone with their files.
        if prefix.endswith("/"):
            with contextlib.suppress(OSError, ValueError):
                shutil.rmtree(self.local_path(prefix.rstrip("/")))
        return len(found)

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Walks the directory the prefix names (or its parent, for a partial name)."""
        base = prefix if prefix.endswith("/") else prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        try:
            top = self.local_path(base.rstrip("/")) if base else self.root
        except ValueError:
            return
        found: list[tuple[str, int]] = []
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        found.append((key, full.stat().st_size))
        yield from sorted(found)
