"""Read request bodies with as few copies as the server allows.

Under gunicorn a body of known length is taken straight from the client socket, and gunicorn's
bookkeeping is kept in step so keep-alive and pipelining still work (bytes it already read ahead
are handed over first). Its own ``read()`` goes through two BytesIO buffers and several slices
per MiB, which cost half of the throughput on a small machine. Two ways:

* ``splice_to`` moves bytes socket -> pipe -> file with splice(2): they never enter Python, and
  the kernel copies them once (into the page cache) instead of twice.
* ``readinto`` fills a caller's buffer with ``recv_into``, for bodies Python must see (checksums).

Anything else (chunked bodies, other servers) uses the stream's ``read``; under gunicorn its socket
reads are routed through the same pace (``_PacedSocket``).

Every wait for bytes keeps the body's pace (``vidup_ingest.server.bodypace``): an idle limit
(``VIDUP_INGEST_READ_TIMEOUT``) and a minimum rate, so a client trickling its body gives its thread
back within one rate window instead of never; what it sent is kept (tus resumes), except, for a
chunked body, the read step gunicorn was still filling. A body given up before its end is marked
failed, so gunicorn closes the connection instead of draining the rest in the thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
from typing import Any, Protocol, runtime_checkable

from vidup_ingest.config import IngestConfig
from vidup_ingest.server.bodypace import BodyPace, PaceKeeper

#: The pipe a spliced body goes through starts at the kernel's default size (64 KiB) and grows to
#: this once a splice fills it. Pipe pages are charged to the user whether used or not: past
#: ``fs.pipe-user-pages-soft`` (64 MiB) an unprivileged user's new pipes start at one or two pages,
#: and ``fs.pipe-user-pages-hard``, when set, refuses growth. Hundreds of trickling bodies need no
#: more than the default, and no longer charge 1 MiB each.
PIPE_SIZE = 1 << 20


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
    """Any WSGI input stream, via ``read``. Under gunicorn (a chunked body), the socket its parser
    reads from is swapped for one that keeps the pace, and restored at ``close``."""

    def __init__(self, stream: Any, pace: BodyPace | None = None) -> None:
        self.stream = stream
        self._unreader: Any = None
        self._sock: socket.socket | None = None
        unreader = _gunicorn_unreader(stream)
        if pace is not None and unreader is not None:
            self._unreader, self._sock = unreader, unreader.sock
            self._saved_timeout = unreader.sock.gettimeout()
            unreader.sock.settimeout(0.0)
            unreader.sock = _PacedSocket(unreader.sock, pace.start())

    def readinto(self, view: memoryview) -> int:
        data = self.stream.read(len(view))
        n = len(data)
        view[:n] = data
        return n

    def close(self) -> None:
        if self._unreader is not None and self._sock is not None:
            self._unreader.sock = self._sock
            with contextlib.suppress(OSError):
                self._sock.settimeout(self._saved_timeout)
            self._unreader = None


def _gunicorn_unreader(stream: Any) -> Any:
    """The unreader under a gunicorn body (length, chunked or until-EOF), if it reads a socket."""
    if type(stream).__module__ != "gunicorn.http.body":
        return None
    reader = getattr(stream, "reader", None)
    unreader = getattr(reader, "unreader", None) or getattr(getattr(reader, "req", None), "unreader", None)
    return unreader if isinstance(getattr(unreader, "sock", None), socket.socket) else None


class _PacedSocket:
    """A non-blocking client socket whose ``recv`` waits for bytes within a body's pace."""

    def __init__(self, sock: socket.socket, keeper: PaceKeeper) -> None:
        self._sock = sock
        self._keeper = keeper

    def recv(self, size: int) -> bytes:
        while True:
            try:
                data = self._sock.recv(size)
            except BlockingIOError:
                self._keeper.wait_readable(self._sock.fileno())
                continue
            self._keeper.received(len(data))
            return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class GunicornSocketBody:
    """A Content-Length body read from gunicorn's client socket directly."""

    def __init__(self, body: Any, pace: BodyPace) -> None:
        self._body = body
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
        self._sock.settimeout(0.0)  # every wait goes through the pace keeper
        self._keeper = pace.start()
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
        if moved == self._pipe_size < PIPE_SIZE:  # a fast client: fewer, larger splices
            self._grow_pipe(pipe_in)
        left = moved
        while left:  # empty the pipe into the file, so the next splice from the socket cannot block
            left -= os.splice(pipe_out, fd, left)
        return moved

    def _open_pipe(self) -> tuple[int, int]:
        if self._pipe is None:
            self._pipe = os.pipe2(os.O_CLOEXEC)
            self._pipe_size = fcntl.fcntl(self._pipe[1], fcntl.F_GETPIPE_SZ)
        return self._pipe

    def _grow_pipe(self, pipe_in: int) -> None:
        with contextlib.suppress(OSError):  # over the user's pipe allowance: stay small
            fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._pipe_size = fcntl.fcntl(pipe_in, fcntl.F_GETPIPE_SZ)

    def _splice_from_socket(self, pipe_in: int, want: int) -> int:
        """Socket -> pipe (the socket is non-blocking), waiting for bytes within the pace."""
        while True:
            try:
                moved = os.splice(self._sock.fileno(), pipe_in, want, flags=os.SPLICE_F_MOVE)
            except BlockingIOError:
                self._keeper.wait_readable(self._sock.fileno())
                continue
            self._keeper.received(moved)
            return moved

    def readinto(self, view: memoryview) -> int:
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._remaining <= 0:
            return 0
        while True:
            try:
                n = self._sock.recv_into(view, min(len(view), self._remaining))
                break
            except BlockingIOError:
                self._keeper.wait_readable(self._sock.fileno())
        self._keeper.received(n)
        self._remaining -= n
        self._reader.length = self._remaining
        return n

    def close(self) -> None:
        if self._remaining > 0:
            # Given up before its end (a cut or stopped client, a body too long): the connection
            # cannot carry another request, and gunicorn must not drain the rest in this thread.
            self._body.failed = True
        with contextlib.suppress(OSError):
            self._sock.settimeout(self._saved_timeout)
        if self._pipe is not None:
            for end in self._pipe:
                os.close(end)
            self._pipe = None


def open_body(stream: Any, config: IngestConfig | None = None) -> BodyReader:
    """The fastest reader for ``stream``, keeping the pace ``config`` sets (none without one)."""
    pace = BodyPace.from_config(config) if config is not None else BodyPace()
    if os.environ.get("VIDUP_INGEST_SOCKET_READS", "1") != "0" and GunicornSocketBody.supports(stream):
        return GunicornSocketBody(stream, pace)
    return StreamBody(stream, pace if config is not None else None)
