"""The measurements behind ``bench/chunked``: one long video, single job vs chunks, on pinned cores.

One local control plane (etcd + kube-apiserver, with the CRDs) and one Redis serve every run
(:class:`vidup.localstack.stack.Stack` with no components of its own). Each run then starts, with the
product's own process definitions (:mod:`vidup.localstack.components`), a fresh operator and its RQ
workers on a queue of its own (so a run never sees another run's jobs or leader lease), the workers
under ``taskset -c CORE`` (their RQ work-horse and FFmpeg inherit the affinity; the bench checks it
in /proc for the worker and every descendant it sees), creates one VideoTranscode for the generated
source and times it from the create call to ``phase: Completed``. The operator, the API server,
etcd and Redis are not pinned.

The kill run (d) SIGKILLs the process group of one of the two workers (worker, work-horse and FFmpeg,
what a node crash does to a pod) once ``status.progress`` reaches the kill point, while it runs a
video chunk; the work thrown away is that chunk's encode time so far (now - the piece job's RQ
``started_at``). A replacement worker is started on the same core at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job

from vidup import chunking
from vidup.localstack import components
from vidup.localstack.processes import ManagedProcess
from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION, VideoSpec, VideoTranscodeObject
from vidup.storage.layout import upload_relpath

NAMESPACE = "default"
Log = Callable[[str], None]


def make_source(path: Path, seconds: int) -> float:
    """A 1080p30 H.264 + AAC source (testsrc2 + sine, a keyframe every 2 s as a phone writes);
    returns the seconds it took."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([
        "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", "60", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-f", "mp4", str(path),
    ], check=True)
    return time.perf_counter() - t0


def ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "ffmpeg: unknown version"


def cpus_allowed(pid: int) -> str:
    """``Cpus_allowed_list`` of a process ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def descendants(roots: set[int]) -> dict[int, int]:
    """Every live descendant of ``roots``: pid -> the root it descends from."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, int] = {}
    for pid in parent:
        seen = pid
        for _ in range(64):
            seen = parent.get(seen, 0)
            if seen in roots:
                found[pid] = seen
                break
            if seen <= 1:
                break
    return found


@dataclass
class Setup:
    """One configuration of the pipeline: the operator's chunk length and one worker per core."""

    key: str
    label: str
    chunk_seconds: int
    cores: tuple[int, ...]
    kill_at: int | None = None


@dataclass
class Pinned:
    """A worker we started, the core it is pinned to, and what the bench saw of its process tree."""

    process: ManagedProcess
    core: int
    #: (command name, Cpus_allowed_list) of the worker and every descendant seen while it ran.
    seen: set[tuple[str, str]] = field(default_factory=set)
    killed: bool = False


@dataclass
class Kill:
    worker: str
    piece: str
    progress: int
    #: Encode seconds the killed worker had spent on its chunk (now - the job's started_at).
    lost_seconds: float
    #: The other worker's piece and elapsed time at the same moment ("" if it ran no chunk).
    other: str = ""
    at_seconds: float = 0.0
    #: Epoch second of the kill.
    killed_at: float = 0.0


@dataclass
class RunResult:
    setup: Setup
    wall: float
    status: dict[str, Any]
    #: RQ timings (epoch seconds) of every piece job found: piece -> (started, ended).
    pieces: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: The ``whole`` job (the probe, or the whole encode when not chunked): (started, ended).
    whole: tuple[float, float] | None = None
    workers: list[Pinned] = field(default_factory=list)
    kill: Kill | None = None
    #: The resource's message when it ended Failed ("" when Completed).
    failed: str = ""

    @property
    def chunked(self) -> bool:
        return bool((self.status.get("chunks") or {}).get("total"))

    def chunk_encodes(self) -> list[float]:
        """Encode seconds of each video chunk (the killed chunk's rerun included)."""
        return [end - start for piece, (start, end) in sorted(self.pieces.items())
                if piece.startswith("c") and end > start]

    def piece_seconds(self, piece: str) -> float | None:
        start, end = self.pieces.get(piece, (0.0, 0.0))
        return end - start if end > start else None


def _timestamp(moment: Any) -> float:
    return float(moment.timestamp()) if moment is not None else 0.0


