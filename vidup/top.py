"""`vidup top`: a terminal view of a running vidup (the local stack or a cluster).

It reads what an operator on call looks at first: the transcode queue (waiting, running, retries
waiting their backoff, failed jobs), the workers (busy or idle, and on which job), the videos by
phase, and the most recent failures with their reason. Everything comes from the two places vidup
keeps state, read-only: Redis (RQ's queue, registries and worker hashes) and the Kubernetes API
(the VideoTranscode resources, the source of truth). A part that cannot be reached is shown as
unavailable instead of failing the whole view, since that is exactly when someone looks.

:func:`collect` reads, :func:`render` formats (pure), :func:`run` refreshes until Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import redis
from kubernetes import client, config
from rq import Queue, Worker

from vidup.localstack.stack import read_state
from vidup.resource import GROUP, PLURAL, VERSION, Phase
from vidup.settings import Settings

#: Plain ANSI: cursor home, clear screen (no curses, so any terminal and any pipe work).
CLEAR = "\x1b[H\x1b[2J"
DEFAULT_FAILURES = 5
PAGE = 500


@dataclass(frozen=True)
class Source:
    """Where to read: a Redis URL and queue, and a kubeconfig (None: the default one) and namespace."""

    redis_url: str
    kubeconfig: str | None
    namespace: str = "default"
    queue: str = Settings.queue
    label: str = ""


def source_from_state(run_dir: Path) -> Source:
    """The source of a local stack, from the state file it writes (``stack.json``)."""
    state = read_state(run_dir)
    if "redis_url" not in state:
        raise SystemExit(f"{run_dir}: the stack's state has no Redis URL (started by an older vidup?)")
    return Source(redis_url=state["redis_url"], kubeconfig=state["env"]["KUBECONFIG"],
                  namespace=state.get("namespace", "default"), queue=state.get("queue", Settings.queue),
                  label=f"stack {run_dir}")


@dataclass(frozen=True)
class WorkerRow:
    name: str
    state: str
    job_id: str | None = None


@dataclass(frozen=True)
class Failure:
    name: str
    reason: str
    message: str
    at: str


@dataclass
class Snapshot:
    taken_at: str
    source: str
    queue: str
    #: queued (waiting), running (started registry), scheduled (retries in backoff), failed (RQ's registry).
    jobs: dict[str, int] | None = None
    workers: list[WorkerRow] | None = None
    phases: dict[str, int] | None = None
    failures: list[Failure] = field(default_factory=list)
    #: Part -> why it could not be read.
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers or [] if w.state == "busy")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.workers is not None:
            doc["workers_busy"] = self.busy
            doc["workers_idle"] = len(self.workers) - self.busy
        return doc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_queue(connection: redis.Redis, name: str) -> tuple[dict[str, int], list[WorkerRow]]:
    """Queue depth by state and the workers listening on the queue, from RQ's own records."""
    queue = Queue(name, connection=connection)
    jobs = {
        "queued": queue.count,
        "running": queue.started_job_registry.count,
        "scheduled": queue.scheduled_job_registry.count,
        "failed": queue.failed_job_registry.count,
    }
    rows = []
    for worker in Worker.all(queue=queue):
        state = str(getattr(worker.get_state(), "value", worker.get_state()))
        try:
            job_id = worker.get_current_job_id() if state == "busy" else None
        except redis.RedisError:
            job_id = None
        rows.append(WorkerRow(worker.name, state, job_id))
    return jobs, sorted(rows, key=lambda r: r.name)


def list_videos(api: client.ApiClient, namespace: str) -> Iterator[dict[str, Any]]:
    """Every VideoTranscode in the namespace, page by page."""
    custom = client.CustomObjectsApi(api)
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE}
        if token:
            kwargs["_continue"] = token
        page = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _failed_at(obj: dict[str, Any]) -> str:
    """When a video failed: its completedAt, else its latest condition change, else its creation."""
    status = obj.get("status") or {}
    times = [c.get("lastTransitionTime") or "" for c in status.get("conditions") or []]
    return str(status.get("completedAt") or max(times, default="") or
               (obj.get("metadata") or {}).get("creationTimestamp") or "")


