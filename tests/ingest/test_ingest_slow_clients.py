"""Slow clients against a real ingest: a crowd typing heads and trickling bodies a byte at a time
stops nobody else, heads past the header deadline are answered 408 and closed, and a body under the
minimum rate is cut with what arrived kept, so its upload resumes (see ``vidup_ingest.server``).

Functional, not timed: throughput beside the crowd is ``bench/slowclients``'s job. The pure parts
(where a head ends, the body pace) have unit tests at the end.
"""

from __future__ import annotations

import os
import re
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from ingest_support import Ingest

from vidup_ingest.config import IngestConfig
from vidup_ingest.server.bodypace import BodyPace, TooSlow
from vidup_ingest.server.heads import MAX_HEAD, Head, head_state

MiB = 1024 * 1024
HEADS = 100
BODIES = 100
#: Each slow upload's length (never reached at a couple of bytes a second).
SLOW_LENGTH = 64 * 1024
#: Seconds between a slow client's bytes: under the minimum rate, and no head completes in time.
TRICKLE = 0.5
DEADLINE = 3  # header timeout and body rate window, seconds


@dataclass
class SlowConn:
    sock: socket.socket
    kind: str
    url: str
    #: what is still to trickle (the head for "head"; the body for "body")
    pending: bytes
    #: the body it trickles (for "body"), so what the server kept can be compared
    body: bytes = b""
    sent: int = 0
    answer: bytearray = field(default_factory=bytearray)
    closed: bool = False


class Crowd:
    """Slow connections on one ingest, each sending a byte every TRICKLE seconds until answered."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.conns: list[SlowConn] = []
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _head(self, url: str, length: int) -> bytes:
        path = re.sub(r"^https?://[^/]+", "", url)
        headers = {**self.ingest.headers(), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
                   "Content-Length": str(length)}
        return (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.ingest.port}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()

    def open(self, kind: str, url: str) -> None:
        sock = socket.create_connection(("127.0.0.1", self.ingest.port), timeout=10)
        head = self._head(url, SLOW_LENGTH)
        if kind == "head":
            conn = SlowConn(sock, kind, url, head)
        else:
            sock.sendall(head)
            body = os.urandom(SLOW_LENGTH)
            conn = SlowConn(sock, kind, url, body, body=body)
        sock.setblocking(False)
        self.conns.append(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def __enter__(self) -> Crowd:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        for c in self.conns:
            c.sock.close()

    def _run(self) -> None:
        next_byte = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.05):
                c = key.data
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                c.answer += data
                if not data:
                    c.closed = True
                    self._sel.unregister(c.sock)
            if time.monotonic() < next_byte:
                continue
            next_byte += TRICKLE
            for c in self.conns:
                if c.answer or c.closed or not c.pending:
                    continue  # answered: the server stopped reading
                try:
                    n = c.sock.send(c.pending[:1])
                except OSError:
                    continue
                c.pending = c.pending[n:]
                if c.kind == "body":
                    c.sent += n

    def wait_until_all_closed(self, kind: str, timeout: float) -> list[SlowConn]:
        conns = [c for c in self.conns if c.kind == kind]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(c.closed for c in conns):
            time.sleep(0.1)
        return conns


@pytest.fixture(scope="module")
def slow_ingest(start_ingest: Any) -> Ingest:
    """An ingest with the default threads and connection cap, and short deadlines to wait for."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < want:  # the crowd's sockets live in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    d = IngestConfig()
    ingest: Ingest = start_ingest(VIDUP_INGEST_WORKERS=str(d.workers), VIDUP_INGEST_THREADS=str(d.threads),
                                  VIDUP_INGEST_HEADER_TIMEOUT=str(DEADLINE),
                                  VIDUP_INGEST_BODY_RATE_WINDOW=str(DEADLINE))
    return ingest


@pytest.fixture
def crowd(slow_ingest: Ingest) -> Iterator[Crowd]:
    c = Crowd(slow_ingest)
    target = slow_ingest.create(SLOW_LENGTH)  # the heads name it; none of them ever finishes
    uploads = [slow_ingest.create(SLOW_LENGTH) for _ in range(BODIES)]
    for _ in range(HEADS):
        c.open("head", target)
    for url in uploads:
        c.open("body", url)
    with c:
        yield c


def _upload(ingest: Ingest, data: bytes, chunk: int) -> str:
    url = ingest.create(len(data))
    for start in range(0, len(data), chunk):
        r = ingest.patch(url, start, data[start:start + chunk])
        assert r.status_code == 204, (r.status_code, r.text)
    return url


