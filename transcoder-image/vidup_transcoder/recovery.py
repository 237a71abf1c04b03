"""Put the jobs of dead workers back on the queue quickly, without Kubernetes.

RQ notices a dead worker only when the job's StartedJobRegistry entry expires, and then retries it
through ``Job.retry`` -- which, with the backoff intervals the operator uses, *schedules* the job and
so depends on some worker's scheduler (whose lock outlives a SIGKILLed owner by a minute). A worker
dying is not the job's fault, so :func:`requeue_abandoned` puts such jobs straight back on the queue
(still spending one of their retries, so a video that kills every worker cannot loop forever), and
leaves jobs without retries to RQ's own cleanup, which fails them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import current_timestamp

from vidup.transcode_jobs import JOB_FUNCTION
from vidup_transcoder.package_store import PackageStore

log = logging.getLogger(__name__)


def requeue_abandoned(queue: Queue, now: float | None = None) -> list[str]:
    """Requeue every STARTED job whose heartbeat expired and that has retries left; returns their ids.

    Safe with several workers sweeping at once: removing the registry entry (ZREM) is the claim, and
    only the sweeper whose ZREM succeeded requeues.
    """
    registry = StartedJobRegistry(queue=queue)
    connection = queue.connection
    cutoff = now if now is not None else current_timestamp()
    requeued: list[str] = []
    for raw in connection.zrangebyscore(registry.key, 0, cutoff):
        entry = raw.decode() if isinstance(raw, bytes) else str(raw)
        job_id = registry.parse_job_id(entry)
        try:
            job = Job.fetch(job_id, connection=connection, serializer=queue.serializer)
        except NoSuchJobError:
            continue
        if job.get_status(refresh=False) != JobStatus.STARTED or not job.retries_left:
            continue
        if not connection.zrem(registry.key, entry):
            continue  # another worker's sweep claimed it first
        job.retries_left = job.retries_left - 1
        job.meta["vidup_abandoned"] = int(job.meta.get("vidup_abandoned", 0)) + 1
        job.started_at = None
        job.worker_name = None
        queue.enqueue_job(job)
        log.warning("requeued job %s abandoned by a dead worker (%s retries left)", job.id, job.retries_left)
        requeued.append(job.id)
    return requeued


def remove_job_partials(job: Job, store: PackageStore) -> list[Path]:
    """Delete the local leftovers (staging directory on the volume, or scratch copy of the source
    and package with a bucket) of a transcode job whose work-horse was killed (stopped job, horse
    killed on timeout): a SIGKILLed horse cannot clean up after itself."""
    if job.func_name != JOB_FUNCTION or not job.args:
        return []
    request = job.args[0]
    if not isinstance(request, dict) or "output_path" not in request:
        return []
    return store.discard(str(request["output_path"]), job.id)
