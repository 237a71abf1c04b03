"""Run a chaos soak on a fresh local stack and report its figures.

One function, :func:`run_soak`, for the bounded test and for ``bench/soak``: it starts a
:class:`~vidup.localstack.stack.Stack` (control plane, Redis, two ingest replicas sharing storage
and Redis as the chart runs them, the operator, FFmpeg workers), lets client threads upload while
the chaos loop kills components, then stops the chaos, lets everything settle, proves every
component still works with one clean upload per ingest replica, and audits (:mod:`vidup.soak.audit`).

Two ways to bound it: a number of uploads (the chaos lasts until every one of them is uploaded and
transcoded), or a duration (uploads keep starting and the chaos keeps going until it is up).
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vidup.localstack.stack import Stack
from vidup.soak import audit as checks
from vidup.soak import state
from vidup.soak.chaos import Chaos, ChaosLog
from vidup.soak.client import CUT_MODES, ClientPolicy, Uploader, UploadRecord
from vidup.soak.figures import format_report
from vidup.soak.media import Source, sources
from vidup.soak.watch import PhaseWatch

__all__ = ["SOAK_ENV", "SoakConfig", "SoakReport", "format_report", "run_soak"]

#: Every component of the soak's stack gets these. Fast encodes and short timers keep a run short
#: (a dead worker is noticed after 2 + 4 s, a dead operator's lease lapses after 3 s); the retry
#: budget is raised because the soak's kills are not the videos' fault, while the product still
#: (rightly) spends an attempt on every run a dead worker took down; rate limits are off.
SOAK_ENV = {
    "VIDUP_X264_PRESET": "ultrafast",
    "VIDUP_RETRY_BASE_SECONDS": "1",
    "VIDUP_MAX_ATTEMPTS": "10",
    "VIDUP_WORKER_HEARTBEAT_SECONDS": "2",
    "VIDUP_WORKER_HEARTBEAT_GRACE_SECONDS": "4",
    "VIDUP_OPERATOR_LEASE_SECONDS": "3",
    "VIDUP_RATE_LIMIT_REQUESTS": "1000000/minute",
    "VIDUP_RATE_LIMIT_CREATIONS": "1000000/minute",
}


@dataclass
class SoakConfig:
    #: Total uploads (the chaos lasts until all are done), or None to upload until ``duration``.
    uploads: int | None = 16
    #: Seconds of uploads and chaos; None to run until ``uploads`` are done.
    duration: float | None = None
    concurrency: int = 4
    ingest_replicas: int = 2
    workers: int = 2
    #: Uploads finished but not yet transcoded, beyond which no new upload starts.
    max_backlog: int = 4
    kill_interval: tuple[float, float] = (4.0, 8.0)
    #: In uploads mode the chaos goes on until at least this many kills (and the Redis restarts)
    #: happened, however fast the uploads were done: a quick machine must not make a gentle run.
    min_kills: int = 9
    redis_restarts: int = 1
    seed: int | None = None
    policy: ClientPolicy = field(default_factory=ClientPolicy)
    #: Longest the chaos phase may last in uploads mode (a stuck video must not hang the run).
    chaos_timeout: float = 900.0
    #: After the chaos: how long every video may take to become terminal.
    settle_timeout: float = 300.0


@dataclass
class SoakReport:
    config: SoakConfig
    seed: int
    records: list[UploadRecord]
    canaries: list[UploadRecord]
    chaos: ChaosLog
    audit: checks.Audit
    sources: list[Source]
    seconds: float
    stuck: list[str] = field(default_factory=list)
    #: ``time.time()`` when each video was first seen Completed
    completed_at: dict[str, float] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        chaos = [f"the chaos loop failed: {self.chaos.error}"] if self.chaos.error else []
        crashes = [f"CRASH {line}" for line in self.chaos.crashes]
        return self.audit.problems + self.stuck + crashes + chaos


def run_soak(config: SoakConfig, run_dir: Path, log: Callable[[str], None] = print) -> SoakReport:
    """Start a stack in ``run_dir``, soak it, stop it; the report says what held and what broke."""
    if config.uploads is None and config.duration is None:
        raise ValueError("bound the soak by uploads, duration or both")
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(4), "big")
    pool = sources()
    log(f"chaos soak, seed {seed}: starting the local stack in {run_dir} ...")
    stack = start_stack(run_dir, config)
    try:
        return _Run(stack, config, seed, pool, log).run()
    finally:
        stack.stop()


def start_stack(run_dir: Path, config: SoakConfig) -> Stack:
    """The soak's stack: ingest replicas on one storage and Redis, the operator, workers."""
    stack = Stack(run_dir, workers=config.workers, extra_env=dict(SOAK_ENV)).start()
    try:
        for index in range(1, config.ingest_replicas):
            stack.start_ingest(index)
    except BaseException:
        stack.stop()
        raise
    return stack


