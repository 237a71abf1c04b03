"""The RQ edge and the leader lease against a real Redis (and a real RQ worker running the real job)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from vidup.transcode_jobs import TranscodeRequest, progress_key
from vidup_operator.jobs import JobStore
from vidup_operator.jobview import JobState
from vidup_operator.leader import LeaderLease, lease_key


@pytest.fixture
def conn(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def store(conn: redis.Redis) -> JobStore:
    return JobStore(conn, f"test-{uuid.uuid4().hex[:8]}")


def request(name: str = "vid") -> TranscodeRequest:
    return TranscodeRequest(name, f"uploads/{name}", f"outputs/{name}", [480], 2)


def test_enqueue_is_once_per_job_id(store: JobStore) -> None:
    job_id = f"vt-{uuid.uuid4()}-g1"
    assert store.enqueue(job_id, request()) is True
    assert store.enqueue(job_id, request()) is False
    assert store.enqueue(job_id, request(), replace=True) is False  # waiting: never replaced
    assert store.queue.get_job_ids() == [job_id]
    assert store.observe(job_id).state is JobState.WAITING


def test_missing_and_canceled(store: JobStore) -> None:
    job_id = f"vt-{uuid.uuid4()}-g1"
    assert store.observe(job_id).state is JobState.MISSING
    store.enqueue(job_id, request())
    assert store.cancel(job_id) is False  # was waiting, not running
    assert store.observe(job_id).state is JobState.CANCELED
    assert store.queue.get_job_ids() == []
    assert store.enqueue(job_id, request(), replace=True) is True
    assert store.queue.get_job_ids() == [job_id]
    store.forget(job_id)
    assert store.observe(job_id).state is JobState.MISSING


def test_progress_reads_the_workers_hash_and_enqueue_resets_it(store: JobStore, conn: redis.Redis) -> None:
    job_id = f"vt-{uuid.uuid4()}-g1"
    assert store.progress(job_id) is None
    conn.hset(progress_key(job_id), mapping={"progress": 42, "updated": int(time.time())})
    assert store.progress(job_id) == 42
    store.enqueue(job_id, request())
    assert store.progress(job_id) is None


def test_a_real_run_of_a_non_video_finishes_with_a_permanent_failure(
    store: JobStore, conn: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's job really runs (ffprobe on a text file) in an RQ worker, in-process."""
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "notes").write_text("this is not a video\n" * 100)
    monkeypatch.setenv("VIDUP_STORAGE_DIR", str(tmp_path))
    job_id = f"vt-{uuid.uuid4()}-g1"
    store.enqueue(job_id, request("notes"))
    SimpleWorker([store.queue], connection=conn).work(burst=True)
    view = store.observe(job_id)
    assert view.state is JobState.FINISHED and view.result is not None
    assert view.result.status == "failed" and view.result.reason == "InvalidMedia"
    assert view.ended_at is not None and view.ended_at.tzinfo is not None


def test_a_raised_failure_is_failed_with_the_traceback(store: JobStore, conn: redis.Redis) -> None:
    job_id = f"vt-{uuid.uuid4()}-g1"
    # A request the job cannot even parse: a raised KeyError, i.e. a transient failure for RQ.
    store.queue.enqueue_call("vidup_transcoder.job.transcode", args=({"video_id": "x"},), job_id=job_id)
    SimpleWorker([store.queue], connection=conn).work(burst=True)
    view = store.observe(job_id)
    assert view.state is JobState.FAILED and "KeyError" in view.error
    assert store.enqueue(job_id, request(), replace=True) is True  # a failed run is replaced
    assert store.observe(job_id).state is JobState.WAITING


def _mark_started(store: JobStore, conn: redis.Redis, job_id: str, expires_in: float, worker: str) -> Job:
    """The state a worker leaves while running a job: STARTED plus a heartbeat-scored registry entry."""
    store.enqueue(job_id, request())
    job = Job.fetch(job_id, connection=conn)
    job.started_at = datetime.now(UTC)
    job.worker_name = worker
    job.save()
    job.set_status(JobStatus.STARTED)
    registry = StartedJobRegistry(store.queue.name, connection=conn)
    conn.zadd(registry.key, {f"{job_id}:exec-{uuid.uuid4().hex[:6]}": time.time() + expires_in})
    return job


