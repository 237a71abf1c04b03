"""Read request bodies with as few copies as the server allows.

Under gunicorn a body of known length is taken straight from the client socket, and gunicorn's
bookkeeping is kept in step so keep-alive and pipelining still work (bytes it already read ahead
are handed over first). Its own ``read()`` goes through two BytesIO buffers and several slices
per MiB, which cost half of the throughput on a small machine. Two ways:

* ``splice_to`` moves bytes socket -> pipe -> file with splice(2): they never enter Python, and
  the kernel copies them once (into the page cache) instead of twice.
* ``readinto`` fills a caller's buffer with ``recv_into``, for bodies Python must see (checksums).

Anything else (chunked bodies, other servers) uses the stream's ``read``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import select
import socket
from typing import Any, Protocol, runtime_checkable


class BodyReader(Protocol):
    def readinto(self, view: memoryview) -> int:
        """Fill up to ``len(view)`` bytes; 0 means the body ended (or the client went away)."""
        ...

    def close(self) -> None: ...


class ClientGone(Exception):
    """Reading the body from the client failed (reset, timeout): what arrived before counts."""


@runtime_checkable
class SplicingBody(Protocol):
    def splice_to(self, fd: int, count: int) -> int:
        """Move up to ``count`` body bytes into file ``fd`` at its position; 0 = the body ended."""
        ...


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
        self._pipe: tuple[int, int] | None = None
        self._pipe_size = 0

    @classmethod
    def supports(cls, stream: Any) -> bool:
        reader = getattr(stream, "reader", None)
        return (type(stream).__module__ == "gunicorn.http.body" and type(reader).__name__ == "LengthReader"
                and isinstance(getattr(getattr(reader, "unreader", None), "sock", None), socket.socket)
                and isinstance(getattr(stream, "buf", None), io.BytesIO))

    def splice_to(self, fd: int, count: int) -> int:
        if self._head:
            n = os.write(fd, self._head[:count])
            self._head = self._head[n:]
            return n
        if self._remaining <= 0 or count <= 0:
            return 0
        pipe_out, pipe_in = self._open_pipe()
        want = min(count, self._remaining, self._pipe_size)
        try:
            moved = self._splice_from_socket(pipe_in, want)
        except OSError as exc:  # the client's side; a failing disk below is not caught
            raise ClientGone(str(exc)) from exc
        self._remaining -= moved
        self._reader.length = self._remaining
        left = moved
        while left:  # empty the pipe into the file, so the next splice from the socket cannot block
            left -= os.splice(pipe_out, fd, left)
        return moved

    def _open_pipe(self) -> tuple[int, int]:
        if self._pipe is None:
            self._pipe = os.pipe2(os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # the default 64 KiB means more system calls
                fcntl.fcntl(self._pipe[1], fcntl.F_SETPIPE_SZ, 1 << 20)
            self._pipe_size = fcntl.fcntl(self._pipe[1], fcntl.F_GETPIPE_SZ)
        return self._pipe

    def _splice_from_socket(self, pipe_in: int, want: int) -> int:
        """Socket -> pipe, waiting at most the read timeout for bytes (the socket is non-blocking
        when it has a timeout)."""
        while True:
            try:
                return os.splice(self._sock.fileno(), pipe_in, want, flags=os.SPLICE_F_MOVE)
            except BlockingIOError:
                poller = select.poll()
                poller.register(self._sock.fileno(), select.POLLIN)
                timeout = self._sock.gettimeout()
                if not poller.poll(None if timeout is None else timeout * 1000):
                    raise TimeoutError("the client sent nothing within the read timeout") from None

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
        if self._pipe is not None:
            for end in self._pipe:
                os.close(end)
            self._pipe = None


def open_body(stream: Any, timeout: float | None = None) -> BodyReader:
    if os.environ.get("VIDUP_INGEST_SOCKET_READS", "1") != "0" and GunicornSocketBody.supports(stream):
        return GunicornSocketBody(stream, timeout)
    return StreamBody(stream)
