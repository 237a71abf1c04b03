"""Through RQ: real Redis, real ``python -m vidup_transcoder.worker`` processes started by
``worker_process`` (the code ``vidup up`` uses), real FFmpeg."""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from rq import Queue, Retry, Worker
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus
from transcoder_media import make_source

from vidup.localstack.components import worker_process
from vidup.localstack.processes import ManagedProcess, pid_alive, wait_until
from vidup.transcode_jobs import (
    JOB_FUNCTION,
    TranscodeRequest,
    TranscodeResult,
    backoff_intervals,
    progress_channel,
    progress_key,
)
from vidup_transcoder.encoding import job_timeout_for

# Worker names must be unique per Redis: a SIGKILLed worker's registration outlives it for a while.
_INDEXES = itertools.count(random.randint(1_000, 9_000_000))


@dataclass
class Cluster:
    run_dir: Path
    storage: Path
    connection: redis.Redis
    queue: Queue
    env: dict[str, str]
    workers: list[ManagedProcess] = field(default_factory=list)

    def start_workers(self, n: int, **extra_env: str) -> list[ManagedProcess]:
        env = {**self.env, **extra_env}
        started = [worker_process(self.run_dir, env, next(_INDEXES)).start() for _ in range(n)]
        self.workers += started

        def registered() -> bool:
            for w in started:
                w.check_running()
            names = {w.name for w in Worker.all(queue=self.queue)}
            return all(w.name in names for w in started)

        wait_until(registered, 30, f"{n} worker(s) to register")
        return started

    def source(self, name: str, **kw: object) -> str:
        make_source(self.storage / "uploads" / name, **kw)  # type: ignore[arg-type]
        return f"uploads/{name}"

    def enqueue(self, name: str, renditions: tuple[int, ...] = (720, 480), seconds: float = 4) -> Job:
        req = TranscodeRequest(name, f"uploads/{name}", f"outputs/{name}", list(renditions), 2)
        return self.queue.enqueue(
            JOB_FUNCTION, req.to_dict(), job_id=f"vt-{name}-{uuid.uuid4().hex[:6]}",
            job_timeout=job_timeout_for(seconds), retry=Retry(max=2, interval=backoff_intervals(2, 1, 4)),
        )

    def wait_finished(self, job: Job, timeout: float = 120) -> TranscodeResult:
        def done() -> bool:
            for w in self.workers:
                if w.running() is False and w.popen is not None and w.popen.returncode not in (None, -9):
                    w.check_running()
            return job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)

        wait_until(done, timeout, f"job {job.id} to finish", interval=0.2)
        assert job.get_status() == JobStatus.FINISHED, self.logs()
        return TranscodeResult.from_dict(job.return_value(refresh=True))

    def progress(self, job: Job) -> int:
        raw = self.connection.hget(progress_key(job.id), "progress")
        return int(raw) if raw is not None else -1

    def process_of(self, job: Job) -> ManagedProcess:
        job.refresh()
        return next(w for w in self.workers if w.name == job.worker_name)

    def partials(self) -> list[str]:
        outputs = self.storage / "outputs"
        return sorted(p.name for p in outputs.iterdir() if p.name.startswith(".")) if outputs.exists() else []

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log_tail(40)}" for w in self.workers)


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    storage = tmp_path / "storage"
    (storage / "uploads").mkdir(parents=True)
    queue_name = f"transcode-test-{uuid.uuid4().hex[:8]}"
    env = {
        "VIDUP_REDIS_URL": redis_url, "VIDUP_QUEUE": queue_name, "VIDUP_STORAGE_DIR": str(storage),
        "VIDUP_X264_PRESET": "ultrafast",
        # fast failure detection so the dead-worker test takes seconds
        "VIDUP_WORKER_HEARTBEAT_SECONDS": "1", "VIDUP_WORKER_HEARTBEAT_GRACE_SECONDS": "3",
        "VIDUP_WORKER_SWEEP_SECONDS": "1",
    }
    connection = redis.Redis.from_url(redis_url)
    c = Cluster(tmp_path, storage, connection, Queue(queue_name, connection=connection), env)
    try:
        yield c
    finally:
        for w in c.workers:
            w.stop(grace=5)
        connection.close()


