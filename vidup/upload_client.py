"""`vidup upload FILE`: a resumable TUS upload (tuspy) with a progress bar, then, with ``--wait``,
following the video's transcode until it is COMPLETED or FAILED.

Resuming: the upload URL is remembered under a fingerprint of the file (its size, modification
time and first and last MiB), the server and the credential, in a small JSON file under the user
cache dir (``~/.cache/vidup/upload-urls.json``, or ``$VIDUP_CACHE_DIR``). Running the same
command again after an interruption (Ctrl-C, a dropped connection, a restarted ingest) continues
at the server's offset instead of starting over. The entry is forgotten once the upload is
complete, so uploading the same file again later makes a new video.

Exit codes: 0 when the upload finished (and, with ``--wait``, the video is COMPLETED); 1 when the
upload or the transcode failed; 2 for usage errors; 130 when interrupted (run it again to resume).
``--json`` prints the final status document, the same JSON as ``GET /videos/<id>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests
from tusclient import client
from tusclient.exceptions import TusCommunicationError

from vidup.localstack.binaries import cache_root

#: Bytes per PATCH by default: small enough for a live progress bar, large enough to keep requests
#: few. ``--chunk-mib`` lowers it behind a proxy that limits request bodies.
CHUNK_SIZE = 8 << 20
#: Bytes of the file's head and tail that go into its fingerprint.
FINGERPRINT_BYTES = 1 << 20
POLL_SECONDS = 1.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UploadError(Exception):
    """A failure the user can act on; the message says what happened and what to do."""


# -- remembering upload URLs -------------------------------------------------------------------


def url_store_path() -> Path:
    return cache_root() / "upload-urls.json"


class JsonUrlStorage:
    """tuspy's url storage (``tusclient.storage.interface.Storage``) as one small JSON file.

    tuspy's own FileStorage needs TinyDB; a dict in a JSON file, replaced atomically, is enough for
    a command line tool and survives a crash mid-write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".upload-urls-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get_item(self, key: str) -> str | None:
        entry = self._read().get(key)
        return str(entry["url"]) if isinstance(entry, dict) and entry.get("url") else None

    def set_item(self, key: str, url: str) -> None:
        data = self._read()
        data[key] = {"url": url, "updated": int(time.time())}
        self._write(data)

    def remove_item(self, key: str) -> None:
        data = self._read()
        if data.pop(key, None) is not None:
            self._write(data)


class FileFingerprint:
    """tuspy's fingerprinter (``tusclient.fingerprint.interface.Fingerprint``): what makes "the
    same upload". tuspy's default hashes only the first 64 KiB and the size, so two encodes of the
    same length would collide; this one adds the tail, the mtime, the endpoint and the credential
    (a URL from another server or tenant is never tried)."""

    def __init__(self, endpoint: str, token: str) -> None:
        self.scope = hashlib.sha256(f"{endpoint}\n{token}".encode()).hexdigest()[:16]

    def get_fingerprint(self, fs: IO[bytes]) -> str:
        h = hashlib.sha256()
        fs.seek(0, os.SEEK_END)
        size = fs.tell()
        fs.seek(0)
        h.update(fs.read(FINGERPRINT_BYTES))
        fs.seek(max(0, size - FINGERPRINT_BYTES))
        h.update(fs.read(FINGERPRINT_BYTES))
        mtime = 0
        with contextlib.suppress(AttributeError, OSError, ValueError):
            mtime = os.fstat(fs.fileno()).st_mtime_ns
        fs.seek(0)
        return f"vidup1:{self.scope}:size={size}:mtime={mtime}:sha256={h.hexdigest()}"


# -- progress ----------------------------------------------------------------------------------


