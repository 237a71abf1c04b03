"""``python -m vidup_transcoder.worker``: an RQ worker on the transcode queue, configured by VIDUP_*.

A thin wrapper around RQ's forking ``Worker`` that adds what a video worker needs:

* a short heartbeat (VIDUP_WORKER_HEARTBEAT_SECONDS, TTL = heartbeat + VIDUP_WORKER_HEARTBEAT_GRACE_SECONDS)
  instead of RQ's 60-second floor, and a sweep every VIDUP_WORKER_SWEEP_SECONDS that requeues jobs
  of dead workers (:mod:`vidup_transcoder.recovery`), so a SIGKILLed worker costs seconds, not minutes;
* a work-horse (and through it FFmpeg) that dies with its worker instead of running on unsupervised;
* removal of a job's staging directory (or, with a bucket, its scratch copies) whenever its
  work-horse was killed (a stopped job);
* a bounded drain on SIGTERM/SIGINT (VIDUP_WORKER_DRAIN_SECONDS, set below the pod's
  terminationGracePeriodSeconds): the running job may finish as in RQ's warm shutdown, but when the
  drain time is up -- or at a second signal -- the work-horse is killed and the job is put back at the
  front of its queue, same id, no retry spent (:meth:`TranscodeWorker.hand_back`), so a rolling update
  loses no work and no time to the heartbeat timeout;
* a Redis outage (a restart, a failover) costs neither the worker nor its running encode: heartbeats
  that fail are skipped, and when RQ gives up its loop on a lost connection the worker waits for
  Redis and starts working again (:func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from rq import Queue, Worker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import clean_registries
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_registration import clean_worker_registry

from vidup import logs
from vidup.settings import Settings, env_float, env_int
from vidup.storage import Blobs, FileBlobs, open_blobs
from vidup_transcoder import metrics
from vidup_transcoder.package_store import package_store_for
from vidup_transcoder.recovery import remove_job_partials, requeue_abandoned
from vidup_transcoder.runner import die_with_parent

log = logging.getLogger("vidup_transcoder.worker")

#: How often the drain watcher looks at the deadline (the hand-back happens at most this late).
DRAIN_POLL_SECONDS = 0.2
#: How long a stopping worker waits for RQ's scheduler process before killing it.
SCHEDULER_STOP_SECONDS = 5.0


class TranscodeWorker(Worker):
    """RQ's forking worker with fast dead-worker recovery, cleanup of killed horses and a bounded
    drain on shutdown."""

    def __init__(self, *args: Any, storage_dir: Path, blobs: Blobs | None = None, heartbeat_grace: int = 20,
                 sweep_seconds: int = 5, drain_seconds: float = 25.0, **kwargs: Any) -> None:
        # set before RQ's constructor, which already reads dequeue_timeout
        self.storage_dir = storage_dir
        # What a killed horse leaves is local (staging or scratch), but where depends on the store.
        self.package_store = package_store_for(blobs if blobs is not None else FileBlobs(storage_dir), storage_dir)
        self.heartbeat_grace = heartbeat_grace
        self.sweep_seconds = sweep_seconds
        self.drain_seconds = drain_seconds
        self._parent_pid = os.getpid()
        # Drain state. The lock orders the watcher thread's kill against the main thread starting and
        # ending a job's monitoring, so a horse is only killed while it is this job's and unreaped.
        self._drain_lock = threading.Lock()
        self._drain_deadline: float | None = None  # time.monotonic(); set by the signal handlers
        self._drain_watcher: threading.Thread | None = None
        self._monitored_job_id: str | None = None
        self._hand_back_job_id: str | None = None
        kwargs["maintenance_interval"] = sweep_seconds
        super().__init__(*args, **kwargs)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's, with the job and video ids bound to every line logged while the job runs: here and
        in the work-horse, which inherits them through the fork."""
        with logs.bound(job_id=job.id, video_id=job_video_id(job)):
            super().execute_job(job, queue)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """How long the job's StartedJobRegistry entry outlives the last heartbeat: short, so a dead
        worker's job expires in tens of seconds (RQ adds a fixed 60 s)."""
        interval = int(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            interval = int(max(1, min(job.timeout - working_time, interval)))
        return interval + self.heartbeat_grace

    @property
    def dequeue_timeout(self) -> int:
        """Wake up from BLPOP often enough for an idle worker to run the dead-worker sweep."""
        return max(1, self.sweep_seconds)

    def clean_registries(self) -> None:
        """RQ's maintenance, with the abandoned-job requeue first, under the same per-queue lock so
        RQ's cleanup and ours never handle one job twice."""
        for queue in self.queues:
            if not queue.acquire_maintenance_lock():
                continue
            try:
                requeue_abandoned(queue)
                clean_registries(queue, self._exc_handlers)
                clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)
            except StopRequested:
                raise  # an idle worker's SIGTERM handler raises it wherever the loop is, often here
            except Exception:
                self.log.exception("maintenance of queue %s failed", queue.name)
            finally:
                queue.release_maintenance_lock()
        self.last_cleaned_at = now()  # type: ignore[assignment]  # RQ annotates it as None

    def stop_scheduler(self) -> None:
        """RQ's, bounded. RQ SIGTERMs its scheduler process and joins it without a timeout; a stop that
        comes while the scheduler is still starting (before it installs its own handlers) can be lost
        in the child, and the worker then never exits (seen in CI: an idle worker stopped right after
        start hung until killed). Wait a few seconds, then kill it: its Redis locks expire on their own."""
        process = self.scheduler._process if self.scheduler else None
        if process is None or not process.pid:
            return
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGTERM)
        process.join(SCHEDULER_STOP_SECONDS)
        if process.is_alive():
            self.log.warning("the scheduler process %s did not stop; killing it", process.pid)
            process.kill()
            process.join()

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        """RQ's heartbeats while a job runs, surviving a Redis outage. RQ lets the connection error
        out of its horse monitor, the worker quits and its encode dies with it (seen in the chaos
        soak: every busy worker died when Redis restarted). The horse itself treats Redis as best
        effort; so does this: the encode goes on, and the next heartbeat after Redis is back
        registers the worker again (RQ recreates a worker hash that vanished)."""
        try:
            super().maintain_heartbeats(job, execution)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            self.log.warning("could not record the heartbeat of job %s (%s); the job goes on", job.id, exc)

    def setup_work_horse_signals(self) -> None:
        """In the work-horse: die with the worker (Linux), so a SIGKILLed worker takes its encode along."""
        super().setup_work_horse_signals()
        die_with_parent()
        if os.getppid() != self._parent_pid:  # the worker died before the line above took effect
            os._exit(1)

    # -- shutdown: a bounded drain, then the job goes back to the queue ------------------------------
    #
    # RQ's warm shutdown waits for the running job however long it takes; Kubernetes then SIGKILLs the
    # pod at the end of its grace period and the job sits STARTED until its heartbeat expires, when a
    # sweep requeues it and spends a retry. Instead, the first signal sets a drain deadline (a second
    # one moves it to now) and a watcher thread, at the deadline, kills the horse through RQ's own
    # stopped-job path (``_stopped_job_id`` + ``kill_horse``, which kills the horse's process group,
    # FFmpeg included); ``_handle_stopped_job`` then requeues the job instead of failing it, and the
    # worker loop exits because a stop was requested.
    #
    # The handlers store the deadline themselves and leave the killing to the watcher: a handler must
    # never wait for a lock the interrupted main thread may hold. They hold back the heartbeat alarm
    # while they run (:func:`alarm_held`): RQ's horse monitor raises out of a SIGALRM handler every
    # heartbeat, which cut a stop short before RQ recorded it (CI saw no drain start in 30 s).

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM/SIGINT: RQ's warm shutdown, plus the drain deadline if a job is running."""
        with alarm_held():
            if self.get_state() == WorkerStatus.BUSY:
                self._end_drain_by(time.monotonic() + self.drain_seconds)
                self._stop_requested = True  # as RQ's _shutdown does
                self.log.info("stop requested: the running job has %gs to finish before it is handed back",
                              self.drain_seconds)
            super().request_stop(signum, frame)  # idle: raises StopRequested, the worker exits at once

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """A further signal while a job runs hands it back now; RQ's cold shutdown would kill the horse
        and exit, leaving the job STARTED until its heartbeat expires. Idle, it is RQ's cold shutdown."""
        with alarm_held():
            if self._monitored_job_id is None:
                super().request_force_stop(signum, frame)
                return
            requested = self._shutdown_requested_date
            if requested is not None and now() - requested < timedelta(seconds=1):
                return  # RQ's guard: the same stop delivered twice (e.g. by a pool and by the terminal)
            self._end_drain_by(time.monotonic())
            self.log.warning("second stop signal: handing the running job back now")

    def _end_drain_by(self, deadline: float) -> None:
        if self._drain_deadline is None or deadline < self._drain_deadline:
            self._drain_deadline = deadline

    def _watch_drain(self) -> None:
        """Watcher thread: once the drain deadline has passed, hand back whatever job is running."""
        while True:
            time.sleep(DRAIN_POLL_SECONDS)
            deadline = self._drain_deadline
            if deadline is not None and time.monotonic() >= deadline:
                with self._drain_lock:
                    self._kill_for_hand_back()

    def _kill_for_hand_back(self) -> None:
        """Kill the monitored job's horse, marked for hand-back (caller holds ``_drain_lock``)."""
        job_id = self._monitored_job_id
        if job_id is None or not self.horse_pid or self._stopped_job_id == job_id:
            return  # idle, horse already reaped, or already being stopped (a user's stop wins)
        self.log.warning("shutting down: killing the work-horse of job %s to hand the job back", job_id)
        self._hand_back_job_id = job_id
        self._stopped_job_id = job_id
        self.kill_horse()

    def _handle_stopped_job(self, job: Job, queue: Queue, execution: Execution) -> None:
        if job.id != self._hand_back_job_id:
            super()._handle_stopped_job(job, queue, execution)
            return
        self._stopped_job_id = None
        self.hand_back(job, queue, execution)

    def hand_back(self, job: Job, queue: Queue, execution: Execution) -> None:
        """Put a job whose horse was killed for shutdown back at the front of its queue, same id.

        Like :func:`~vidup_transcoder.recovery.requeue_abandoned`, minus the retry: a rolling update
        is not the job's fault. It never reaches ``handle_job_failure`` (no FailedJobRegistry entry, no
        failure count); ``job.meta["vidup_handed_back"]`` counts these. A job the horse finished (or
        failed, or scheduled for retry) just before it was killed is left as it is.
        """
        job.refresh()  # the horse may have saved fields since the dequeue
        status = job.get_status(refresh=False)
        if status != JobStatus.STARTED:
            self.log.info("job %s ended (%s) before it could be handed back", job.id, status)
            return
        job.meta["vidup_handed_back"] = int(job.meta.get("vidup_handed_back", 0)) + 1
        job.started_at = None
        job.worker_name = None
        with self.connection.pipeline() as pipeline:
            pipeline.multi()  # one transaction (and what enqueue_job expects of a caller's pipeline)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)  # leaves StartedJobRegistry
            queue.enqueue_job(job, pipeline=pipeline, at_front=True)
            pipeline.execute()
        self.log.warning("handed job %s back to the front of queue %s", job.id, queue.name)

    def subscribe(self) -> None:
        with stop_signals_blocked():  # RQ's pubsub thread starts here
            super().subscribe()

    def monitor_work_horse(self, job: Job, queue: Queue, execution: Any) -> None:
        if self._drain_watcher is None:
            self._drain_watcher = threading.Thread(target=self._watch_drain, name="vidup-drain", daemon=True)
            with stop_signals_blocked():
                self._drain_watcher.start()
        with self._drain_lock:
            self._monitored_job_id = job.id
        horse_pid = self.horse_pid  # RQ zeroes it once the horse is reaped
        metrics.ENCODES_RUNNING.inc()
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            metrics.ENCODES_RUNNING.dec()
            self._record_metrics(job, horse_pid)
            with self._drain_lock:
                self._monitored_job_id = None
                if self._hand_back_job_id == job.id:
                    self._hand_back_job_id = None
                    if self._stopped_job_id == job.id:  # the horse exited 0 just before the kill
                        self._stopped_job_id = None
            try:
                for path in remove_job_partials(job, self.package_store):
                    self.log.info("removed staging directory %s of job %s", path, job.id)
            except Exception:
                self.log.exception("could not remove staging output of job %s", job.id)


    def _record_metrics(self, job: Job, horse_pid: int) -> None:
        """Count the job the horse just ran, from the record it left in the job's meta. A job
        handed back for shutdown is not counted: it runs again elsewhere."""
        if self._hand_back_job_id == job.id:
            return
        try:
            record = job.get_meta(refresh=True).get(metrics.META_KEY)
        except Exception as exc:  # Redis away, or the job deleted meanwhile: count what we know
            self.log.warning("could not read the measurements of job %s: %s", job.id, exc)
            record = None
        metrics.record_job(record, horse_pid, stopped=self._stopped_job_id == job.id)


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Start the worker's threads in here: they inherit a signal mask that keeps SIGTERM and SIGINT
    away from them, so the kernel delivers a stop to the main thread.

    Why: a process-wide signal may go to any thread that does not block it, and Python runs the
    handler only in the main thread, at its next bytecode. The main thread sits in ``wait4`` for
    the horse, which only a signal delivered to the main thread interrupts: a stop taken by RQ's
    pubsub thread waited for the horse's exit or the next heartbeat alarm. A stop arriving in here
    stays pending and reaches the main thread when the block ends.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def alarm_held() -> Iterator[None]:
    """Run a signal handler's body in here: a SIGALRM arriving meanwhile is only noted, and its
    handler runs when the body is done, as if the alarm had come just after it.

    Why: RQ's horse monitor arms an alarm each heartbeat whose handler raises, and Python runs it
    in the main thread at its next bytecode, so inside whatever handler is running there. A stop
    handler writing to Redis (RQ's shutdown date) was unwound halfway, and the stop was half done.
    Blocking SIGALRM in the main thread would not help: another thread would take it and Python
    would still run the handler in the main thread. What is left is the few bytecodes before the
    swap below.
    """
    frames: list[FrameType | None] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: frames.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
    if frames and callable(previous):
        previous(signal.SIGALRM, frames[0])  # RQ's monitor catches what this raises, as ever


