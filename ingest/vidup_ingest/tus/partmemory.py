"""Memory for S3 parts: buffers in pooled anonymous maps (:class:`PartBuffer`, :class:`MapPool`)
and request bodies over views of them (:class:`Body`), so a part is never copied on its way out."""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import threading
import time
from typing import IO, Any, cast


class MapPool:
    """Part buffers as anonymous memory maps, kept for reuse.

    Why maps: a map's pages become resident only as bytes are written into it (a trickle costs a
    page), and a map leaves the process as soon as nothing uses it, whatever the allocator's
    heuristics. Parts held as 256 KiB bytearray blocks freed into glibc's per-thread arenas, which
    kept them: about 900 MiB at 32 concurrent uploads.

    Why reuse: a fresh page costs a fault on its first write (on this project's VMs a host fault
    too; see bench/upload's ``warm_free_memory``), and uploads write one part after another.
    Maps come from :func:`new_map`, whose huge pages make the faults a pool still misses cheaper.
    ``keep`` maps per size wait here for good; every other map given back waits ``decay`` seconds
    for its next use, then leaves (the newest are taken first, so the oldest age out), as
    jemalloc's decay keeps freed pages for seconds before it returns them. So a burst of uploads
    costs what it had in use at once, and gives it back once it is over. With only ``keep``
    kept, 32 concurrent 32 MiB uploads mapped ~400 MiB of fresh pages per GiB received: ~100,000
    faults, ~0.45 CPU-s/GiB of system time on this project's machine.
    """

    KEEP = 4
    DECAY = 30.0

    def __init__(self, keep: int = KEEP, decay: float = DECAY) -> None:
        self.keep = keep
        self.decay = decay
        #: Per size, the idle maps with the time each came back, oldest first.
        self._idle: dict[int, list[tuple[float, mmap.mmap]]] = {}
        self._mutex = threading.Lock()
        self._timer: threading.Timer | None = None
        self._timer_pid = 0

    def take(self, size: int) -> mmap.mmap:
        with self._mutex:
            pool = self._idle.get(size)
            if pool:
                return pool.pop()[1]
        return new_map(size)

    def give(self, region: mmap.mmap) -> None:
        """Back to the pool (unmapped once it leaves it and the last view of it is gone: never
        closed here, as a finished request may still hold a view)."""
        now = time.monotonic()
        with self._mutex:
            self._idle.setdefault(len(region), []).append((now, region))
            self._trim(now)

    def idle(self, size: int) -> int:
        """How many maps of ``size`` wait here."""
        with self._mutex:
            return len(self._idle.get(size, ()))

    def _trim(self, now: float) -> None:
        """Drop the maps past ``keep`` idle for ``decay``; if some remain past ``keep``, make sure
        a timer comes back for them (a pool nobody uses any more still shrinks)."""
        due: float | None = None
        for pool in self._idle.values():
            while len(pool) > self.keep and now - pool[0][0] >= self.decay:
                del pool[0]
            if len(pool) > self.keep:
                due = pool[0][0] if due is None else min(due, pool[0][0])
        timer_alive = self._timer is not None and self._timer_pid == os.getpid()  # not a parent's
        if due is not None and not timer_alive:
            self._timer = threading.Timer(max(0.0, due + self.decay - now) + 0.01, self._on_timer)
            self._timer.daemon = True
            self._timer_pid = os.getpid()
            self._timer.start()

    def _on_timer(self) -> None:
        with self._mutex:
            self._timer = None
            self._trim(time.monotonic())


#: The start of a map that keeps small pages: a trickle of bytes costs 4 KiB pages, not a 2 MiB one.
SMALL_PAGES = 2 << 20


