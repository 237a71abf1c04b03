"""Read request bodies into a caller's buffer with as few copies as the server allows.

Under gunicorn a body of known length is read straight from the client socket with
``recv_into`` into one reused buffer: the kernel copies into it and ``os.write`` copies out, and
nothing else touches the bytes (gunicorn's own ``read()`` goes through two BytesIO buffers and
several slices per MiB, which costs half of the throughput on a small machine). Bytes gunicorn
already read ahead are handed over first, and its bookkeeping is kept in step so keep-alive and
pipelining still work. Anything else (chunked bodies, other servers) uses the stream's ``read``.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
from typing import Any, Protocol


class BodyReader(Protocol):
    def readinto(self, view: memoryview) -> int:
        """Fill up to ``len(view)`` bytes; 0 means the body ended (or the client went away)."""
        ...

    def close(self) -> None: ...


class StreamBody:
    """Any WSGI input stream, via ``read``."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readinto(self, view: memoryview) -> int:
        data = self.stream.read(len(view))
        n = len(data)
        view[:n] = data
        return n

    def close(self) -> None:
        pass


class GunicornSocketBody:
    """A Content-Length body read from gunicorn's client socket directly."""

    def __init__(self, body: Any, timeout: float | None) -> None:
        self._reader = body.reader
        unreader = self._reader.unreader
        self._sock: socket.socket = unreader.sock
        # 1. bytes gunicorn's Body already took from the reader but did not return yet
        head = body.buf.getvalue()
        body.buf = io.BytesIO()
        # 2. bytes the unreader read ahead from the socket that still belong to this body
        remaining = int(self._reader.length)
        ahead = unreader.buf.getvalue()
        take = ahead[:remaining]
        unreader.buf = io.BytesIO()
        unreader.buf.write(ahead[len(take):])  # a pipelined next request stays with gunicorn
        self._head = memoryview(head + take)
        self._remaining = remaining - len(take)
        self._reader.length = self._remaining
        self._saved_timeout = self._sock.gettimeout()
        self._sock.settimeout(timeout)

    @classmethod
    def supports(cls, stream: Any) -> bool:
        reader = getattr(stream, "reader", None)
        return (type(stream).__module__ == "gunicorn.http.body" and type(reader).__name__ == "LengthReader"
                and isinstance(getattr(getattr(reader, "unreader", None), "sock", None), socket.socket)
                and isinstance(getattr(stream, "buf", None), io.BytesIO))

    def readinto(self, view: memoryview) -> int:
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._remaining <= 0:
            return 0
        n = self._sock.recv_into(view, min(len(view), self._remaining))
        self._remaining -= n
        self._reader.length = self._remaining
        return n

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.settimeout(self._saved_timeout)


def open_body(stream: Any, timeout: float | None = None) -> BodyReader:
    if os.environ.get("VIDUP_INGEST_SOCKET_READS", "1") != "0" and GunicornSocketBody.supports(stream):
        return GunicornSocketBody(stream, timeout)
    return StreamBody(stream)
