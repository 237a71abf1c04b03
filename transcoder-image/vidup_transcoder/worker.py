"""``python -m vidup_transcoder.worker``: an RQ worker on the transcode queue, configured by VIDUP_*.

A thin wrapper around RQ's forking ``Worker`` that adds what a video worker needs:

* a short heartbeat (VIDUP_WORKER_HEARTBEAT_SECONDS, TTL = heartbeat + VIDUP_WORKER_HEARTBEAT_GRACE_SECONDS)
  instead of RQ's 60-second floor, and a sweep every VIDUP_WORKER_SWEEP_SECONDS that requeues jobs
  of dead workers (:mod:`vidup_transcoder.recovery`), so a SIGKILLed worker costs seconds, not minutes;
* a work-horse (and through it FFmpeg) that dies with its worker instead of running on unsupervised;
* removal of a job's staging directory whenever its work-horse was killed (a stopped job).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import clean_registries
from rq.utils import now
from rq.worker_registration import clean_worker_registry

from vidup.settings import Settings, env_int
from vidup_transcoder.recovery import remove_job_partials, requeue_abandoned
from vidup_transcoder.runner import die_with_parent

log = logging.getLogger("vidup_transcoder.worker")


class TranscodeWorker(Worker):
    """RQ's forking worker with fast dead-worker recovery and cleanup of killed horses."""

    def __init__(self, *args: Any, storage_dir: Path, heartbeat_grace: int = 20, sweep_seconds: int = 5,
                 **kwargs: Any) -> None:
        # set before RQ's constructor, which already reads dequeue_timeout
        self.storage_dir = storage_dir
        self.heartbeat_grace = heartbeat_grace
        self.sweep_seconds = sweep_seconds
        self._parent_pid = os.getpid()
        kwargs["maintenance_interval"] = sweep_seconds
        super().__init__(*args, **kwargs)

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
            except Exception:
                self.log.exception("maintenance of queue %s failed", queue.name)
            finally:
                queue.release_maintenance_lock()
        self.last_cleaned_at = now()  # type: ignore[assignment]  # RQ annotates it as None

    def setup_work_horse_signals(self) -> None:
        """In the work-horse: die with the worker (Linux), so a SIGKILLed worker takes its encode along."""
        super().setup_work_horse_signals()
        die_with_parent()
        if os.getppid() != self._parent_pid:  # the worker died before the line above took effect
            os._exit(1)

    def monitor_work_horse(self, job: Job, queue: Queue, execution: Any) -> None:
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            try:
                for path in remove_job_partials(job, self.storage_dir):
                    self.log.info("removed staging directory %s of job %s", path, job.id)
            except Exception:
                self.log.exception("could not remove staging output of job %s", job.id)


def build_worker(settings: Settings, name: str | None = None) -> TranscodeWorker:
    connection = redis.Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue, connection=connection)
    return TranscodeWorker(
        [queue],
        name=name or f"{socket.gethostname()}.{os.getpid()}",
        connection=connection,
        storage_dir=settings.storage_dir,
        job_monitoring_interval=env_int("VIDUP_WORKER_HEARTBEAT_SECONDS", 5),
        heartbeat_grace=env_int("VIDUP_WORKER_HEARTBEAT_GRACE_SECONDS", 20),
        sweep_seconds=env_int("VIDUP_WORKER_SWEEP_SECONDS", 5),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidup_transcoder.worker", description=__doc__)
    parser.add_argument("--name", help="worker name (default: host.pid)")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--log-level", default=os.environ.get("VIDUP_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    worker = build_worker(settings, args.name)
    worker.work(burst=args.burst, logging_level=args.log_level.upper(), with_scheduler=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
