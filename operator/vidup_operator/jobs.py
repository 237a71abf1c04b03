"""The RQ edge: enqueue, look at, replace and cancel the one transcode job of a resource.

Blocking (RQ is synchronous); the reconciler calls it from a thread. It folds RQ's statuses into the
few :class:`~vidup_operator.decisions.JobState` values the decisions care about, and it decides one
fact the decisions cannot: whether a "started" job is really running or was abandoned by a dead
worker.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import AbandonedJobError, DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.worker import Worker

from vidup.transcode_jobs import JOB_FUNCTION, KIND_CHUNK, KIND_WHOLE, TranscodeRequest, TranscodeResult, progress_key
from vidup_operator.jobview import JobState, JobView

log = logging.getLogger(__name__)

#: The RQ-side backstop only. The job enforces its own budget, which depends on the source's
#: duration that only the worker's probe knows; so RQ must never kill a legitimately long encode.
JOB_TIMEOUT_SECONDS = 48 * 3600
#: Results and failures outlive any operator outage we want to survive without re-transcoding.
RESULT_TTL_SECONDS = 7 * 24 * 3600

_WAITING = {
    JobStatus.CREATED, JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED,
    JobStatus.RATE_LIMITED, JobStatus.READY_TO_ENQUEUE,
}


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class JobStore:
    """One resource's job in Redis, addressed by its deterministic id."""

    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.connection = connection
        self.queue = Queue(queue_name, connection=connection)

    # -- look ----------------------------------------------------------------------------------

    def observe(self, job_id: str, now: datetime | None = None) -> JobView:
        """What happened to ``job_id``, folded into a :class:`JobView`."""
        now = now or datetime.now(UTC)
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return JobView(JobState.MISSING)
        status = job.get_status(refresh=False)
        started, ended = _aware(job.started_at), _aware(job.ended_at)
        if status is None:  # a husk (e.g. only a heartbeat field survived a flush)
            return JobView(JobState.MISSING)
        if status in _WAITING:
            return JobView(JobState.WAITING)
        if status == JobStatus.STARTED:
            if not self.abandoned(job, now):
                return JobView(JobState.RUNNING, started_at=started)
            # The job hash and the started registry are two reads: a run that ended between them
            # (RQ moves both in one transaction) looks abandoned. Only a job still "started" is.
            if job.get_status(refresh=True) != JobStatus.STARTED:
                return self.observe(job_id, now)
            return JobView(JobState.ABANDONED, started_at=started)
        if status == JobStatus.CANCELED:
            return JobView(JobState.CANCELED)
        latest = job.latest_result()
        if status == JobStatus.FINISHED:
            value = latest.return_value if latest is not None and latest.type == Result.Type.SUCCESSFUL else None
            return JobView(JobState.FINISHED, result=_parse_result(value), started_at=started, ended_at=ended)
        error = ""
        if latest is not None and latest.exc_string:
            error = latest.exc_string
            if AbandonedJobError.__name__ in error:
                # RQ's registry cleanup saw the dead worker first; it is the same loss either way.
                return JobView(JobState.ABANDONED, started_at=started)
        elif status == JobStatus.STOPPED:
            error = "the job was stopped"
        return JobView(JobState.FAILED, error=error, started_at=started, ended_at=ended)

    def abandoned(self, job: Job, now: datetime) -> bool:
        """A started job is abandoned when no live execution of it remains, or its worker is gone.

        RQ's own rule (every execution's heartbeat expired) needs a minute or more; the worker
        checks catch the common cases at once: its registration vanished, it registered its death,
        or a new worker with the same name was born after the job started.
        """
        now_ts = now.timestamp()
        live = [score for _, score in _started_entries(job) if score < 0 or score > now_ts]
        if not live:
            return True
        if not job.worker_name:
            return False
        worker_key = Worker.redis_worker_namespace_prefix + job.worker_name
        info: list[Any] = list(self.connection.hmget(worker_key, ["birth", "death"]))
        birth, death = (v.decode() if isinstance(v, bytes) else v for v in info)
        if not self.connection.exists(worker_key) or death:
            return True
        started = _aware(job.started_at)
        if birth and started is not None:
            with contextlib.suppress(ValueError):
                born = datetime.strptime(birth, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                return born > started
        return False

    @property
    def queue_name(self) -> str:
        return str(self.queue.name)

    def queue_stats(self, now: datetime | None = None) -> tuple[int, float | None]:
        """(jobs waiting in the queue, seconds the one at its head has waited or None), for the
        metrics. The head is the oldest but for jobs handed back to the front, older still."""
        now = now or datetime.now(UTC)
        depth = int(self.queue.count)
        head = self.queue.get_job_ids(0, 0)
        if not head:
            return depth, None
        try:
            enqueued = _aware(Job.fetch(head[0], connection=self.connection).enqueued_at)
        except NoSuchJobError:
            return depth, None
        return depth, None if enqueued is None else max(0.0, (now - enqueued).total_seconds())

    def progress(self, job_id: str) -> int | None:
        """The worker's last published percentage, if any."""
        raw = self.connection.hget(progress_key(job_id), "progress")
        if raw is None:
            return None
        try:
            return max(0, min(100, int(float(raw))))
        except ValueError:
            return None

    # -- act -----------------------------------------------------------------------------------

    def enqueue(self, job_id: str, request: TranscodeRequest, *, replace: bool = False) -> bool:
        """Enqueue ``job_id`` unless it exists; with ``replace``, first drop a dead run of it.

        ``unique=True`` makes the check-and-enqueue one atomic Lua script, so two racing callers
        (a restarted operator, a standby that just took over) still make one job. Returns whether
        this call enqueued.
        """
        if replace:
            self._drop_dead_run(job_id)
        self.connection.delete(progress_key(job_id))
        try:
            self.queue.enqueue_call(
                JOB_FUNCTION, args=(request.to_dict(),), job_id=job_id, unique=True,
                timeout=JOB_TIMEOUT_SECONDS, result_ttl=RESULT_TTL_SECONDS, failure_ttl=RESULT_TTL_SECONDS,
                description=_description(request),
            )
        except DuplicateJobError:
            return False
        return True

    def _drop_dead_run(self, job_id: str) -> None:
        """Delete a failed, stopped, canceled or abandoned run so its id can be enqueued again.

        A job that is waiting or really running is left alone: replacing it would run it twice.
        """
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return
        view = self.observe(job_id)
        if view.state in (JobState.WAITING, JobState.RUNNING, JobState.FINISHED):
            return
        _delete(job)

    def cancel(self, job_id: str) -> bool:
        """Stop a running job (its work-horse's process group is killed) or cancel a waiting one.

        Returns whether a worker was running it, so the caller can wait for the stop to land
        before it removes outputs the encode might still be writing.
        """
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED:
            with contextlib.suppress(InvalidJobOperation, NoSuchJobError):
                send_stop_job_command(self.connection, job_id)
                return True
        elif status in _WAITING:
            with contextlib.suppress(InvalidJobOperation):
                job.cancel()
        return False

    def forget(self, job_id: str) -> None:
        """Delete the job, its result and its progress from Redis."""
        with contextlib.suppress(NoSuchJobError):
            _delete(Job.fetch(job_id, connection=self.connection))
        self.connection.delete(progress_key(job_id))

    def still_running(self, job_id: str) -> bool:
        """Whether a live worker still reports ``job_id`` as running (after a stop was sent)."""
        return self.observe(job_id).state is JobState.RUNNING


def _description(request: TranscodeRequest) -> str:
    """What RQ logs as the job starts: ``transcode <video>``, plus the piece of a chunked video."""
    piece = {KIND_WHOLE: "", KIND_CHUNK: f" chunk {request.chunk}"}.get(request.kind, f" {request.kind}")
    return f"transcode {request.video_id}{piece}"


def _delete(job: Job) -> None:
    """``Job.delete``, also for a run whose worker died, leaving nothing that names the job id.

    RQ lists the job's executions and raises ValueError for one whose record already expired (a
    SIGKILLed worker never removes it), which used to fail the reconcile until Kopf's retry a
    minute later: the registry of such executions is dropped first (records that still exist
    expire on their own TTL). RQ also removes from the StartedJobRegistry only the executions whose
    record it can still read, so a dead run's entry stays; once its score has passed, every
    worker's registry cleanup reads it as "this job id was abandoned", and by then the id names the
    next run, which RQ fails while it runs (seen in CI: a worker pod force-deleted mid-transcode,
    the retry failed as abandoned, two runs overlapped and the video Failed after three attempts).
    Only dead runs are deleted here, so every entry of the id goes.
    """
    try:
        job.delete(remove_from_queue=True)
    except ValueError:
        job.connection.delete(job.execution_registry.key)
        job.delete(remove_from_queue=True)
    members = [member for member, _ in _started_entries(job)]
    if members:
        job.connection.zrem(StartedJobRegistry(job.origin, connection=job.connection).key, *members)


def _started_entries(job: Job) -> list[tuple[bytes, float]]:
    """The job's StartedJobRegistry entries (``<job id>:<execution id>``) with their scores."""
    registry = StartedJobRegistry(job.origin, connection=job.connection)
    entries: list[tuple[bytes, float]] = list(job.connection.zrange(registry.key, 0, -1, withscores=True))  # type: ignore[arg-type]
    return [(member, score) for member, score in entries if _member_job_id(member) == job.id]


def _member_job_id(member: Any) -> str:
    text = member.decode() if isinstance(member, bytes) else str(member)
    return text.split(":", 1)[0]


def _parse_result(value: Any) -> TranscodeResult | None:
    if not isinstance(value, dict):
        return None
    try:
        return TranscodeResult.from_dict(value)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("unreadable transcode result %r: %s", value, exc)
        return None
