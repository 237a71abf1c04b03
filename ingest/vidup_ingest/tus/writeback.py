"""Streaming writeback: keep the disk busy while a body arrives, and keep the page cache small.

A received upload is written once and read later by a worker, usually on another node, so caching
it buys nothing, while in Kubernetes the page cache is charged to the ingest pod's memory limit.
The pattern is the one PostgreSQL (``pg_flush_data``) and the kernel's own advice for streaming
writers use: start writeback of each new step as soon as it is written (``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE``, which does not wait), and once a range is a window behind the writer,
wait for it (it was submitted long ago, so this usually returns at once) and drop it from the cache
(``POSIX_FADV_DONTNEED``). Receiving and disk writes overlap; the writer only waits when the disk
falls a whole window behind the network, which is then the speed anything durable can go.

No flush of the device's cache happens here: durability is ``fdatasync``'s job, once, where the
fsync policy asks for it (see storage.py). ``sync_file_range`` is Linux-only and not in :mod:`os`;
elsewhere (or if libc lacks it) :func:`start_writeback` falls back to ``POSIX_FADV_DONTNEED``, which
also starts writeback without waiting, and :func:`wait_and_drop` to ``fdatasync``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable

SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_AFTER = 4

#: Writeback of received bytes is started every this many bytes.
STEP_BYTES = 8 << 20
#: Bytes a writer may run ahead of the disk (started but not yet known written) before it waits.
WINDOW_BYTES = 16 << 20


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


_sync_file_range = _libc_sync_file_range()


def _range(fd: int, start: int, end: int, flags: int) -> bool:
    """``sync_file_range`` over ``[start, end)``; False when it is not available here."""
    if _sync_file_range is None:
        return False
    if _sync_file_range(fd, start, end - start, flags) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EOPNOTSUPP):  # a kernel or filesystem without it
            return False
        raise OSError(err, os.strerror(err))
    return True


def drop(fd: int, start: int, end: int) -> None:
    """Drop the clean pages of ``[start, end)`` from the page cache (and start writeback of any
    dirty ones there, without waiting)."""
    if end > start:
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)


def start_writeback(fd: int, start: int, end: int) -> None:
    """Queue ``[start, end)`` for writing to the disk without waiting for it."""
    if end > start and not _range(fd, start, end, SYNC_FILE_RANGE_WRITE):
        drop(fd, start, end)


def wait_and_drop(fd: int, start: int, end: int) -> None:
    """Wait until ``[start, end)`` is written (writing what is still dirty), then drop it."""
    if end <= start:
        return
    flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
    if not _range(fd, start, end, flags):
        os.fdatasync(fd)
    drop(fd, start, end)


class StreamingWriteback:
    """The bookkeeping of one writer: call :meth:`advance` with the file position after each write.

    Invariants: writeback was started for everything before ``started``; everything before
    ``dropped`` is on the disk and out of the cache. ``dropped`` trails the writer by at most
    ``window`` + ``step`` bytes, so that is all an upload keeps cached.
    """

    def __init__(self, fd: int, offset: int, step: int = STEP_BYTES, window: int = WINDOW_BYTES) -> None:
        self.fd = fd
        self.step = step
        self.window = window
        # An earlier request may have left cached pages just before the resume point: they are
        # dropped along with the first window.
        self.started = offset
        self.dropped = max(0, offset - window)

    def advance(self, pos: int) -> None:
        if pos - self.started < self.step:
            return
        start_writeback(self.fd, self.started, pos)
        self.started = pos
        behind = pos - self.window
        if behind > self.dropped:
            wait_and_drop(self.fd, self.dropped, behind)
            self.dropped = behind

    def synced(self, pos: int) -> None:
        """After an ``fdatasync``: everything up to ``pos`` is clean; drop it all."""
        drop(self.fd, self.dropped, pos)
        self.started = self.dropped = pos
