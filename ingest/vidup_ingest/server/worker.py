"""gunicorn's gthread worker, changed so that a connection costs a thread only once its request head is in.

Why: gunicorn 27's gthread hands a new connection to a thread at its first byte (``wait_for_data``
waits for that byte for up to 5 s in the thread, then parks the connection in the poller), and from
there the thread blocks parsing the head; gunicorn has no header timeout. Clients that type a head
a byte a second therefore take every thread of the default ingest (2 x 32) and keep them: measured
with ``bench/slowclients``, a 100 MiB upload made no progress at all beside 500 such clients.

Here the worker's event loop (the thread that accepts) reads request heads without blocking, the
way nginx, Puma's reactor and Tornado do, and only a connection with its whole head in hand goes to
a thread (``enqueue_req`` is the one gate, for new, kept-alive and pipelined connections alike):

* **Header deadline** (``VIDUP_INGEST_HEADER_TIMEOUT``, nginx ``client_header_timeout``, Apache
  mod_reqtimeout ``header=20``): a head not complete within it gets 408 and is closed. A waiting
  head costs a socket and its bytes, no thread; the deadline frees the socket.
* **Lingering close in the loop**: gunicorn closes a ``Connection: close`` response with a lingering
  close (half-close, then drain for up to 2 s, RFC 9112 section 9.6) run *on the loop thread*, so
  every client that does not close its end stalled accepts and every other connection for 2 s. The
  drain here is an event like any other.
* **No draining in threads**: after a response, gthread drains an unread request body in the
  thread, under a deadline it checks only between reads that each wait for 1 KiB, so a client
  trickling that body held the thread for about 1024 times its interval. A connection whose body
  was not read to its end is closed instead, and the lingering close above takes what still
  comes. (gunicorn ignores an app's ``Connection: close``; this is what makes a cut body close.)
* **Connection cap** (``VIDUP_INGEST_MAX_CONNECTIONS`` per worker): over it, a new connection is
  answered ``503`` with ``Retry-After: 1`` at once (tus clients retry 5xx) instead of waiting
  unanswered in the kernel's accept queue. gunicorn's own ``worker_connections`` sits above the
  cap (``gunicorn_worker_connections``) so refusals in flight stay bounded too.

What still costs a thread is a request being served: reading its body and running the app (a
WebSocket holds one by design). Bodies keep a minimum pace (``vidup_ingest.server.bodypace``), and
threads are many (``VIDUP_INGEST_THREADS``): one asleep in recv costs little memory (see the README's
"Slow clients" figures). gevent was not chosen: file writes and fdatasync would block its hub, and
the app runs background threads.

TLS, HTTP/2 prior knowledge and the uwsgi protocol (none used: the ingress terminates TLS) keep
gunicorn's own path for their connections.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gunicorn import http, util
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from vidup_ingest.server.heads import BUSY, TIMED_OUT, TOO_LARGE, Head, head_state

#: How much one recv of a head takes (bytes of the body behind it are handed on with it).
RECV_SIZE = 64 * 1024
#: Lingering close: at most this long and this many bytes drained (gunicorn's own figures).
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
#: Seconds between two warnings that connections are being refused.
REFUSAL_LOG_INTERVAL = 60.0


def gunicorn_worker_connections(max_connections: int) -> int:
    """gunicorn's ``worker_connections`` for a cap of ``max_connections``: room above it to accept
    and refuse (503) newcomers, beyond which gunicorn stops accepting."""
    return max_connections + max(64, max_connections // 4)


def body_left_unread(parser: Any) -> bool:
    """Whether the request just served left bytes of its body unread (or failed reading it)."""
    body = getattr(getattr(parser, "mesg", None), "body", None)
    if body is None:
        return False
    if body.failed or body.buf.tell():
        return True
    reader = body.reader
    if isinstance(reader, LengthReader):
        return bool(reader.length > 0)
    if isinstance(reader, ChunkedReader):
        return reader.parser is not None or bool(reader.buf.tell())
    return True


class _Conn(TConn):
    """A gthread connection with its head as received so far, and its deadline in the loop."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any,
                 linger: Callable[[_Conn], None] | None) -> None:
        super().__init__(cfg, sock, client, server)
        self.head = bytearray()
        self.deadline = 0.0
        self.drained = 0
        self._linger = linger

    @property
    def in_loop(self) -> bool:
        """Whether this connection's heads and closes are handled by the loop (plain HTTP/1)."""
        return self._linger is not None and not self.is_http2

    def close(self, graceful: bool = False) -> None:
        if graceful and self.in_loop:
            assert self._linger is not None
            self._linger(self)
        else:
            super().close(graceful)