def new_map(size: int) -> mmap.mmap:
    """A private anonymous map whose bytes past ``SMALL_PAGES`` may come as transparent huge pages.

    Why: the first write to a fresh 4 KiB page costs a fault, 2,048 of them per 8 MiB part; one
    2 MiB page replaces 512 of them. On this project's machine a fresh 8 MiB part took 2,048 faults
    and about 12 ms to fill as a shared map, 515 faults and about 4 ms as this one. Private,
    because anonymous *shared* memory is shmem, which the kernel's ``shmem_enabled`` (usually
    ``never``) keeps off huge pages; the first ``SMALL_PAGES`` stay small, so a map a small PATCH
    touched holds kilobytes, not 2 MiB. Where the kernel has no THP, or ``enabled`` is ``never``,
    the advice changes nothing.
    """
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size > SMALL_PAGES:
        with contextlib.suppress(OSError):  # a kernel built without THP refuses the advice
            region.madvise(mmap.MADV_HUGEPAGE, SMALL_PAGES, size - SMALL_PAGES)
    return region


MAPS = MapPool()


class PartBuffer:
    """Up to ``limit`` bytes (at most one part) in one map from the pool, taken at the first byte,
    reused from part to part by its writer and given back by ``release``: never while a request
    still reads it, which callers ensure by releasing only after the upload of its bytes ended."""

    def __init__(self, limit: int, capacity: int = 0) -> None:
        self.fill = 0
        self.limit = limit
        self.capacity = max(limit, capacity)
        self._map: mmap.mmap | None = None

    def _region(self) -> mmap.mmap:
        if self._map is None:
            self._map = MAPS.take(self.capacity)
        return self._map

    def window(self, count: int) -> memoryview:
        """Where the next ``count`` bytes (at most what fits) go; ``advance`` counts them."""
        count = min(count, self.limit - self.fill)
        return memoryview(self._region())[self.fill:self.fill + count]

    def advance(self, count: int) -> None:
        if self.fill + count > self.limit:
            raise ValueError("a part buffer cannot hold more than one part")
        self.fill += count

    def append(self, data: bytes | memoryview) -> None:
        if self.fill + len(data) > self.limit:
            raise ValueError("a part buffer cannot hold more than one part")
        self._region()[self.fill:self.fill + len(data)] = data
        self.fill += len(data)

    def view(self, start: int = 0) -> list[memoryview]:
        """The bytes from ``start`` to the end (one view, or none)."""
        if self._map is None or self.fill <= start:
            return []
        return [memoryview(self._map)[start:self.fill]]

    def clear(self, limit: int) -> None:
        self.fill = 0
        self.limit = limit
        if limit > self.capacity:
            self.release()
            self.capacity = limit

    def release(self) -> None:
        if self._map is not None:
            MAPS.give(self._map)
            self._map = None
        self.fill = 0


class Body:
    """Byte strings sent as one request body without joining them: a seekable file over views
    (botocore reads it once to sign it and once to send it, and rewinds it for retries)."""

    def __init__(self, *chunks: bytes | memoryview | list[memoryview]) -> None:
        flat: list[bytes | memoryview] = []
        for c in chunks:
            flat.extend(c if isinstance(c, list) else [c])
        self._chunks = [memoryview(c) for c in flat if len(c)]
        self._size = sum(len(c) for c in self._chunks)

    def __len__(self) -> int:
        return self._size

    def stream(self) -> IO[bytes]:
        return cast(IO[bytes], _BodyStream(self._chunks, self._size))


class _BodyStream(io.RawIOBase):
    def __init__(self, chunks: list[memoryview], size: int) -> None:
        super().__init__()
        self._chunks = chunks
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes | memoryview:
        """A view of the next bytes, at most ``size`` and within one chunk (a raw read may return
        fewer): botocore hashes them and urllib3 sends them as they are, never copied here."""
        if self._pos >= self._size:
            return b""
        if size is None or size < 0:
            rest = bytearray(self._size - self._pos)
            self.readinto(rest)
            return bytes(rest)
        skip = self._pos
        for chunk in self._chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            n = min(len(chunk) - skip, size)
            self._pos += n
            return chunk[skip:skip + n]
        return b""

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        done = 0
        skip = self._pos
        for chunk in self._chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            n = min(len(chunk) - skip, len(out) - done)
            out[done:done + n] = chunk[skip:skip + n]
            done += n
            skip = 0
            if done == len(out):
                break
        self._pos += done
        return done