@dataclass
class Bench:
    """The shared control plane and Redis, the source, and the runs made on them."""

    run_dir: Path
    source: Path
    preset: str
    timeout: float
    log: Log = print
    stack: Stack | None = None
    running: list[ManagedProcess] = field(default_factory=list)
    _index: int = 0

    def start(self) -> Bench:
        self.log(f"starting the control plane and Redis in {self.run_dir} ...")
        self.stack = Stack(self.run_dir / "stack", workers=0, components=()).start()
        return self

    def stop(self) -> None:
        self._stop_processes()
        if self.stack is not None:
            self.stack.stop()

    def _stop_processes(self) -> None:
        for process in reversed(self.running):
            process.stop(grace=5)
        self.running.clear()

    @property
    def redis(self) -> redis.Redis:
        assert self.stack is not None and self.stack.redis is not None
        return redis.Redis.from_url(self.stack.redis.url)

    @property
    def storage_dir(self) -> Path:
        assert self.stack is not None and self.stack.settings is not None
        return self.stack.settings.storage_dir

    def env(self, setup: Setup, queue: str) -> dict[str, str]:
        assert self.stack is not None
        return {
            **self.stack.component_env(),
            "VIDUP_NAMESPACE": NAMESPACE,
            "VIDUP_QUEUE": queue,
            "VIDUP_CHUNK_SECONDS": str(setup.chunk_seconds),
            "VIDUP_X264_PRESET": self.preset,
        }

    # -- processes ---------------------------------------------------------------------------------

    def _next_index(self) -> int:
        self._index += 1
        return self._index

    def start_worker(self, env: dict[str, str], core: int) -> Pinned:
        """The product's worker process definition, run under ``taskset -c core`` (taskset execs it,
        so the pid, the process group and every child share the affinity from the first instruction)."""
        assert self.stack is not None
        process = components.worker_process(self.stack.run_dir, env, self._next_index())
        process = replace(process, argv=["taskset", "-c", str(core), *process.argv])
        self.running.append(process)
        process.start()
        return Pinned(process, core)

    def start_operator(self, env: dict[str, str]) -> ManagedProcess:
        assert self.stack is not None
        process = components.operator_process(self.stack.run_dir, env, self._next_index())
        self.running.append(process)
        return process.start()

    def wait_ready(self, operator: ManagedProcess, workers: list[Pinned], queue: str) -> None:
        """Until the operator leads (it logs so before starting Kopf) and every worker is registered
        on the queue, pinned to its core."""
        names = {w.process.name for w in workers}
        deadline = time.monotonic() + 60
        while True:
            operator.check_running()
            for w in workers:
                w.process.check_running()
            leading = "leader: reconciling" in operator.log_tail(200)
            registered = {w.name for w in Worker.all(connection=self.redis)} >= names
            if leading and registered:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"operator or workers not ready after 60 s (leading={leading}, "
                                 f"registered={registered}); logs in {self.stack.run_dir if self.stack else '?'}/logs")
            time.sleep(0.1)
        time.sleep(1.0)  # Kopf starts its watch just after the log line
        for w in workers:
            allowed = cpus_allowed(w.process.pid)
            if allowed != str(w.core):
                raise SystemExit(f"{w.process.name} is not pinned to core {w.core}: Cpus_allowed_list {allowed!r}")

    @staticmethod
    def sample_affinity(workers: list[Pinned]) -> None:
        live = {w.process.pid: w for w in workers if not w.killed and w.process.running()}
        for pid, w in live.items():
            w.seen.add((_comm(pid), cpus_allowed(pid)))
        for pid, root in descendants(set(live)).items():
            allowed = cpus_allowed(pid)
            if allowed:
                live[root].seen.add((_comm(pid), allowed))

    # -- resources ---------------------------------------------------------------------------------

    def custom(self) -> client.CustomObjectsApi:
        assert self.stack is not None
        return client.CustomObjectsApi(self.stack.api_client())

    def create(self, name: str) -> None:
        relpath = upload_relpath(name)
        target = self.storage_dir / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(self.source, target)  # the operator may remove the upload once done; the source stays
        body = VideoTranscodeObject(
            name, NAMESPACE, VideoSpec("demo", relpath, target.stat().st_size, f"{name}.mp4"),
        ).to_body()
        self.custom().create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

    def status(self, custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        return dict(body.get("status") or {})

    def delete(self, name: str) -> None:
        """Delete the resource while its operator still runs (it removes the outputs and its
        finalizer); strip the finalizer ourselves if that takes too long."""
        custom = self.custom()
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
            except ApiException as exc:
                if exc.status == 404:
                    return
            time.sleep(0.2)
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, name, {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )

    # -- RQ ----------------------------------------------------------------------------------------

    def job_times(self, job_id: str) -> tuple[float, float] | None:
        try:
            job = Job.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            return None
        return _timestamp(job.started_at), _timestamp(job.ended_at)

    def record_pieces(self, job_id: str, status: dict[str, Any], into: dict[str, tuple[float, float]]) -> None:
        total = int((status.get("chunks") or {}).get("total") or 0)
        for piece in [*chunking.pieces(total, True), chunking.STITCH] if total else []:
            times = self.job_times(chunking.piece_job_id(job_id, piece))
            if times is not None and times[0]:
                into[piece] = times

    def current_piece(self, worker: Pinned, job_id: str) -> tuple[str, float] | None:
        """The video chunk ``worker`` is encoding and the epoch second its job started, if any."""
        found = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker.process.name,
                                   connection=self.redis)
        current = found.get_current_job_id() if found is not None else None
        if not current or chunking.parent_job_id(current) != job_id:
            return None
        piece = current.split(chunking.PIECE_SEPARATOR, 1)[1] if chunking.PIECE_SEPARATOR in current else ""
        if not piece.startswith("c"):
            return None  # the audio or the stitch: not a chunk
        times = self.job_times(current)
        return (piece, times[0]) if times and times[0] else None

    # -- one run -----------------------------------------------------------------------------------

    def run(self, setup: Setup) -> RunResult:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        name = f"bench-{setup.key}-{uuid.uuid4().hex[:6]}"
        env = self.env(setup, queue)
        operator = self.start_operator(env)
        workers = [self.start_worker(env, core) for core in setup.cores]
        try:
            self.wait_ready(operator, workers, queue)
            return self._measure(setup, name, env, operator, workers)
        finally:
            with contextlib.suppress(Exception):
                self.delete(name)
            self._stop_processes()

    def _measure(self, setup: Setup, name: str, env: dict[str, str], operator: ManagedProcess,
                 workers: list[Pinned]) -> RunResult:
        custom = self.custom()
        pieces: dict[str, tuple[float, float]] = {}
        kill: Kill | None = None
        t0 = time.time()
        self.create(name)
        deadline = time.monotonic() + self.timeout
        last_sample = last_pieces = 0.0
        status: dict[str, Any] = {}
        while True:
            operator.check_running()
            status = self.status(custom, name)
            now = time.time()
            phase = status.get("phase")
            if phase in ("Completed", "Failed"):
                wall = now - t0
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{setup.label}: not Completed after {self.timeout:.0f} s; last status {status}")
            job_id = str(status.get("jobId") or "")
            if now - last_sample > 0.5:
                self.sample_affinity(workers)
                last_sample = now
            if job_id and now - last_pieces > 1.0:
                self.record_pieces(job_id, status, pieces)
                last_pieces = now
            if (setup.kill_at is not None and kill is None and job_id
                    and int(status.get("progress") or 0) >= setup.kill_at):
                kill = self._kill_one(workers, job_id, int(status.get("progress") or 0), env, t0)
            time.sleep(0.1)
        job_id = str(status.get("jobId") or "")
        self.record_pieces(job_id, status, pieces)
        failed = str(status.get("message") or "failed") if status.get("phase") == "Failed" else ""
        if failed:
            self.log(f"    FAILED: {failed} (status {status})")
        return RunResult(setup, wall, status, pieces, self.job_times(job_id), workers, kill, failed)

    def _kill_one(self, workers: list[Pinned], job_id: str, progress: int, env: dict[str, str],
                  t0: float) -> Kill | None:
        """SIGKILL the worker furthest into a video chunk (the worse case of the two) and start a
        replacement on its core; None (try again later) while neither encodes a chunk."""
        busy = []
        for w in workers:
            if w.killed:
                continue
            current = self.current_piece(w, job_id)
            if current is not None:
                busy.append((current[1], current[0], w))
        if not busy:
            return None
        busy.sort(key=lambda item: item[0])
        started, piece, victim = busy[0]
        self.sample_affinity(workers)
        killed_at = time.time()
        os.killpg(victim.process.pid, signal.SIGKILL)
        assert victim.process.popen is not None
        victim.process.popen.wait(timeout=10)
        victim.killed = True
        workers.append(self.start_worker(env, victim.core))
        other = ", ".join(f"{p} ({killed_at - s:.1f} s in)" for s, p, _ in busy[1:])
        kill = Kill(victim.process.name, piece, progress, killed_at - started, other, killed_at - t0, killed_at)
        self.log(f"    SIGKILLed {victim.process.name} (core {victim.core}) at progress {progress}, "
                 f"{kill.at_seconds:.1f} s into the run, {kill.lost_seconds:.1f} s into chunk {piece}; "
                 f"replacement started on core {victim.core}")
        return kill