def test_slow_clients_stop_nobody_and_are_cut_at_their_deadlines(slow_ingest: Ingest, crowd: Crowd) -> None:
    time.sleep(2 * TRICKLE)  # every slow client has sent something: the stock server would hold a thread each

    # Beside the crowd, a normal upload goes through and a HEAD answers.
    data = os.urandom(4 * MiB + 17)
    url = _upload(slow_ingest, data, 2 * MiB)
    head = slow_ingest.head(url)
    assert head.status_code == 200 and int(head.headers["Upload-Offset"]) == len(data)
    assert slow_ingest.stored_bytes(url) == data

    # Heads not finished by the header deadline are answered 408 and closed.
    heads = crowd.wait_until_all_closed("head", timeout=10 * DEADLINE)
    assert all(c.closed for c in heads), f"{sum(not c.closed for c in heads)} slow heads still open"
    assert all(c.answer.startswith(b"HTTP/1.1 408 ") for c in heads), {bytes(c.answer[:40]) for c in heads}

    # Bodies under the minimum rate are cut: answered with what the server kept, then closed.
    bodies = crowd.wait_until_all_closed("body", timeout=10 * DEADLINE)
    assert all(c.closed for c in bodies), f"{sum(not c.closed for c in bodies)} slow bodies still open"
    for c in bodies:
        assert c.answer.startswith(b"HTTP/1.1 204 "), bytes(c.answer[:200])
        offset = re.search(rb"(?i)\r\nupload-offset: *(\d+)", c.answer)
        assert offset is not None, bytes(c.answer[:200])
        assert 0 < int(offset.group(1)) <= c.sent, (offset.group(1), c.sent)

    # What a cut body sent is kept, and its upload resumes from there to the end.
    c = bodies[0]
    kept = int(slow_ingest.head(c.url).headers["Upload-Offset"])
    r = slow_ingest.patch(c.url, kept, c.body[kept:])
    assert r.status_code == 204, (r.status_code, r.text)
    assert slow_ingest.stored_bytes(c.url) == c.body  # the kept head is the body's own


@pytest.mark.file_only("the connection layer before any request: nothing reaches the storage")
def test_a_connection_sending_nothing_is_closed_after_the_header_deadline(slow_ingest: Ingest) -> None:
    """No byte at all (a preconnect, an idle attacker): closed without an answer."""
    with socket.create_connection(("127.0.0.1", slow_ingest.port), timeout=10 * DEADLINE) as s:
        assert s.recv(1024) == b""


def test_a_head_arriving_in_pieces_is_served(slow_ingest: Ingest) -> None:
    """The event loop assembles a head sent in pieces (and a body right behind it) before a thread
    parses it; a request on a kept-alive connection goes through the same path."""
    url = slow_ingest.create(10)
    path = re.sub(r"^https?://[^/]+", "", url)
    head = (f"PATCH {path} HTTP/1.1\r\nHost: x\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in slow_ingest.headers().items())
            + "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            + "Content-Length: 10\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", slow_ingest.port), timeout=30) as s:
        for i in range(0, len(head), 40):
            s.sendall(head[i:i + 40])
            time.sleep(0.05)
        s.sendall(b"0123456789")
        assert s.recv(65536).startswith(b"HTTP/1.1 204 ")
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n".encode()
                  + "".join(f"{k}: {v}\r\n" for k, v in slow_ingest.headers().items()).encode() + b"\r\n")
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nUpload-Offset: 10\r\n" in answer
    assert slow_ingest.stored_bytes(url) == b"0123456789"


@pytest.mark.file_only("the connection cap refuses before any request: nothing reaches the storage")
def test_connections_past_the_cap_are_refused_with_503_at_once(start_ingest: Any) -> None:
    """Past VIDUP_INGEST_MAX_CONNECTIONS a newcomer gets 503 + Retry-After without waiting in
    the accept queue; once connections leave, new ones are served again."""
    ingest: Ingest = start_ingest(VIDUP_INGEST_WORKERS="1", VIDUP_INGEST_MAX_CONNECTIONS="5")
    idle = [socket.create_connection(("127.0.0.1", ingest.port), timeout=10) for _ in range(5)]
    try:
        time.sleep(0.5)  # the worker has accepted them
        with socket.create_connection(("127.0.0.1", ingest.port), timeout=10) as s:
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in answer, answer
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    while True:  # the worker notices the closes on its next turn
        r = requests.get(f"{ingest.url}/healthz", timeout=10)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200


# -- the pure parts ------------------------------------------------------------------------------


def test_head_state() -> None:
    assert head_state(b"") is Head.INCOMPLETE
    assert head_state(b"PATCH /files/x HTTP/1.1\r\nHost: a\r\n") is Head.INCOMPLETE
    assert head_state(b"PATCH /files/x HTTP/1.1\r\nHost: a\r\n\r\nbody") is Head.COMPLETE
    assert head_state(b"GET / HTTP/1.1\nHost: a") is Head.COMPLETE  # bare LF: gunicorn refuses it at once
    assert head_state(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD) is Head.TOO_LARGE


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_body_pace_cuts_a_trickle_but_not_a_steady_client() -> None:
    clock = FakeClock()
    keeper = BodyPace(idle=60, min_rate=1000, window=10).start(clock)
    assert keeper.wait_budget() == 10  # the window ends before the idle limit
    for _ in range(10):  # 1000 bytes a second for a window: fine, a new window starts
        clock.now += 1
        keeper.received(1000)
    assert keeper.wait_budget() == 10
    for _ in range(10):  # then a byte a second: cut at the end of that window
        clock.now += 1
        keeper.received(1)
    with pytest.raises(TooSlow):
        keeper.wait_budget()


def test_body_pace_idle_limit_and_no_floor() -> None:
    clock = FakeClock()
    keeper = BodyPace(idle=5).start(clock)
    clock.now = 4
    assert keeper.wait_budget() == 1
    clock.now = 5
    with pytest.raises(TooSlow):
        keeper.wait_budget()
    assert BodyPace().start(clock).wait_budget() is None