def test_a_started_job_with_a_live_worker_is_running(store: JobStore, conn: redis.Redis) -> None:
    worker = f"w-{uuid.uuid4().hex[:6]}"
    conn.hset(f"rq:worker:{worker}", mapping={"birth": "2020-01-01T00:00:00.000000Z"})
    job_id = f"vt-{uuid.uuid4()}-g1"
    _mark_started(store, conn, job_id, 30, worker)
    assert store.observe(job_id).state is JobState.RUNNING
    assert store.still_running(job_id)


class _RunEndsBetweenReads(JobStore):
    """A store whose first registry look happens just after the worker finished the job: RQ's
    success transaction (status FINISHED, execution out of the started registry) lands between
    ``observe`` reading the job hash and reading the registry."""

    def abandoned(self, job: Job, now: datetime) -> bool:
        if job.get_status(refresh=True) == JobStatus.STARTED:
            with self.connection.pipeline() as pipe:
                registry = StartedJobRegistry(self.queue.name, connection=self.connection)
                pipe.delete(registry.key)
                pipe.hset(job.key, mapping={"status": JobStatus.FINISHED.value,
                                            "ended_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
                pipe.execute()
        return super().abandoned(job, now)


def test_a_run_that_ends_while_being_looked_at_is_finished_not_abandoned(conn: redis.Redis) -> None:
    """The race behind a second counted attempt: a finished run seen as abandoned is requeued
    (Queued), then counted again when it is seen finished."""
    store = _RunEndsBetweenReads(conn, f"test-{uuid.uuid4().hex[:8]}")
    worker = f"w-{uuid.uuid4().hex[:6]}"
    conn.hset(f"rq:worker:{worker}", mapping={"birth": "2020-01-01T00:00:00.000000Z"})
    job_id = f"vt-{uuid.uuid4()}-g1"
    _mark_started(store, conn, job_id, 30, worker)
    assert store.observe(job_id).state is JobState.FINISHED


def test_a_started_job_is_abandoned_when_its_heartbeat_expired(store: JobStore, conn: redis.Redis) -> None:
    worker = f"w-{uuid.uuid4().hex[:6]}"
    conn.hset(f"rq:worker:{worker}", mapping={"birth": "2020-01-01T00:00:00.000000Z"})
    job_id = f"vt-{uuid.uuid4()}-g1"
    _mark_started(store, conn, job_id, -5, worker)
    assert store.observe(job_id).state is JobState.ABANDONED
    assert store.enqueue(job_id, request(), replace=True) is True
    assert store.observe(job_id).state is JobState.WAITING


def test_a_replaced_dead_run_leaves_nothing_for_rqs_cleanup_to_fail_the_next_run(
    store: JobStore, conn: redis.Redis
) -> None:
    """RQ's ``Job.delete`` leaves a dead run's StartedJobRegistry entry when the execution record
    expired (a SIGKILLed worker's does). Every worker's registry cleanup then reads that expired
    entry as "this job id was abandoned", and by then the id names the *next* run: RQ failed it
    while it ran, the operator requeued it again, two runs overlapped and the video Failed after
    three attempts (seen in CI: a worker pod force-deleted mid-transcode)."""
    job_id = f"vt-{uuid.uuid4()}-g1"
    _mark_started(store, conn, job_id, -5, f"w-{uuid.uuid4().hex[:6]}")  # the force-deleted pod's run
    assert store.observe(job_id).state is JobState.ABANDONED
    assert store.enqueue(job_id, request(), replace=True) is True
    registry = StartedJobRegistry(store.queue.name, connection=conn)
    assert [m for m in conn.zrange(registry.key, 0, -1) if m.decode().startswith(job_id)] == []

    worker = f"w-{uuid.uuid4().hex[:6]}"  # the retry starts on another worker
    conn.hset(f"rq:worker:{worker}", mapping={"birth": "2020-01-01T00:00:00.000000Z"})
    job = Job.fetch(job_id, connection=conn)
    job.started_at, job.worker_name = datetime.now(UTC), worker
    job.save()
    job.set_status(JobStatus.STARTED)
    conn.zadd(registry.key, {f"{job_id}:exec-{uuid.uuid4().hex[:6]}": time.time() + 30})
    registry.cleanup()  # what every worker runs every few seconds
    assert Job.fetch(job_id, connection=conn).get_status() == JobStatus.STARTED
    assert store.observe(job_id).state is JobState.RUNNING


def test_a_dead_run_whose_execution_record_expired_is_still_replaced(store: JobStore, conn: redis.Redis) -> None:
    """A SIGKILLed worker leaves its execution listed on the job while the record itself expires;
    RQ's ``Job.delete`` then raises ValueError, which used to fail the reconcile for a minute."""
    job_id = f"vt-{uuid.uuid4()}-g1"
    job = _mark_started(store, conn, job_id, -5, f"w-{uuid.uuid4().hex[:6]}")
    conn.zadd(job.execution_registry.key, {f"exec-{uuid.uuid4().hex[:6]}": time.time() + 60})
    assert store.observe(job_id).state is JobState.ABANDONED
    assert store.enqueue(job_id, request(), replace=True) is True
    assert store.observe(job_id).state is JobState.WAITING
    store.forget(job_id)
    assert store.observe(job_id).state is JobState.MISSING


def test_a_started_job_is_abandoned_when_its_worker_is_gone_or_reborn(store: JobStore, conn: redis.Redis) -> None:
    gone = f"w-{uuid.uuid4().hex[:6]}"
    job_id = f"vt-{uuid.uuid4()}-g1"
    _mark_started(store, conn, job_id, 30, gone)
    assert store.observe(job_id).state is JobState.ABANDONED

    reborn = f"w-{uuid.uuid4().hex[:6]}"
    job_id = f"vt-{uuid.uuid4()}-g1"
    _mark_started(store, conn, job_id, 30, reborn)
    later = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.01)
    conn.hset(f"rq:worker:{reborn}", mapping={"birth": later})
    assert store.observe(job_id).state is JobState.ABANDONED


def test_a_run_rq_itself_failed_as_abandoned_is_abandoned_not_a_transient_failure(
    store: JobStore, conn: redis.Redis
) -> None:
    """RQ's registry cleanup may see a dead worker's job before the operator does: whichever wins,
    the operator must make the same decision (requeue at once, not a backoff retry)."""
    job_id = f"vt-{uuid.uuid4()}-g1"
    _mark_started(store, conn, job_id, -5, f"w-{uuid.uuid4().hex[:6]}")
    StartedJobRegistry(store.queue.name, connection=conn).cleanup()
    assert Job.fetch(job_id, connection=conn).get_status() == JobStatus.FAILED  # RQ's verdict
    assert store.observe(job_id).state is JobState.ABANDONED
    assert store.enqueue(job_id, request(), replace=True) is True
    assert store.observe(job_id).state is JobState.WAITING


def test_the_lease_has_one_holder_and_passes_on_when_it_lapses(conn: redis.Redis) -> None:
    key = lease_key(f"ns-{uuid.uuid4().hex[:6]}", "q")
    a = LeaderLease(conn, "a", key, ttl_seconds=0.5)
    b = LeaderLease(conn, "b", key, ttl_seconds=0.5)
    assert a.acquire() and not b.acquire()
    assert a.renew() and a.holder() == "a"
    time.sleep(0.7)  # a died: no renewals
    assert b.acquire() and b.holder() == "b"
    assert not a.renew()  # the old leader finds out and steps down
    b.release()
    assert a.holder() is None and a.acquire()


def test_the_lease_is_retaken_by_its_holder_when_redis_forgot_it(conn: redis.Redis) -> None:
    key = lease_key(f"ns-{uuid.uuid4().hex[:6]}", "q")
    a = LeaderLease(conn, "a", key, ttl_seconds=10)
    assert a.acquire()
    conn.delete(key)
    assert a.renew() and a.holder() == "a"
    other = LeaderLease(conn, "b", lease_key("another-namespace", "q"), ttl_seconds=10)
    assert other.acquire()  # separate installs do not contend
    other.release()