def job_video_id(job: Job) -> str | None:
    """The video a transcode job is about (its request's ``video_id``), for the logs; None if the
    job is not one of ours."""
    try:
        request = job.args[0] if job.args else None
    except Exception:  # arguments RQ cannot load: the job fails on its own, the logs go on
        return None
    return str(request["video_id"]) if isinstance(request, dict) and request.get("video_id") else None


def build_worker(settings: Settings, name: str | None = None) -> TranscodeWorker:
    connection = redis.Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue, connection=connection)
    return TranscodeWorker(
        [queue],
        name=name or f"{socket.gethostname()}.{os.getpid()}",
        connection=connection,
        storage_dir=settings.storage_dir,
        blobs=open_blobs(settings),
        job_monitoring_interval=env_int("VIDUP_WORKER_HEARTBEAT_SECONDS", 5),
        heartbeat_grace=env_int("VIDUP_WORKER_HEARTBEAT_GRACE_SECONDS", 20),
        sweep_seconds=env_int("VIDUP_WORKER_SWEEP_SECONDS", 5),
        drain_seconds=env_float("VIDUP_WORKER_DRAIN_SECONDS", 25.0),
    )


def wait_for_redis(url: str, interval: float = 1.0) -> None:
    """Block until Redis answers. In a cluster the workers may start before Redis does; RQ exits
    on a refused connection, which turns a normal install into restarts (CrashLoopBackOff)."""
    connection = redis.Redis.from_url(url)
    try:
        while True:
            try:
                connection.ping()
                return
            except redis.exceptions.ConnectionError as exc:
                log.warning("waiting for Redis: %s", exc)
                time.sleep(interval)
    finally:
        connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidup_transcoder.worker", description=__doc__)
    parser.add_argument("--name", help="worker name (default: host.pid.random, unique per start)")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--log-level", default=os.environ.get("VIDUP_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logs.configure("worker", args.log_level.upper())  # RQ adds no handler of its own once root has one
    settings = Settings.from_env()
    # Unique per start: RQ refuses a name whose previous owner's key has not expired yet (minutes
    # after a SIGKILL), and in a container the pid is always 1, so host.pid would crash-loop a
    # worker restarted in place. A dead run is still found by its heartbeat.
    name = args.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    with stop_signals_blocked():  # the metrics server's thread
        metrics.serve_from_env()  # here, not in the loop below: one server for every restart of RQ's loop
    born = False
    while True:
        wait_for_redis(settings.redis_url)
        worker = build_worker(settings, name)
        if born:
            forget_own_registration(worker)
        born = True
        try:
            worker.work(burst=args.burst, logging_level=args.log_level.upper(), with_scheduler=True)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("lost Redis while the worker shut down: %s", exc)  # RQ's teardown writes to it
            with contextlib.suppress(Exception):
                worker.unsubscribe()  # the rest of the teardown: stop its pub/sub thread
        if args.burst or worker._shutdown_requested_date is not None:
            return 0
        # RQ quits its loop on any unhandled error, in practice Redis going away (a restart, a
        # failover) between a job and the next dequeue; a supervisor would restart us, but the
        # local stack has none and a pod restart costs a back-off: wait for Redis, work again.
        if worker.horse_pid:  # never leave an encode running unsupervised
            worker.kill_horse(signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.horse_pid, 0)
        log.warning("worker %s stopped after an error; starting again once Redis answers", name)
        time.sleep(1.0)


def forget_own_registration(worker: TranscodeWorker) -> None:
    """Delete a registration this same process left without a death mark (RQ's teardown could
    not reach Redis), which would make RQ refuse the name as an active worker's."""
    try:
        if not worker.connection.hexists(worker.key, "death"):
            worker.connection.delete(worker.key)
    except redis.exceptions.RedisError as exc:
        log.warning("could not clear the previous registration of %s: %s", worker.name, exc)


if __name__ == "__main__":
    sys.exit(main())
