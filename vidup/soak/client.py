"""A TUS client that interrupts itself: the soak's uploader.

Real clients lose connections in every way there is, and a resuming client may land on any ingest
replica behind the load balancer. This one does that on purpose, at random: a PATCH is cut off
mid-body by closing the socket (FIN), by resetting it (RST), or by simply going silent with the
connection left open (a stalled client, which the next request must take over); then it resumes
the tus way, HEAD for the server's offset and PATCH from there, often on the other replica.
Requests that fail because the chaos loop killed the replica answering them are retried the same
way. PATCH bodies are paced so that uploads stay in flight long enough for the kills to hit them.

Creation responses can be lost too (the replica dies between creating the upload and answering);
the client cannot know the id of such an upload, so each creation attempt carries a unique file
name in ``Upload-Metadata`` and the audit accounts for every upload a lost answer left behind.
"""

from __future__ import annotations

import base64
import contextlib
import random
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from vidup.soak.media import Source

TUS = {"Tus-Resumable": "1.0.0"}
#: How a PATCH is cut off: FIN, RST, or silence with the connection left open.
CUT_MODES = ("close", "reset", "stall")
#: Bytes per socket write of a PATCH body; pacing sleeps between them.
SLICE = 64 * 1024


@dataclass(frozen=True)
class ClientPolicy:
    """How rough the client is. Probabilities are per PATCH (interrupt) and per resume (switch)."""

    interrupt: float = 0.35
    switch_replica: float = 0.5
    min_chunk: int = 128 * 1024
    max_chunk: int = 2 * 1024 * 1024
    #: Body pace per upload, bytes per second (0: as fast as the socket takes it): slow enough that
    #: uploads are in flight for seconds, when the kills of ingest replicas can hit them.
    pace: float = 1024 * 1024
    #: Give up (and count the upload as lost) after this long.
    deadline_seconds: float = 600.0


@dataclass
class UploadRecord:
    """One upload as the client saw it; the audit checks the server side against it."""

    index: int
    source: Source
    upload_id: str = ""
    #: File names of creation attempts whose answer never came (each may have made an upload).
    lost_creations: list[str] = field(default_factory=list)
    filename: str = ""
    bytes_sent: int = 0
    patches: int = 0
    interruptions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CUT_MODES, 0))
    #: Requests that failed on the server's side: refused connections, resets, 409/423/5xx.
    server_failures: int = 0
    resumes: int = 0
    replica_switches: int = 0
    finished: bool = False
    #: ``time.time()`` when the client learned that the server holds every byte
    finished_at: float = 0.0
    error: str = ""


@dataclass
class PatchResult:
    sent: int
    status: int | None = None
    offset: int | None = None
    interrupted: str = ""
    error: str = ""
    stale: socket.socket | None = None