class HeadFirstWorker(ThreadWorker):
    """See the module docstring. Configure with ``configured``; gunicorn instantiates the class."""

    header_timeout: float = 20.0
    max_connections: int = 1000

    @classmethod
    def configured(cls, header_timeout: float, max_connections: int) -> type[HeadFirstWorker]:
        """A subclass carrying the ingest's settings (gunicorn's config has no place for them)."""
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout, "max_connections": max_connections})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Connections whose head is being read / that are being closed; dicts keep insertion order,
        #: which is deadline order (every deadline is "now + a constant").
        self.heads: dict[_Conn, None] = {}
        self.lingering: dict[_Conn, None] = {}
        self._stopping_at: float | None = None
        self._last_refusal_log = 0.0

    # -- the gate to the thread pool ------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        in_loop = self._loop_can_read_heads(client_addr)
        conn = _Conn(self.cfg, client_sock, client_addr, listener.getsockname(), self._linger if in_loop else None)
        if in_loop and self.nr_conns > self.max_connections:
            self._refuse(conn)
            return
        self.enqueue_req(conn)

    def _loop_can_read_heads(self, client_addr: Any) -> bool:
        return (not self.cfg.is_ssl and getattr(self.cfg, "protocol", "http") == "http"
                and not negotiation.prior_knowledge_allowed(self.cfg, client_addr))

    def enqueue_req(self, conn: Any) -> None:
        """Give ``conn`` to a thread, but only with a complete head in hand; until then the loop reads it."""
        if isinstance(conn, _Conn) and conn.in_loop:
            if conn.parser is not None:  # kept alive, or pipelined bytes read ahead by the last request
                conn.head += conn.parser.unreader.take_buffered()
            if head_state(conn.head) is Head.INCOMPLETE:
                self._read_head(conn)
                return
            if conn.parser is None:
                conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader.unread(bytes(conn.head))
            conn.head = bytearray()
            conn.data_ready = True  # the thread must not wait for bytes the loop already took
        super().enqueue_req(conn)

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """Keep a served connection only if its request body was read to the end (see the module
        docstring); runs in the thread that served the request."""
        if not (isinstance(conn, _Conn) and conn.in_loop):
            return bool(super()._keepalive_after(conn, keepalive))
        return keepalive and not body_left_unread(conn.parser)

    # -- heads ----------------------------------------------------------------------------------

    def _read_head(self, conn: _Conn) -> None:
        conn.sock.setblocking(False)
        conn.deadline = time.monotonic() + self.header_timeout
        self.heads[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))

    def _on_head_readable(self, conn: _Conn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its head
            self._stop_reading_head(conn)
            self._close_now(conn)
            return
        conn.head += data
        state = head_state(conn.head)
        if state is Head.INCOMPLETE:
            return
        self._stop_reading_head(conn)
        if state is Head.TOO_LARGE:
            self._answer_and_close(conn, TOO_LARGE)
        else:
            self.enqueue_req(conn)

    def _stop_reading_head(self, conn: _Conn) -> None:
        del self.heads[conn]
        self.poller.unregister(conn.sock)

    # -- refusing and closing -------------------------------------------------------------------

    def _refuse(self, conn: _Conn) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL:
            self._last_refusal_log = now
            self.log.warning("over %d connections: refusing new ones with 503", self.max_connections)
        self._answer_and_close(conn, BUSY)

    def _answer_and_close(self, conn: _Conn, response: bytes) -> None:
        """Send a small canned response without blocking (best effort), then close lingering."""
        try:
            conn.sock.setblocking(False)
            conn.sock.send(response)
        except OSError:
            pass
        self._start_linger(conn)

    def _linger(self, conn: _Conn) -> None:
        """``conn.close(graceful=True)``, called by gthread once it stopped counting the connection:
        a lingering socket counts until it is closed."""
        self.nr_conns += 1
        self._start_linger(conn)

    def _start_linger(self, conn: _Conn) -> None:
        """Close after the response: half-close, then drain what the client still sends (so the
        kernel does not reset the connection under the response's last bytes), in the loop."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close_now(conn)
            return
        conn.deadline = time.monotonic() + LINGER_SECONDS
        conn.drained = 0
        self.lingering[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, conn))

    def _on_linger_readable(self, conn: _Conn, _sock: Any) -> None:
        try:
            while conn.drained < LINGER_BYTES:
                data = conn.sock.recv(RECV_SIZE)
                if not data:
                    break
                conn.drained += len(data)
        except BlockingIOError:
            return
        except OSError:
            pass
        self._end_linger(conn)

    def _end_linger(self, conn: _Conn) -> None:
        del self.lingering[conn]
        self.poller.unregister(conn.sock)
        self._close_now(conn)

    def _close_now(self, conn: _Conn) -> None:
        self.nr_conns -= 1
        util.close(conn.sock)

    def murder_keepalived(self, force: bool = False) -> None:
        """gthread's timer tick (every loop turn, and ``force`` at exit): also end heads past the
        header deadline and lingering closes past theirs. A stopping worker gives a head being
        sent what gthread gives a kept-alive connection (``STOP_KEEPALIVE_LINGER``)."""
        super().murder_keepalived(force)
        now = time.monotonic()
        expire_all = force
        if not self.alive:
            if self._stopping_at is None:
                self._stopping_at = now
            expire_all = expire_all or now >= self._stopping_at + STOP_KEEPALIVE_LINGER
        for conn in list(self.heads):
            if not expire_all and conn.deadline > now:
                break
            self._stop_reading_head(conn)
            if conn.head:
                self._answer_and_close(conn, TIMED_OUT)
            else:  # nothing sent at all (a preconnect, an idle attacker): no answer is due
                self._close_now(conn)
        for conn in list(self.lingering):
            if not force and conn.deadline > now:
                break
            self._end_linger(conn)
