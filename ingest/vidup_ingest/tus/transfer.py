"""Stream one request body into an upload in bounded memory.

The body is moved in ``read_size`` steps straight to the storage writer; nothing is held beyond
one step. When both ends allow it (a socket body, a file writer) and no checksum needs the bytes,
they go socket -> file inside the kernel (see bodyreader.py); into the memory a lending writer
offers (the S3 store's part buffer); otherwise through one buffer.
Without a checksum, progress is checkpointed (the offset recorded after the bytes are written,
synced per the fsync policy; on S3 the parts already stored) every ``commit_bytes`` so a crash
keeps what arrived, and the end is committed, so a disconnect does too. With a checksum nothing
counts until the whole body is verified.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vidup_ingest.tus.bodyreader import BodyReader, ClientGone, SplicingBody
from vidup_ingest.tus.headers import Checksum
from vidup_ingest.tus.storage import FileWriter, LendingWriter, UploadWriter


@dataclass
class TransferResult:
    received: int
    #: "eof" (body ended), "disconnected" (read failed), "stopped" (asked to stop), "overflow"
    #: (the body is longer than ``max_bytes``).
    ending: str
    checksum_ok: bool | None = None


#: The first step of a body read through a buffer (checksums); doubled up to ``read_size``.
FIRST_STEP_BYTES = 64 << 10
#: A step that filled within this long doubles the next one.
FAST_STEP_SECONDS = 0.05


def receive(body: BodyReader, writer: UploadWriter, *, max_bytes: int, read_size: int,
            commit_bytes: int, checksum: Checksum | None, stop: threading.Event,
            checkpoint: Callable[[int], None]) -> TransferResult:
    """Move up to ``max_bytes`` from ``body`` to ``writer``, in the kernel or through one buffer.

    ``checkpoint(n)`` is called with the bytes received so far, at most every ``commit_bytes``
    (never when a checksum is pending). The caller commits the end itself.
    """
    hasher = hashlib.new(checksum.algorithm) if checksum else None
    source = body if hasher is None and isinstance(body, SplicingBody) else None
    sink = writer if isinstance(writer, FileWriter) else None
    spliced = source is not None and sink is not None
    lender = writer if not spliced and isinstance(writer, LendingWriter) else None
    # A buffered body starts with a small step and doubles it while steps fill fast: a fast client
    # soon moves read_size per step, while each of hundreds of trickling ones holds only 64 KiB.
    step = read_size if spliced or lender else min(read_size, FIRST_STEP_BYTES)
    buf = memoryview(bytearray(1 if spliced or lender else step))
    received = 0
    committed = 0
    ending = "eof"
    while received < max_bytes:
        if stop.is_set():
            ending = "stopped"
            break
        want = min(step, max_bytes - received)
        if source is not None and sink is not None:
            filled, ending = _move(source, sink, want)
        elif lender is not None:
            window = lender.window(want)
            filled, ending = _fill(body, window)
            if filled:
                if hasher is not None:
                    hasher.update(window[:filled])
                lender.wrote(filled)
            want = len(window)  # the part's end: a short window is not the body's end
        else:
            started = time.monotonic()
            filled, ending = _fill(body, buf[:want])
            if filled:
                chunk = buf[:filled]
                writer.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
            if filled == step < read_size and time.monotonic() - started < FAST_STEP_SECONDS:
                step = min(read_size, 2 * step)
                buf = memoryview(bytearray(step))
        received += filled
        if ending != "eof" or filled < want:
            if stop.is_set():
                ending = "stopped"
            break
        if hasher is None and received - committed >= commit_bytes:
            checkpoint(received)
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


def _move(body: SplicingBody, writer: FileWriter, want: int) -> tuple[int, str]:
    """Move ``want`` bytes body -> file without copying them through Python, or until the body
    ends: (bytes moved, "eof" | "disconnected")."""
    moved = 0
    while moved < want:
        try:
            n = writer.write_via(body.splice_to, want - moved)
        except ClientGone:
            return moved, "disconnected"
        if n == 0:
            break
        moved += n
    return moved, "eof"


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