# -- the report ------------------------------------------------------------------------------------


def best(results: list[RunResult]) -> RunResult:
    return min(results, key=lambda r: (bool(r.failed), r.wall))


def describe_pinning(result: RunResult) -> str:
    parts = []
    for w in result.workers:
        cpus = {allowed for _, allowed in w.seen}
        names = sorted({comm for comm, _ in w.seen})
        verdict = "OK" if cpus == {str(w.core)} else f"NOT PINNED: {sorted(cpus)}"
        parts.append(f"{w.process.name}{' (killed)' if w.killed else ''} core {w.core}: "
                     f"{'/'.join(names) or 'nothing sampled'} -> {verdict}")
    return "; ".join(parts)


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSES"


def report(runs: dict[str, list[RunResult]], kill: RunResult | None, log: Log = print) -> bool:
    """Print the table and the three figures; True when every target is met."""
    ok = True
    log("")
    log(f"{'run':<46}{'wall s':>9}{'best of':>9}{'chunks':>8}{'probe s':>9}{'chunk enc s (med)':>19}"
        f"{'audio s':>9}{'stitch s':>10}")
    rows = [(k, best(v), len(v)) for k, v in runs.items() if v]
    if kill is not None:
        rows.append(("d", kill, 1))
    for _key, r, n in rows:
        chunks = (r.status.get("chunks") or {}).get("total") or "-"
        probe = (f"{r.whole[1] - r.whole[0]:.1f}" if r.whole and r.whole[1] > r.whole[0] and r.chunked else "-")
        encodes = r.chunk_encodes()
        enc = f"{statistics.median(encodes):.1f}" if encodes else "-"
        audio, stitch = r.piece_seconds(chunking.AUDIO), r.piece_seconds(chunking.STITCH)
        log(f"{r.setup.label:<46}{r.wall:>9.1f}{n:>9}{chunks!s:>8}{probe:>9}{enc:>19}"
            f"{(f'{audio:.1f}' if audio else '-'):>9}{(f'{stitch:.1f}' if stitch else '-'):>10}"
            + (f"  FAILED after {r.wall:.1f} s: {r.failed}" if r.failed else ""))
    for key, results in runs.items():
        if len(results) > 1:
            log(f"  all runs of ({key}): " + ", ".join(f"{r.wall:.1f}" for r in results) + " s")
    log("")
    log("pinning (Cpus_allowed_list of each worker and every descendant sampled while it ran):")
    for _key, r, _n in rows:
        log(f"  {r.setup.label}: {describe_pinning(r)}")
    a, b, c = (best(runs[k]) if runs.get(k) else None for k in ("a", "b", "c"))
    log("")
    for done in (*(r for v in runs.values() for r in v), *([kill] if kill else [])):
        if done.failed:
            ok = False
            log(f"FAILED: {done.setup.label}: {done.failed}")
    a, b, c = (None if r is None or r.failed else r for r in (a, b, c))
    for maybe in (b, c, kill):
        if maybe is not None and not maybe.chunked:
            ok = False
            log(f"WARNING: {maybe.setup.label} was NOT chunked (no status.chunks): the worker did not answer "
                "'chunked' to the whole job, so its figures below measure the single job again")
    if a and c:
        speedup = a.wall / c.wall
        ok &= speedup >= 1.8
        log(f"{'speed-up (a)/(c), two workers vs the single job:':<52}{speedup:.2f}x  "
            f"[{verdict(speedup >= 1.8)} target >= 1.8x]")
    if a and b:
        overhead = b.wall / a.wall - 1
        ok &= overhead <= 0.05
        log(f"{'chunking overhead (b)/(a)-1, one worker:':<52}{100 * overhead:+.1f} %  "
            f"[{verdict(overhead <= 0.05)} target <= 5 %]")
    if kill is not None:
        reference = (c.chunk_encodes() if c else []) or kill.chunk_encodes()
        one_chunk = statistics.median(reference) if reference else 0.0
        if kill.kill is None:
            ok = False
            log("kill: no worker was running a video chunk once progress reached the kill point: nothing killed")
        else:
            k = kill.kill
            fine = one_chunk > 0 and k.lost_seconds <= one_chunk
            ok &= fine
            losses = (kill.status.get("chunks") or {}).get("failures")
            log(f"{f'work lost to a SIGKILL at progress {k.progress}:':<52}{k.lost_seconds:.1f} s of encode "
                f"(chunk {k.piece} on {k.worker}) vs one chunk's encode {one_chunk:.1f} s "
                f"(median, two workers)  [{verdict(fine)} target <= one chunk]")
            if c:
                log(f"  wall time with the kill {kill.wall:.1f} s vs {c.wall:.1f} s without "
                    f"({kill.wall - c.wall:+.1f} s); status.chunks.failures {losses}"
                    + (f"; the other worker was on {k.other}" if k.other else ""))
            rerun = kill.pieces.get(k.piece, (0.0, 0.0))[0]
            if rerun > k.killed_at:
                log(f"  chunk {k.piece} started again {rerun - k.killed_at:.1f} s after the kill "
                    "(dead-worker detection + requeue)")
    return ok