def summarize_videos(objs: Iterator[dict[str, Any]] | list[dict[str, Any]], failures: int = DEFAULT_FAILURES,
                     ) -> tuple[dict[str, int], list[Failure]]:
    """Counts by phase (every phase listed, a resource not yet seen by the operator as Pending) and
    the newest ``failures`` Failed videos."""
    phases = {p.value: 0 for p in Phase}
    failed: list[Failure] = []
    for obj in objs:
        status = obj.get("status") or {}
        phase = str(status.get("phase") or Phase.PENDING.value)
        phases[phase] = phases.get(phase, 0) + 1
        if phase == Phase.FAILED.value:
            failed.append(Failure(name=str((obj.get("metadata") or {}).get("name", "")),
                                  reason=str(status.get("reason") or ""), message=str(status.get("message") or ""),
                                  at=_failed_at(obj)))
    failed.sort(key=lambda f: f.at, reverse=True)
    return phases, failed[:failures]


def collect(source: Source, failures: int = DEFAULT_FAILURES) -> Snapshot:
    """Read one snapshot; a part that cannot be read is recorded in ``errors``."""
    snap = Snapshot(taken_at=_now(), source=source.label, queue=source.queue)
    connection = redis.Redis.from_url(source.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        snap.jobs, snap.workers = read_queue(connection, source.queue)
    except redis.RedisError as exc:
        snap.errors["redis"] = f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    try:
        with config.new_client_from_config(config_file=source.kubeconfig) as api:
            snap.phases, snap.failures = summarize_videos(list_videos(api, source.namespace), failures)
    except Exception as exc:  # unreachable API server, bad kubeconfig, no RBAC: show why
        snap.errors["kubernetes"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return snap


def _one_line(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render(snap: Snapshot) -> str:
    """The snapshot as text: one section per part, numbers as ``name value`` pairs."""
    lines = [f"vidup top  {snap.taken_at}" + (f"  ({snap.source})" if snap.source else "")]
    lines.append("")
    lines.append(f"QUEUE {snap.queue}")
    if snap.jobs is None:
        lines.append(f"  unavailable: {snap.errors.get('redis', '?')}")
    else:
        lines.append("  " + "   ".join(f"{k} {v}" for k, v in snap.jobs.items()))
    lines.append("")
    if snap.workers is None:
        lines.append("WORKERS")
        lines.append(f"  unavailable: {snap.errors.get('redis', '?')}")
    else:
        lines.append(f"WORKERS {len(snap.workers)}   busy {snap.busy}   idle {len(snap.workers) - snap.busy}")
        for w in snap.workers:
            lines.append(f"  {w.name:<32} {w.state:<9} {w.job_id or ''}".rstrip())
    lines.append("")
    if snap.phases is None:
        lines.append("VIDEOS")
        lines.append(f"  unavailable: {snap.errors.get('kubernetes', '?')}")
    else:
        lines.append(f"VIDEOS {sum(snap.phases.values())}")
        lines.append("  " + "   ".join(f"{k} {v}" for k, v in snap.phases.items()))
    lines.append("")
    lines.append("RECENT FAILURES")
    if snap.phases is not None and not snap.failures:
        lines.append("  none")
    for f in snap.failures:
        lines.append(f"  {f.at:<20} {f.name}  {f.reason}: {_one_line(f.message)}")
    return "\n".join(lines) + "\n"


def run(source: Source, once: bool = False, interval: float = 2.0, as_json: bool = False,
        failures: int = DEFAULT_FAILURES, out: TextIO = sys.stdout) -> int:
    """Print one snapshot (``once``) or redraw every ``interval`` seconds until Ctrl-C. Exit status
    1 when a part could not be read in a single snapshot, so scripts notice."""
    def text() -> tuple[str, Snapshot]:
        snap = collect(source, failures)
        return (json.dumps(snap.to_dict(), indent=2) + "\n" if as_json else render(snap)), snap

    if once:
        shown, snap = text()
        out.write(shown)
        out.flush()
        return 1 if snap.errors else 0
    try:
        while True:
            shown, _ = text()
            out.write(CLEAR + shown)
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