def _metadata(filename: str) -> str:
    return "filename " + base64.b64encode(filename.encode()).decode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """Status and headers of an HTTP/1.1 response (the body is not needed)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a response")
        buffer += chunk
    head = buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


class Uploader:
    """Uploads one source through any of ``replicas``, interrupting itself per ``policy``."""

    def __init__(self, replicas: Sequence[str], token: str, policy: ClientPolicy, rng: random.Random,
                 stop: threading.Event, cut_modes: Iterator[str] | None = None) -> None:
        """``cut_modes`` may be shared by several uploaders (``itertools.cycle(CUT_MODES)``), so
        that even a short run cuts PATCHes off in every way; by default each picks at random."""
        self.replicas = list(replicas)
        self.cut_modes = cut_modes
        self.token = token
        self.policy = policy
        self.rng = rng
        self.stop = stop
        self.auth = {"Authorization": f"Bearer {token}"}

    # -- one upload ----------------------------------------------------------------------------

    def upload(self, record: UploadRecord) -> UploadRecord:
        """Create, send with interruptions, resume until the server holds every byte."""
        deadline = time.monotonic() + self.policy.deadline_seconds
        data = record.source.path.read_bytes()
        stale: list[socket.socket] = []
        try:
            replica = self._create(record, len(data), self.rng.choice(self.replicas), deadline)
        except RuntimeError as exc:
            record.error = str(exc)
            return record
        try:
            offset: int | None = 0
            while True:
                if self.stop.is_set():
                    record.error = f"stopped at offset {offset}"
                    return record
                if time.monotonic() > deadline:
                    record.error = f"gave up at offset {offset} after {self.policy.deadline_seconds:.0f} s"
                    return record
                if offset is None:  # resume: ask (maybe another replica) where the server is
                    record.resumes += 1
                    if self.rng.random() < self.policy.switch_replica:
                        replica = self._other(replica)
                        record.replica_switches += 1
                    offset, replica = self._head(record, replica, deadline)
                    if offset is None:
                        return record
                if offset >= len(data):
                    record.finished, record.finished_at = True, time.time()
                    return record
                result = self._patch(record, replica, data, offset)
                if result.stale is not None:
                    stale.append(result.stale)
                if result.status == 204 and result.offset is not None:
                    offset = result.offset
                    for s in stale:  # the stalled ones were taken over by now
                        s.close()
                    stale.clear()
                    continue
                if not result.interrupted:
                    record.server_failures += 1
                    time.sleep(self.rng.uniform(0.05, 0.5))
                offset = None
        finally:
            for s in stale:
                s.close()

    def _other(self, replica: str) -> str:
        others = [r for r in self.replicas if r != replica]
        return self.rng.choice(others) if others else replica

    def _create(self, record: UploadRecord, length: int, replica: str, deadline: float) -> str:
        while True:
            filename = f"soak-{record.index}-{uuid.uuid4().hex[:8]}.mp4"
            try:
                r = requests.post(f"{replica}/files/", headers={
                    **TUS, **self.auth, "Upload-Length": str(length), "Upload-Metadata": _metadata(filename),
                }, timeout=15)
            except requests.RequestException:
                r = None
            if r is not None and r.status_code == 201:
                record.upload_id = r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
                record.filename = filename
                return replica
            if r is None or r.status_code >= 500:
                record.lost_creations.append(filename)  # it may exist: the audit accounts for it
            elif r.status_code not in (423, 429):
                raise RuntimeError(f"creation refused: {r.status_code} {r.text.strip()}")
            record.server_failures += 1
            if time.monotonic() > deadline:
                raise RuntimeError("could not create the upload before the deadline")
            time.sleep(self.rng.uniform(0.2, 1.0))
            replica = self._other(replica)

    def _head(self, record: UploadRecord, replica: str, deadline: float) -> tuple[int | None, str]:
        """The server's offset, asking replicas in turn until one answers; None when the upload
        is gone (404/410/403: a loss) or the deadline passed."""
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                r = requests.head(f"{replica}/files/{record.upload_id}", headers={**TUS, **self.auth}, timeout=15)
            except requests.RequestException:
                r = None
            if r is not None and r.status_code == 200:
                return int(r.headers["Upload-Offset"]), replica
            if r is not None and r.status_code in (403, 404, 410):
                record.error = f"HEAD answered {r.status_code}: the upload is gone"
                return None, replica
            record.server_failures += 1
            time.sleep(self.rng.uniform(0.1, 0.8))
            replica = self._other(replica)
        record.error = record.error or "no replica answered HEAD before the deadline"
        return None, replica

    def _patch(self, record: UploadRecord, replica: str, data: bytes, offset: int) -> PatchResult:
        """One PATCH of a random-sized chunk from ``offset``, perhaps cut off on purpose."""
        size = min(len(data) - offset, self.rng.randint(self.policy.min_chunk, self.policy.max_chunk))
        body = memoryview(data)[offset:offset + size]
        mode = ""
        cut = size
        if self.rng.random() < self.policy.interrupt:
            mode = next(self.cut_modes) if self.cut_modes is not None else self.rng.choice(CUT_MODES)
            cut = self.rng.randint(0, size - 1)
        record.patches += 1
        result = self._send_patch(replica, record.upload_id, offset, body, cut, mode)
        record.bytes_sent += result.sent
        if result.interrupted:
            record.interruptions[result.interrupted] += 1
        return result

    def _send_patch(self, replica: str, upload_id: str, offset: int, body: memoryview, cut: int,
                    mode: str) -> PatchResult:
        url = urlsplit(replica)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        head = (f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: {host}:{port}\r\nTus-Resumable: 1.0.0\r\n"
                f"Authorization: Bearer {self.token}\r\nUpload-Offset: {offset}\r\n"
                f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        sent = 0
        try:
            sock = socket.create_connection((host, port), timeout=30)
        except OSError as exc:
            return PatchResult(0, error=str(exc))
        keep_open = False
        try:
            sock.sendall(head)
            started = time.monotonic()
            while sent < cut:
                n = min(SLICE, cut - sent)
                sock.sendall(body[sent:sent + n])
                sent += n
                if self.policy.pace > 0:
                    ahead = sent / self.policy.pace - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            if mode:
                if mode == "stall":  # silent, connection open: the resume must take it over
                    keep_open = True
                    return PatchResult(sent, interrupted=mode, stale=sock)
                if mode == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return PatchResult(sent, interrupted=mode)
            status, headers = _read_response(sock)
            new_offset = int(headers["upload-offset"]) if "upload-offset" in headers else None
            return PatchResult(sent, status=status, offset=new_offset)
        except (OSError, ValueError, KeyError) as exc:
            return PatchResult(sent, error=str(exc))
        finally:
            if not keep_open:
                with contextlib.suppress(OSError):
                    sock.close()