def _wait(check: Callable[[], bool], timeout: float, interval: float = 1.0) -> bool:
    """Poll ``check`` until true (True) or ``timeout`` (False); a check that raises is not true yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except Exception:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


class _Feed:
    """Hands out upload indexes to the client threads until the run says stop, holding new
    uploads back while the transcode backlog is full: uploads are far faster than transcodes here,
    and a run should keep both going while the chaos lasts rather than queue an hour of work."""

    def __init__(self, total: int | None, backlog: Callable[[], int], max_backlog: int) -> None:
        self.total = total
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.next = 0
        self.lock = threading.Lock()
        self.closed = threading.Event()

    def take(self) -> int | None:
        with self.lock:
            while not self.closed.is_set() and self.backlog() >= self.max_backlog:
                self.closed.wait(0.5)
            if self.closed.is_set() or (self.total is not None and self.next >= self.total):
                return None
            self.next += 1
            return self.next - 1


class _Run:
    """One soak on a running stack: uploads and chaos, then settling, canaries and the audit."""

    def __init__(self, stack: Stack, config: SoakConfig, seed: int, pool: list[Source],
                 log: Callable[[str], None]) -> None:
        assert stack.settings is not None
        self.stack = stack
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.pool = pool
        self.log = log
        self.replicas = [p.url for p in stack.processes if p.url]
        self.records: list[UploadRecord] = []
        self.clients: list[threading.Thread] = []
        self.watcher = PhaseWatch(stack, stack.settings.namespace)
        self.feed = _Feed(config.uploads, self.backlog, config.max_backlog)
        self.stop_clients = threading.Event()
        self.redis_at = self.rng.uniform(0.3, 0.6)
        self.chaos = Chaos(stack, random.Random(self.rng.random()), config.kill_interval,
                           redis_due=lambda: self.fraction_done() >= self.redis_at,
                           redis_restarts=config.redis_restarts)
        self.started = time.monotonic()

    # -- what the threads consult --------------------------------------------------------------

    def backlog(self) -> int:
        latest = self.watcher.latest_phases()
        return sum(1 for r in self.records if r.finished and latest.get(r.upload_id) not in state.TERMINAL)

    def fraction_done(self) -> float:
        """How far the run is: by the clock with a duration, else by finished uploads."""
        if self.config.duration is not None:
            return (time.monotonic() - self.started) / self.config.duration
        return sum(r.finished for r in self.records) / max(1, self.config.uploads or 1)

    def _client(self, uploader: Uploader, rng: random.Random) -> None:
        while (index := self.feed.take()) is not None:
            record = UploadRecord(index, rng.choice(self.pool))
            self.records.append(record)
            uploader.upload(record)
            self.log(f"  upload #{index} {record.source.label} {record.source.size / 1e6:.1f} MB: "
                     f"{'done' if record.finished else 'FAILED ' + record.error} after {record.patches} "
                     f"PATCHes ({sum(record.interruptions.values())} cut off, {record.server_failures} "
                     "failed by the server)")

    def chaos_over(self) -> bool:
        elapsed = time.monotonic() - self.started
        if not self.chaos.is_alive():  # the loop failed: the report says why
            return True
        if self.config.duration is not None:
            return elapsed >= self.config.duration
        if elapsed >= self.config.chaos_timeout:
            return True
        chaos = self.chaos.log
        rough_enough = (sum(chaos.kills.values()) >= self.config.min_kills
                        and chaos.redis_restarts >= self.config.redis_restarts)
        return rough_enough and not any(t.is_alive() for t in self.clients) and self.transcoded(self.records)

    def transcoded(self, records: list[UploadRecord]) -> bool:
        return state.all_terminal(self.stack, [r.upload_id for r in records if r.finished])

    # -- the phases ----------------------------------------------------------------------------

    def run(self) -> SoakReport:
        self.watcher.start()
        cut_modes = itertools.cycle(CUT_MODES)  # shared: every way of cutting off, however short the run
        self.clients = [
            threading.Thread(target=self._client, name=f"soak-client-{i}", daemon=True, args=(
                Uploader(self.replicas, self.stack.api_key, self.config.policy, random.Random(self.rng.random()),
                         self.stop_clients, cut_modes), random.Random(self.rng.random())))
            for i in range(self.config.concurrency)
        ]
        try:
            self.chaos.start()
            for thread in self.clients:
                thread.start()
            self.log(f"uploading through {len(self.replicas)} ingest replicas with {self.config.concurrency} "
                     f"clients; a kill every {self.config.kill_interval[0]:g}-{self.config.kill_interval[1]:g} s")
            _wait(self.chaos_over, float("inf"))
        finally:
            self.feed.closed.set()
            chaos_log = self.chaos.finish()
        self.log(f"chaos over after {time.monotonic() - self.started:.0f} s: {dict(chaos_log.kills)} kills, "
                 f"{chaos_log.redis_restarts} Redis restarts; settling ...")
        try:
            stuck = self.settle()
            canaries, canary_stuck = self.canaries()
            stuck += canary_stuck + self.quiet()
        finally:
            self.stop_clients.set()
            self.watcher.stop()
        return SoakReport(self.config, self.seed, self.records, canaries, chaos_log,
                          self.audit(self.records + canaries), self.pool, time.monotonic() - self.started, stuck,
                          dict(self.watcher.completed_at))

    def settle(self) -> list[str]:
        """Let the clients finish (no more chaos) and every video become terminal."""
        for thread in self.clients:
            thread.join(self.config.policy.deadline_seconds)
        if _wait(lambda: self.transcoded(self.records), self.config.settle_timeout):
            return []
        found = state.resources(self.stack)
        late = [f"{r.upload_id} ({state.phase_of(found.get(r.upload_id)) or 'no resource'})"
                for r in self.records if r.finished and state.phase_of(found.get(r.upload_id)) not in state.TERMINAL]
        return [f"STUCK: {len(late)} videos not Completed or Failed {self.config.settle_timeout:.0f} s after "
                f"the chaos: {', '.join(late[:5])}"]

    def canaries(self) -> tuple[list[UploadRecord], list[str]]:
        """One clean upload through each replica, transcoded: proof that every component works."""
        calm = ClientPolicy(interrupt=0.0, switch_replica=0.0, pace=0, deadline_seconds=120)
        canaries = []
        for offset, replica in enumerate(self.replicas):
            record = UploadRecord(len(self.records) + offset, self.pool[0])
            Uploader([replica], self.stack.api_key, calm, self.rng, threading.Event()).upload(record)
            canaries.append(record)
        if all(r.finished for r in canaries) and _wait(lambda: self.transcoded(canaries), 120):
            return canaries, []
        return canaries, ["STUCK: a clean upload after the chaos was not uploaded and transcoded in time"]

    def quiet(self) -> list[str]:
        """Nothing queued, started, locked or encoding any more, and every component running."""
        _wait(lambda: not state.leftovers(self.stack), 60)
        return [f"STUCK: {line}" for line in state.leftovers(self.stack) + state.dead_components(self.stack)]

    def audit(self, records: list[UploadRecord]) -> checks.Audit:
        assert self.stack.settings is not None
        storage = self.stack.settings.storage_dir
        found = state.resources(self.stack)
        audit = checks.Audit()
        checks.check_uploads(audit, records, found, storage)
        checks.check_resources(audit, records, found, self.watcher.snapshot(), state.completed_events(self.stack))
        checks.check_outputs(audit, found, storage)
        checks.check_upload_dir(audit, records, storage)
        runs = checks.count_job_runs(sorted((self.stack.run_dir / "logs").glob("worker-*.log")))
        job_ids = {str((body.get("status") or {}).get("jobId")) for body in found.values()}
        audit.repeated_runs = sum(1 for job_id, count in runs.items() if job_id in job_ids and count > 1)
        return audit
