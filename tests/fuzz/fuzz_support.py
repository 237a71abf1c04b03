"""The fuzz harness: one real ingest (the ``IngestFactory`` of the ingest tests: ``python -m
vidup_ingest`` on the session's kube-apiserver and Redis), the state a request may change (files
on the shared storage, VideoTranscode resources), and the invariants every case is held to:

* never a 5xx, never a hang (``fuzz_http.TIMEOUT``), never a malformed answer;
* the ingest's master and workers are the same processes afterwards (no crash, no respawn), no
  traceback reached its log, and ``/healthz`` still answers;
* a request that was not accepted changed nothing: the same files with the same bytes, the same
  resources at the same resource versions; only accepted tus requests may change state;
* every finished (non-partial) upload on the storage has its VideoTranscode.

``COUNTS`` counts the cases run per route; the conftest prints it and writes build/fuzz-report.txt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
from fuzz_http import Reply, Request, exchange
from hypothesis import HealthCheck, settings
from ingest_support import Ingest
from kubernetes import client

from vidup.resource import GROUP, PLURAL, VERSION

COUNTS: Counter[str] = Counter()
SECONDS: Counter[str] = Counter()
#: (route, "1xx".."4xx", a 5xx code, or "None": no answer) -> count: how deep the cases got
CLASSES: Counter[tuple[str, str]] = Counter()

#: Log lines that mean a request crashed something inside the ingest.
CRASH_PATTERNS = re.compile(
    r"Traceback \(most recent call last\)|Error handling request|WORKER TIMEOUT|Worker \(pid:\d+\) (was sent|exited)"
    r"|Exception in thread|Socket error processing request"
)
#: A marker planted in files the HTTP API must never serve (outside the HLS output directory).
SECRET = b"vidup-fuzz-secret-9f1c2b"

#: VIDUP_FUZZ_DEEP=1: fresh random cases on every run (and ten times as many) instead of the
#: derandomized ones CI reproduces; VIDUP_FUZZ_SCALE multiplies the number of cases either way.
DEEP = os.environ.get("VIDUP_FUZZ_DEEP", "") not in ("", "0")
SCALE = float(os.environ.get("VIDUP_FUZZ_SCALE", "") or (10 if DEEP else 1))


def fuzz_settings(examples: int) -> settings:
    """Derandomized (the same cases on every run, so CI is reproducible) unless VIDUP_FUZZ_DEEP=1."""
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        derandomize=not DEEP,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


# -- state -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    files: dict[str, str]  # path under the storage root -> sha256 of its bytes
    videos: dict[str, str]  # VideoTranscode name -> resourceVersion

    def diff(self, other: State) -> str:
        lines = []
        for label, a, b in (("file", self.files, other.files), ("video", self.videos, other.videos)):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    lines.append(f"{label} {key}: {a.get(key)} -> {b.get(key)}")
        return "\n".join(lines)


class StateProbe:
    """Reads the state requests may change, hashing only files whose stat changed."""

    def __init__(self, storage: Path, api: client.ApiClient, namespace: str) -> None:
        self.storage = storage
        self.objects = client.CustomObjectsApi(api)
        self.namespace = namespace
        self._cache: dict[str, tuple[tuple[int, int, int], str]] = {}

    def files(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for dirpath, _dirs, names in os.walk(self.storage):
            for name in names:
                if name.endswith(".tmp"):
                    continue  # an info being replaced right now (os.replace makes it atomic)
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, self.storage)
                try:
                    st = os.stat(path)
                    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                    cached = self._cache.get(rel)
                    if cached is None or cached[0] != stamp:
                        with open(path, "rb") as f:
                            cached = (stamp, hashlib.sha256(f.read()).hexdigest())
                        self._cache[rel] = cached
                except FileNotFoundError:
                    continue
                out[rel] = cached[1]
        return out

    def videos(self) -> dict[str, str]:
        result = self.objects.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in result.get("items", [])}

    def snapshot(self) -> State:
        return State(self.files(), self.videos())


# -- the harness -------------------------------------------------------------------------------


@dataclass
class Fuzzer:
    """Runs one case at a time against ``ingest`` and checks every invariant after it."""

    ingest: Ingest
    probe: StateProbe
    #: bytes that may appear in answers only from inside an HLS output directory or the web app
    secret: bytes = SECRET
    state: State = field(init=False)
    workers: set[int] = field(init=False)
    log_pos: int = field(init=False)
    session: requests.Session = field(init=False)
    _infos_checked: set[tuple[str, str]] = field(init=False, default_factory=set)
    #: the case before this one: a crash noticed now may be its doing (threads outlive answers)
    previous: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.session = requests.Session()
        self.workers = set(self.ingest.worker_pids())
        assert self.workers, "the ingest has no workers"
        self.log_pos = self.ingest.process.log_path.stat().st_size
        self.state = self.probe.snapshot()

    @property
    def port(self) -> int:
        return self.ingest.port

    def resync(self) -> None:
        """After setup requests (made outside the fuzz): take their state as the new baseline."""
        self.check_alive("setup")
        self.state = self.probe.snapshot()

    def run(self, route: str, req: Request, *, may_change: bool = False, answer_required: bool = True) -> Reply:
        """One case: send ``req``, check the invariants, return the answer.

        ``may_change``: an accepted answer (< 400) may change state (tus requests do); a 4xx that
        names a created upload in ``Location`` (creation-with-upload whose first chunk was refused)
        may create exactly that upload, empty.
        """
        COUNTS[route] += 1
        start = time.monotonic()
        try:
            reply = exchange(self.port, req)
        except AssertionError as exc:  # Hung, BadFraming
            raise AssertionError(f"{type(exc).__name__} on {route}: {exc}\nrequest: {req.describe()}\n"
                                 f"ingest log:\n{self.new_log()}") from None
        CLASSES[route, f"{reply.status // 100}xx" if reply.status and reply.status < 500 else str(reply.status)] += 1
        what = f"{route}: {req.describe()}\n-> {reply.summary()}"
        assert reply.status is not None or not answer_required, f"the server closed without answering\n{what}"
        assert (reply.status or 0) < 500 or _unsupported_coding(req, reply), \
            f"5xx\n{what}\ningest log:\n{self.new_log()}"
        self.check_alive(what)
        after = self.probe.snapshot()
        if after != self.state:
            self._check_change(reply, after, may_change, what)
        self.state = after
        self.previous = what
        SECONDS[route] += time.monotonic() - start
        return reply

    def _check_change(self, reply: Reply, after: State, may_change: bool, what: str) -> None:
        status = reply.status or 0
        diff = self.state.diff(after)
        location = reply.header("Location")
        if may_change and 0 < status < 400:
            return
        if may_change and location and status < 500:
            upload_id = location.rstrip("/").rsplit("/", 1)[-1]
            changed = (set(self.state.files) ^ set(after.files)) | {
                k for k in self.state.files if k in after.files and self.state.files[k] != after.files[k]}
            allowed = {f"uploads/{upload_id}", f"uploads/{upload_id}.info", f"uploads/{upload_id}.offset"}
            if changed <= allowed and all(k not in self.state.files for k in changed) \
                    and after.videos == self.state.videos:
                empty = hashlib.sha256(b"").hexdigest()
                assert after.files.get(f"uploads/{upload_id}", empty) == empty, \
                    f"a refused first chunk left bytes behind\n{what}"
                return
        raise AssertionError(f"a request that was not accepted changed state:\n{diff}\n{what}")

    def check_alive(self, what: str) -> None:
        self.ingest.process.check_running()
        workers = set(self.ingest.worker_pids())
        log = self.new_log()
        before = f"the case before:\n{self.previous}"
        assert workers == self.workers, \
            f"ingest workers changed {self.workers} -> {workers} (a crash)\n{what}\n{before}\n{log}"
        crash = CRASH_PATTERNS.search(log)
        assert crash is None, f"the ingest logged {crash.group(0)!r}\n{what}\n{before}\n{log}"
        r = self.session.get(f"{self.ingest.url}/healthz", timeout=10)
        assert r.status_code == 200, f"/healthz answered {r.status_code} after\n{what}"

    def new_log(self) -> str:
        path = self.ingest.process.log_path
        with open(path, "rb") as f:
            f.seek(self.log_pos)
            data = f.read()
        self.log_pos += len(data)
        return data.decode("utf-8", "replace")

    def check_handed_over(self) -> None:
        """Every finished, non-partial upload has its VideoTranscode (an accepted upload is never
        silently left untranscoded). Only infos that changed since the last check are read."""
        for path, digest in self.state.files.items():
            if not path.endswith(".info") or (path, digest) in self._infos_checked:
                continue
            try:
                info = json.loads((self.probe.storage / path).read_bytes())
            except (FileNotFoundError, ValueError):
                continue
            if info.get("completed_at") and info.get("concat") != "partial" and "gone" not in info.get("extra", {}):
                assert info.get("handed_over") and info["id"] in self.state.videos, \
                    f"finished upload {info['id']} has no VideoTranscode: {info}"
            self._infos_checked.add((path, digest))


def _unsupported_coding(req: Request, reply: Reply) -> bool:
    """The one 5xx HTTP asks for on a client's mistake: 501 for a transfer coding the server does
    not implement (RFC 9112 section 6.1), answered by the HTTP parser before the app sees anything."""
    te = [v.strip().lower() for k, v in req.headers if k.strip().lower() == b"transfer-encoding"]
    raw_te = req.raw is not None and b"transfer-encoding" in req.raw.lower()
    return reply.status == 501 and (raw_te or any(v != b"chunked" for v in te)) and reply.closed


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