class ProgressBar:
    """A one-line bar on a terminal (redrawn with ``\\r``), a line per 10 % step otherwise, so
    logs and CI output stay readable."""

    def __init__(self, label: str, stream: IO[str]) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self.last_text = ""
        self.last_key: tuple[int, str] | None = None

    def show(self, percent: float, detail: str = "", phase: str = "") -> None:
        """Draw ``percent``; off a terminal, only when the 10 % step or ``phase`` changes."""
        percent = max(0.0, min(100.0, percent))
        filled = int(percent / 100 * 30)
        text = f"{self.label:<9} [{'#' * filled}{'.' * (30 - filled)}] {percent:5.1f}%  {phase} {detail}".rstrip()
        if self.tty:
            if text != self.last_text:
                self.stream.write("\r\x1b[2K" + text)
                self.stream.flush()
        elif (int(percent // 10), phase) != self.last_key:
            self.stream.write(text + "\n")
            self.stream.flush()
        self.last_key = (int(percent // 10), phase)
        self.last_text = text

    def done(self) -> None:
        if self.tty and self.last_text:
            self.stream.write("\n")
            self.stream.flush()


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# -- the upload --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where to talk to: the ingest's base URL and its TUS endpoint."""

    base: str
    endpoint: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        """Accept the ingest's base URL (``https://videos.example.com``) or its ``/files/`` URL."""
        base = url.rstrip("/")
        if base.endswith("/files"):
            base = base[: -len("/files")]
        return cls(base=base, endpoint=base + "/files/")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _make_uploader(path: Path, target: Target, token: str, storage: JsonUrlStorage, chunk_size: int) -> Any:
    tus = client.TusClient(target.endpoint, headers=_auth(token))
    fingerprint = FileFingerprint(target.endpoint, token)
    options: dict[str, Any] = {
        "file_path": str(path), "chunk_size": chunk_size, "metadata": {"filename": path.name},
        "retries": 3, "retry_delay": 2, "store_url": True, "url_storage": storage, "fingerprinter": fingerprint,
    }
    try:
        return tus.uploader(**options)
    except TusCommunicationError:
        # The remembered upload is gone (expired, deleted, another stack): start a fresh one.
        with open(path, "rb") as f:
            storage.remove_item(fingerprint.get_fingerprint(f))
        try:
            return tus.uploader(**options)
        except TusCommunicationError as exc:
            raise UploadError(f"cannot reach the upload endpoint {target.endpoint}: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    content = getattr(exc, "response_content", None)
    text = content.decode(errors="replace").strip() if isinstance(content, bytes) else str(content or "")
    parts = [str(exc) if not status else f"HTTP {status}", text]
    return ": ".join(p for p in parts if p and p != "None")


def upload_file(path: Path, target: Target, token: str, err: IO[str], chunk_size: int = CHUNK_SIZE) -> str:
    """Upload ``path`` (resuming a remembered upload) and return the video's status URL."""
    storage = JsonUrlStorage(url_store_path())
    uploader = _make_uploader(path, target, token, storage, chunk_size)
    size = path.stat().st_size
    bar = ProgressBar("upload", err)
    try:
        if uploader.url and uploader.offset:
            err.write(f"vidup: resuming {path.name} at {_mib(uploader.offset)} of {_mib(size)}\n")
        if not uploader.url:
            uploader.set_url(uploader.create_url())
            uploader.offset = 0
        started, start_offset = time.monotonic(), uploader.offset
        bar.show(100.0 * uploader.offset / size if size else 100.0, f"{_mib(uploader.offset)}/{_mib(size)}")
        while uploader.offset < size:
            uploader.upload_chunk()
            rate = (uploader.offset - start_offset) / max(1e-6, time.monotonic() - started)
            bar.show(100.0 * uploader.offset / size, f"{_mib(uploader.offset)}/{_mib(size)}  {_mib(rate)}/s")
    except TusCommunicationError as exc:
        raise UploadError(f"upload failed: {_describe(exc)}; run the same command again to resume") from None
    finally:
        bar.done()
    upload_url = str(uploader.url)
    with open(path, "rb") as f:
        storage.remove_item(uploader.fingerprinter.get_fingerprint(f))
    headers = dict(uploader.request.response_headers) if uploader.request is not None else {}
    video_url = headers.get("video-location")
    if not video_url:
        head = requests.head(upload_url, headers={**_auth(token), "Tus-Resumable": "1.0.0"}, timeout=30)
        video_url = head.headers.get("Video-Location")
    if not video_url:
        video_url = f"{target.base}/videos/{upload_url.rstrip('/').rsplit('/', 1)[-1]}"
    return str(video_url)


# -- following the transcode -------------------------------------------------------------------


def fetch_status(video_url: str, token: str) -> dict[str, Any] | None:
    """The status document, or None while the video's resource does not exist yet."""
    r = requests.get(video_url, headers=_auth(token), timeout=30)
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        raise UploadError(f"GET {video_url}: HTTP {r.status_code}: {r.text.strip()}")
    return dict(r.json())


def follow(video_url: str, token: str, err: IO[str], timeout: float | None = None) -> dict[str, Any]:
    """Poll the status until COMPLETED or FAILED, drawing the transcode's progress."""
    bar = ProgressBar("transcode", err)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            doc = fetch_status(video_url, token)
            if doc is not None:
                bar.show(float(doc.get("progress") or 0), phase=str(doc.get("phase", "")))
                if doc["status"] in ("COMPLETED", "FAILED"):
                    return doc
            elif deadline is None or time.monotonic() < deadline:
                bar.show(0.0, phase="Registering")
            if deadline is not None and time.monotonic() >= deadline:
                raise UploadError(f"gave up waiting after {timeout:.0f} s; follow it at {video_url}")
            time.sleep(POLL_SECONDS)
    finally:
        bar.done()


def _summary(doc: dict[str, Any]) -> str:
    lines = [f"video {doc['id']}: {doc['status']} ({doc.get('progress', 0)}%)"]
    if doc["status"] == "FAILED":
        lines.append(f"  reason: {doc.get('reason')}: {doc.get('error')}")
    if doc.get("master_playlist_url"):
        lines.append(f"  master playlist: {doc['master_playlist_url']}")
    for r in doc.get("renditions") or []:
        lines.append(f"  {r['width']}x{r['height']} {r['bandwidth'] / 1e6:.2f} Mbit/s  {r['playlist_url']}")
    return "\n".join(lines)


def run(file: str, url: str | None, token: str | None, wait: bool, as_json: bool, timeout: float | None = None,
        out: IO[str] | None = None, err: IO[str] | None = None, chunk_size: int = CHUNK_SIZE) -> int:
    """The whole command; returns the exit code (see the module docstring)."""
    out = out or sys.stdout
    err = err or sys.stderr
    url = url or os.environ.get("VIDUP_URL", "")
    token = token or os.environ.get("VIDUP_TOKEN", "")
    path = Path(file)
    if not url or not token:
        err.write("vidup upload: needs --url and --token (or VIDUP_URL and VIDUP_TOKEN; see `vidup env`)\n")
        return EXIT_USAGE
    if not path.is_file():
        err.write(f"vidup upload: {file}: no such file\n")
        return EXIT_USAGE
    try:
        video_url = upload_file(path, Target.from_url(url), token, err, chunk_size)
        err.write(f"vidup: uploaded {path.name}; follow it at {video_url}\n")
        if wait:
            doc = follow(video_url, token, err, timeout)
        else:
            doc = fetch_status(video_url, token) or {"id": video_url.rsplit("/", 1)[-1], "status": "PENDING",
                                                     "url": video_url}
    except UploadError as exc:
        err.write(f"vidup upload: {exc}\n")
        return EXIT_FAILED
    except requests.RequestException as exc:
        err.write(f"vidup upload: cannot reach {url}: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.write("\nvidup upload: interrupted; run the same command again to resume\n")
        return EXIT_INTERRUPTED
    out.write((json.dumps(doc, indent=2) if as_json else _summary(doc)) + "\n")
    out.flush()
    if wait and doc["status"] != "COMPLETED":
        return EXIT_FAILED
    return EXIT_OK
