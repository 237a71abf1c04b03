"""A raw HTTP/1.1 client for the fuzz tests: it sends exactly the bytes it is given (no header
normalisation, any method, any target, any framing) and reads the answer strictly, so a server
that announces more bytes than it sends, or never answers, shows up as a hang.

Every exchange has one deadline. The client always reads the server's answer (or its close)
before it lets go of the connection, so whatever the request changed is done when the test looks.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
import zlib
from dataclasses import dataclass, field

#: Seconds one exchange may take end to end; more is a hung connection.
TIMEOUT = 10.0
MAX_BODY = 4 << 20
_RUNS = re.compile(rb"(.)\1{40,}", re.DOTALL)


class Hung(AssertionError):
    """The server neither answered nor closed the connection in time."""


class BadFraming(AssertionError):
    """The server's answer is not valid HTTP/1.1 framing."""


@dataclass
class Request:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    version: bytes = b"HTTP/1.1"
    #: What the client does after sending: "wait" for the answer, "half-close" (shut its write side
    #: first: the body it declared will never come), or "stall" (keep the connection open, send
    #: nothing more: the server must give up within its read timeout).
    then: str = "wait"
    #: Read only the status line and headers (a stream that legitimately stays open).
    headers_only: bool = False
    #: Raw bytes to send instead of the built request (garbage request lines).
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        lines = [self.method + b" " + self.target + b" " + self.version]
        lines += [name + b": " + value for name, value in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k.decode("latin-1").lower() == name.lower():
                return v
        return None

    def describe(self) -> str:
        text = _RUNS.sub(lambda m: b"<%s * %d>" % (m.group(1), len(m.group(0))), self.encode())
        shown = text if len(text) <= 3000 else text[:3000] + b"...(%d bytes)" % len(text)
        return f"{shown!r} then={self.then}"


@dataclass
class Reply:
    status: int | None  # None: the server closed the connection without answering
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: WebSocket frames after a 101: (opcode, payload)
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    elapsed: float = 0.0
    #: Whether the server closed the connection after this answer (or instead of one).
    closed: bool = False
    #: A reset instead of a close (also counts as closed).
    reset: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def summary(self) -> str:
        body = self.body[:300]
        return f"{self.status} {self.reason} headers={self.headers} body={body!r} closed={self.closed}"


class _Conn:
    def __init__(self, sock: socket.socket, deadline: float, what: str) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.what = what

    def _more(self) -> bool:
        if self.eof:
            return False
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Hung(f"no answer within {TIMEOUT} s: {self.what}")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise Hung(f"no answer within {TIMEOUT} s: {self.what}") from None
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def until(self, marker: bytes, limit: int = 1 << 20) -> bytes | None:
        while True:
            idx = self.buf.find(marker)
            if idx >= 0:
                out = bytes(self.buf[:idx])
                del self.buf[:idx + len(marker)]
                return out
            if len(self.buf) > limit:
                raise BadFraming(f"no {marker!r} within {limit} bytes: {bytes(self.buf[:200])!r}")
            if not self._more():
                return None

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise BadFraming(f"the server closed after {len(self.buf)} of {n} announced bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self) -> bytes:
        while self._more():
            if len(self.buf) > MAX_BODY:
                raise BadFraming("an unframed body longer than the fuzz client reads")
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _parse_head(raw: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise BadFraming(f"bad status line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadFraming(f"bad response header line {line!r}")
        headers.append((name, value.strip(" \t")))
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def _chunked(conn: _Conn) -> bytes:
    body = bytearray()
    while True:
        size_line = conn.until(b"\r\n", 4096)
        if size_line is None:
            raise BadFraming("the server closed inside a chunked body")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadFraming(f"bad chunk size {size_line!r}") from None
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = conn.until(b"\r\n", 65536)
                if trailer is None:
                    raise BadFraming("the server closed inside the chunked trailer")
                if not trailer:
                    return bytes(body)
        body += conn.exactly(size)
        if conn.exactly(2) != b"\r\n":
            raise BadFraming("a chunk does not end with CRLF")
        if len(body) > MAX_BODY:
            raise BadFraming("a chunked body longer than the fuzz client reads")


def _frames(conn: _Conn) -> list[tuple[int, bytes]]:
    """Server WebSocket frames (unmasked) until a close frame or the end of the connection;
    compressed ones (permessage-deflate, RSV1) inflated."""
    frames: list[tuple[int, bytes]] = []
    inflater = zlib.decompressobj(-15)
    while True:
        if not conn.buf and not conn._more():
            return frames
        head = conn.exactly(2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if head[1] & 0x80:
            raise BadFraming("a server WebSocket frame is masked")
        if length == 126:
            length = int.from_bytes(conn.exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(conn.exactly(8), "big")
        if length > MAX_BODY:
            raise BadFraming("a WebSocket frame longer than the fuzz client reads")
        payload = conn.exactly(length)
        if head[0] & 0x40:
            payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
        frames.append((opcode, payload))
        if opcode == 0x8:
            return frames


def exchange(port: int, req: Request, timeout: float = TIMEOUT) -> Reply:
    """Send ``req`` on a new connection and read one answer (skipping 100 Continue)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        conn = _Conn(sock, start + timeout, req.describe()[:400])
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(req.encode())  # a server may answer and close before reading a body
            if req.then == "half-close":
                sock.shutdown(socket.SHUT_WR)
        reply = _read_reply(conn, req)
        reply.elapsed = time.monotonic() - start
        return reply


def _read_reply(conn: _Conn, req: Request) -> Reply:
    while True:
        head = conn.until(b"\r\n\r\n", 256 * 1024)
        if head is None:
            if conn.buf:
                raise BadFraming(f"the server closed inside the response head: {bytes(conn.buf[:200])!r}")
            return Reply(None, closed=True, reset=conn.reset)
        status, reason, headers = _parse_head(head)
        if status != 100:
            break
    reply = Reply(status, reason, headers)
    method = req.method.upper() if req.raw is None else b""
    te = (reply.header("Transfer-Encoding") or "").lower()
    length = reply.header("Content-Length")
    if status == 101:
        if reply.header("Upgrade") is None:
            raise BadFraming("101 without Upgrade")
        reply.frames = _frames(conn) if not req.headers_only else []
    elif req.headers_only or method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        pass
    elif "chunked" in te:
        reply.body = _chunked(conn)
    elif length is not None:
        if not length.isdigit():
            raise BadFraming(f"bad Content-Length {length!r}")
        reply.body = conn.exactly(int(length))
    else:
        reply.body = conn.rest()
    connection = (reply.header("Connection") or "").lower()
    if "close" in connection or status == 101 or conn.eof:
        reply.closed = True
    # The server said it closes: it must, promptly (no lingering half-open connection). Only the
    # server's own answer to a request it could not parse may carry a body after HEAD.
    closing = "close" in connection and not req.headers_only and status != 101
    if closing and conn.rest() and not (method == b"HEAD" and status >= 400):
        raise BadFraming("bytes after a response that announced Connection: close")
    reply.reset = conn.reset
    return reply