def ffmpeg_descendants(pid: int) -> list[int]:
    """FFmpeg processes anywhere below ``pid`` (worker -> work-horse -> ffmpeg)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        names[int(entry)] = stat[stat.index("(") + 1 : stat.rindex(")")]
        parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found = []
    for p in parents:
        q = p
        while q in parents and q > 1:
            q = parents[q]
            if q == pid:
                if names[p] == "ffmpeg":
                    found.append(p)
                break
    return found


def test_progress_arrives_in_increasing_order_and_reaches_100(cluster: Cluster) -> None:
    cluster.start_workers(1, VIDUP_X264_PRESET="veryfast")
    cluster.source("prog", size="1280x720", seconds=6)
    pubsub = cluster.connection.pubsub()
    # subscribe before enqueueing so no update can be missed
    pubsub.psubscribe(progress_channel("vt-prog-*"))
    job = cluster.enqueue("prog", seconds=6)
    values: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not values or values[-1] != 100):
        message = pubsub.get_message(timeout=1.0)
        if message and message["type"] == "pmessage":
            assert message["channel"].decode() == progress_channel(job.id)
            values.append(int(message["data"]))
    pubsub.close()
    result = cluster.wait_finished(job)
    assert result.status == "completed"
    assert values and values[-1] == 100, (values, cluster.logs())
    assert values == sorted(set(values)), f"progress went backwards or repeated: {values}"
    assert len(values) >= 3 and values[0] < 50, values
    stored = cluster.connection.hgetall(progress_key(job.id))
    assert int(stored[b"progress"]) == 100 and abs(int(stored[b"updated"]) - time.time()) < 120
    assert (cluster.storage / result.master_playlist).is_file()


def test_sigkilled_worker_job_is_requeued_and_completed_by_another(cluster: Cluster) -> None:
    # "medium" makes the encode slow enough to be caught in the middle
    cluster.start_workers(2, VIDUP_X264_PRESET="medium")
    cluster.source("victim", size="1280x720", seconds=6, rate=25)
    job = cluster.enqueue("victim", seconds=6)
    wait_until(lambda: cluster.progress(job) >= 5, 60, "the encode to be under way")
    victim = cluster.process_of(job)
    encoders = ffmpeg_descendants(victim.pid)
    assert encoders, "the job's ffmpeg should be running under the worker"
    victim.signal(signal.SIGKILL)
    # the work-horse and its ffmpeg die with the worker instead of encoding on unsupervised
    wait_until(lambda: not any(pid_alive(p) for p in encoders), 10, "the killed worker's ffmpeg to exit")

    result = cluster.wait_finished(job, timeout=180)
    assert result.status == "completed"
    job.refresh()
    assert job.worker_name != victim.name
    assert job.meta.get("vidup_abandoned") == 1
    assert [(r.width, r.height) for r in result.renditions] == [(1280, 720), (854, 480)]
    assert (cluster.storage / result.master_playlist).is_file()
    assert cluster.partials() == [], "the dead attempt's staging directory must be gone"


def test_two_workers_run_two_jobs_at_the_same_time(cluster: Cluster) -> None:
    cluster.start_workers(2, VIDUP_X264_PRESET="veryfast")
    jobs = []
    for name in ("left", "right"):
        cluster.source(name, size="1280x720", seconds=4)
        jobs.append(cluster.enqueue(name))

    def both_running() -> bool:
        return all(j.get_status(refresh=True) == JobStatus.STARTED for j in jobs)

    wait_until(both_running, 60, "both jobs to run at once", interval=0.05)
    results = [cluster.wait_finished(j) for j in jobs]
    assert all(r.status == "completed" for r in results)
    for j in jobs:
        j.refresh()
    assert len({j.worker_name for j in jobs}) == 2


def test_stopped_job_kills_ffmpeg_and_removes_its_temporary_output(cluster: Cluster) -> None:
    (worker,) = cluster.start_workers(1, VIDUP_X264_PRESET="medium")
    cluster.source("stopme", size="1280x720", seconds=6, rate=25)
    job = cluster.enqueue("stopme", seconds=6)
    wait_until(lambda: cluster.progress(job) >= 2, 60, "the encode to be under way")
    encoders = ffmpeg_descendants(worker.pid)
    assert encoders and cluster.partials(), "ffmpeg should be writing into a staging directory"
    send_stop_job_command(cluster.connection, job.id)
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.STOPPED, 30, "the job to be stopped")
    wait_until(lambda: not any(pid_alive(p) for p in encoders), 10, "ffmpeg to exit")
    wait_until(lambda: cluster.partials() == [], 10, "the staging directory to be removed")
    assert not (cluster.storage / "outputs" / "stopme").exists()
    # the worker itself survives and takes the next job
    worker.check_running()
    cluster.source("after", size="640x360", seconds=2)
    assert cluster.wait_finished(cluster.enqueue("after", renditions=(360,), seconds=2)).status == "completed"


# -- stopping a worker (a rolling update): drain, then hand the running job back ---------------------


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def exited(worker: ManagedProcess, cluster: Cluster, timeout: float) -> int:
    """Wait for ``worker`` to exit; return its exit code and stop watching it."""
    assert worker.popen is not None
    try:
        code = worker.popen.wait(timeout=timeout)
    except Exception as e:
        raise AssertionError(f"{worker.name} did not exit:\n{worker.log_tail()}") from e
    cluster.workers.remove(worker)
    return code


def worker_key(worker: ManagedProcess) -> str:
    return Worker.redis_worker_namespace_prefix + worker.name


def signal_mask(status: Path, field: str) -> int:
    """A signal mask (``SigCgt``, ``SigBlk``...) of a process or thread, from its /proc status file."""
    return int(next(line.split()[1] for line in status.read_text().splitlines() if line.startswith(f"{field}:")), 16)


def catches_sigterm(pid: int) -> bool:
    """RQ installs its handlers only after registering the worker (and starting its scheduler)."""
    return bool(signal_mask(Path(f"/proc/{pid}/status"), "SigCgt") & (1 << (signal.SIGTERM - 1)))


def test_only_the_workers_main_thread_takes_stop_signals(cluster: Cluster) -> None:
    """Every thread of a worker but the main one blocks SIGTERM and SIGINT, so a stop interrupts the
    main thread's wait for the horse at once: one taken by another thread waited for the horse's
    exit or the next heartbeat alarm (30 s) before the drain began."""
    (worker,) = cluster.start_workers(1, VIDUP_X264_PRESET="ultrafast")
    cluster.source("masks", size="640x360", seconds=2)
    job = cluster.enqueue("masks", renditions=(360,), seconds=2)
    assert cluster.wait_finished(job).status == "completed"  # RQ's pubsub and the drain watcher run
    tasks = Path(f"/proc/{worker.pid}/task").iterdir()
    masks = {int(task.name): signal_mask(task / "status", "SigBlk") for task in tasks}
    stop = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
    assert masks.pop(worker.pid) & stop == 0, "the main thread must take the stop"
    assert len(masks) >= 2, masks  # RQ's pubsub thread and the drain watcher at least
    assert all(mask & stop == stop for mask in masks.values()), {t: hex(m) for t, m in masks.items()}


@pytest.mark.parametrize("how", ["drain-time-up", "second-signal"])
def test_stopped_worker_hands_its_running_job_back_at_once(cluster: Cluster, how: str) -> None:
    # the second-signal case drains for longer than the test waits: only the second signal can end it
    drain = "1" if how == "drain-time-up" else "600"
    (worker,) = cluster.start_workers(1, VIDUP_X264_PRESET="medium", VIDUP_WORKER_DRAIN_SECONDS=drain)
    cluster.source("handback", size="1280x720", seconds=30, rate=25)
    # Made before the encode starts: generating it mid-encode once let a fast encode finish first.
    cluster.source("behind", size="640x360", seconds=2)
    job = cluster.enqueue("handback", seconds=30)
    retries = job.retries_left
    wait_until(lambda: cluster.progress(job) >= 2, 90, "the encode to be under way")
    encoders = ffmpeg_descendants(worker.pid)
    assert encoders and cluster.partials(), "ffmpeg should be writing into a staging directory"
    horse = parent_pid(encoders[0])
    assert horse != worker.pid
    behind = cluster.enqueue("behind", renditions=(360,), seconds=2)  # waits behind: one busy worker

    if how == "second-signal":
        # Redis holds writes for longer than a heartbeat: RQ's alarm fires while the stop handler
        # waits to record the stop, and once unwound it, so the drain never began (seen in CI).
        cluster.connection.execute_command("CLIENT", "PAUSE", "2500", "WRITE")
    worker.signal(signal.SIGTERM)
    if how == "second-signal":
        wait_until(lambda: cluster.connection.hexists(worker_key(worker), "shutdown_requested_date"), 30,
                   "the worker to start draining")
        time.sleep(1.5)  # RQ ignores a repeated stop signal within a second of the first
        assert job.get_status(refresh=True) == JobStatus.STARTED, "the first signal must only start the drain"
        worker.signal(signal.SIGTERM)

    wait_until(lambda: job.get_status(refresh=True) == JobStatus.QUEUED, 30, "the job to be handed back")
    assert exited(worker, cluster, 30) == 0, worker.log_tail()
    wait_until(lambda: not any(pid_alive(p) for p in [horse, *encoders]), 10, "the horse and ffmpeg to exit")
    job.refresh()
    assert cluster.queue.get_job_ids() == [job.id, behind.id], "handed back to the front of the queue"
    assert job.retries_left == retries == 2, "a rolling update must not spend a retry"
    assert job.meta.get("vidup_handed_back") == 1 and "vidup_abandoned" not in job.meta
    assert job.worker_name is None and job.started_at is None
    assert job.id not in cluster.queue.failed_job_registry
    assert job.id not in cluster.queue.started_job_registry
    assert job.latest_result() is None, "no failure may be recorded"
    assert int(cluster.connection.hget(worker_key(worker), "failed_job_count") or 0) == 0
    assert cluster.partials() == [], "the stopped attempt's staging directory must be gone"

    # a worker of the new version picks it up first and completes it
    (successor,) = cluster.start_workers(1, VIDUP_X264_PRESET="ultrafast")
    result = cluster.wait_finished(job, timeout=240)
    assert result.status == "completed"
    assert (cluster.storage / result.master_playlist).is_file()
    job.refresh()
    assert job.worker_name == successor.name
    assert job.meta.get("vidup_handed_back") == 1 and job.retries_left == 2
    assert cluster.wait_finished(behind).status == "completed"


def test_job_that_finishes_within_the_drain_time_completes_before_the_worker_exits(cluster: Cluster) -> None:
    (worker,) = cluster.start_workers(1, VIDUP_X264_PRESET="veryfast", VIDUP_WORKER_DRAIN_SECONDS="300")
    cluster.source("finishes", size="1280x720", seconds=4)
    job = cluster.enqueue("finishes")
    wait_until(lambda: cluster.progress(job) >= 1, 60, "the encode to be under way")
    worker.signal(signal.SIGTERM)
    assert exited(worker, cluster, 240) == 0, worker.log_tail()
    # RQ records the stop request only when it arrives while the worker is busy
    assert cluster.connection.hget(worker_key(worker), "shutdown_requested_date"), "the job was already done"
    assert job.get_status(refresh=True) == JobStatus.FINISHED, worker.log_tail()
    result = TranscodeResult.from_dict(job.return_value(refresh=True))
    assert result.status == "completed"
    assert (cluster.storage / result.master_playlist).is_file()
    job.refresh()
    assert job.worker_name == worker.name and "vidup_handed_back" not in job.meta


def test_idle_worker_exits_at_once_on_sigterm(cluster: Cluster) -> None:
    (worker,) = cluster.start_workers(1, VIDUP_WORKER_DRAIN_SECONDS="300")
    wait_until(lambda: catches_sigterm(worker.pid), 30, "the worker to handle SIGTERM")
    worker.signal(signal.SIGTERM)
    assert exited(worker, cluster, 20) == 0, worker.log_tail()
    assert worker.name not in {w.name for w in Worker.all(queue=cluster.queue)}
