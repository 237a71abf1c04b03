"""Stream one request body into an upload in bounded memory.

The body is read in ``read_size`` steps and written straight to the storage writer; nothing is
held beyond one step. Without a checksum, the offset is committed (recorded after the bytes are
written, synced per the fsync policy) every ``commit_bytes`` so a crash or disconnect keeps what
arrived. With a checksum nothing counts until
the whole body is verified.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from vidup_ingest.bodyreader import BodyReader
from vidup_ingest.headers import Checksum
from vidup_ingest.storage import UploadWriter


@dataclass
class TransferResult:
    received: int
    #: "eof" (body ended), "disconnected" (read failed), "stopped" (asked to stop), "overflow"
    #: (the body is longer than ``max_bytes``).
    ending: str
    checksum_ok: bool | None = None


def receive(body: BodyReader, writer: UploadWriter, *, max_bytes: int, read_size: int,
            commit_bytes: int, checksum: Checksum | None, stop: threading.Event,
            commit: Callable[[int], None]) -> TransferResult:
    """Copy up to ``max_bytes`` from ``body`` to ``writer`` through one reused buffer.

    ``commit(n)`` is called with the bytes received so far, at most every ``commit_bytes`` (never
    when a checksum is pending). The caller commits the end itself.
    """
    hasher = hashlib.new(checksum.algorithm) if checksum else None
    buf = memoryview(bytearray(read_size))
    received = 0
    committed = 0
    ending = "eof"
    while received < max_bytes:
        if stop.is_set():
            ending = "stopped"
            break
        want = min(read_size, max_bytes - received)
        filled, ending = _fill(body, buf[:want])
        if filled:
            chunk = buf[:filled]
            writer.write(chunk)
            if hasher is not None:
                hasher.update(chunk)
            received += filled
        if ending != "eof" or filled < want:
            if stop.is_set():
                ending = "stopped"
            break
        if hasher is None and received - committed >= commit_bytes:
            commit(received)
            committed = received
    else:
        # The body may not go past max_bytes: one more byte means the request was too long.
        extra, _ = _fill(body, buf[:1])
        if extra:
            ending = "overflow"
    result = TransferResult(received, ending)
    if hasher is not None and checksum is not None:
        result.checksum_ok = ending == "eof" and hasher.digest() == checksum.digest
    return result


def _fill(body: BodyReader, view: memoryview) -> tuple[int, str]:
    """Read until ``view`` is full or the body ends: (bytes read, "eof" | "disconnected")."""
    filled = 0
    while filled < len(view):
        try:
            n = body.readinto(view[filled:])
        except Exception:  # a lost client: gunicorn, werkzeug and the socket each raise their own
            return filled, "disconnected"
        if n == 0:
            break
        filled += n
    return filled, "eof"
