"""The reconcile decision table, case by case, plus properties over whole simulated lifetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidup.transcode_jobs import RenditionResult, SourceFacts, TranscodeResult, job_id_for
from vidup_operator.decisions import (
    Decision,
    JobCommand,
    Observation,
    Policy,
    decide,
    needs_work,
    pending_patch,
)
from vidup_operator.jobview import JobState, JobView

UID = "5f0c7d2e-0000-4000-8000-000000000001"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POLICY = Policy(max_attempts=3, retry_base_seconds=2, retry_max_seconds=300)
JOB = job_id_for(UID, 1)


def observe(status: dict[str, Any], job: JobView, progress: int | None = None, generation: int = 1,
            now: datetime = NOW) -> Observation:
    return Observation(UID, generation, (1080, 720, 480), status, job, progress, now)


def apply(status: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """A JSON merge patch of the status, as the API server applies it."""
    merged = dict(status)
    for key, value in decision.status.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def completed() -> TranscodeResult:
    return TranscodeResult(
        status="completed", video_id="v", output_path="outputs/v", master_playlist="outputs/v/master.m3u8",
        poster="outputs/v/poster.jpg", duration_seconds=6.0,
        source=SourceFacts(6.0, 1280, 720, 0, 25.0, "h264", "yuv420p", True),
        renditions=[
            RenditionResult("720p", 1280, 720, 3_000_000, 2_500_000, "avc1.64001f,mp4a.40.2", "720p/index.m3u8"),
            RenditionResult("480p", 854, 480, 1_400_000, 1_200_000, "avc1.64001e,mp4a.40.2", "480p/index.m3u8"),
        ],
    )


def queued_status() -> dict[str, Any]:
    return apply({}, decide(observe({}, JobView(JobState.MISSING)), POLICY))


def processing_status(attempts: int = 1, progress: int = 10) -> dict[str, Any]:
    status = dict(queued_status(), attempts=attempts - 1)
    status = apply(status, decide(observe(status, JobView(JobState.RUNNING)), POLICY))
    return dict(status, progress=progress)


# -- a new resource or generation ----------------------------------------------------------------


def test_a_new_resource_enqueues_its_one_job_and_is_queued() -> None:
    decision = decide(observe({}, JobView(JobState.MISSING)), POLICY)
    assert decision.job is JobCommand.ENQUEUE and decision.job_id == JOB
    assert decision.status["phase"] == "Queued" and decision.status["jobId"] == JOB
    assert decision.status["attempts"] == 0 and decision.status["progress"] == 0
    assert decision.status["observedGeneration"] == 1
    assert decision.status["outputs"]["summary"] == "1080p,720p,480p"
    ready = decision.status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "Ready", "False", "Queued", 1,
    )
    assert [e.reason for e in decision.events] == ["Queued"]


def test_a_job_that_exists_already_is_still_only_enqueued_with_the_same_id() -> None:
    """After a crash between enqueue and status patch, the same deterministic id comes back."""
    for state in JobState:
        decision = decide(observe({}, JobView(state)), POLICY)
        assert decision.job is JobCommand.ENQUEUE and decision.job_id == JOB


def test_a_spec_change_cancels_the_old_generations_job_and_starts_over() -> None:
    done = dict(processing_status(), phase="Completed", progress=100, attempts=1)
    decision = decide(observe(done, JobView(JobState.MISSING), generation=2), POLICY)
    assert decision.job is JobCommand.ENQUEUE and decision.job_id == job_id_for(UID, 2)
    assert decision.cancel_job_id == JOB
    assert decision.status["attempts"] == 0 and decision.status["observedGeneration"] == 2
    assert decision.status["completedAt"] is None and decision.status["startedAt"] is None


def test_terminal_resources_of_the_current_generation_need_nothing() -> None:
    for phase in ("Completed", "Failed"):
        status = dict(processing_status(), phase=phase)
        for state in JobState:
            assert decide(observe(status, JobView(state)), POLICY).idle
        assert not needs_work(1, status)
        assert needs_work(2, status)
    assert needs_work(1, {}) and needs_work(1, processing_status())


# -- queued ----------------------------------------------------------------------------------------


def test_queued_and_waiting_is_idle() -> None:
    assert decide(observe(queued_status(), JobView(JobState.WAITING)), POLICY).idle


def test_start_counts_an_attempt_and_posts_started() -> None:
    started = NOW - timedelta(seconds=3)
    decision = decide(observe(queued_status(), JobView(JobState.RUNNING, started_at=started), 5), POLICY)
    assert decision.status["phase"] == "Processing" and decision.status["attempts"] == 1
    assert decision.status["startedAt"] == "2026-01-02T03:04:02Z"
    assert decision.status["progress"] == 5
    assert [e.reason for e in decision.events] == ["Started"]
    assert decision.job is JobCommand.NONE


def test_a_lost_queued_job_is_enqueued_again_without_spending_an_attempt() -> None:
    """Redis FLUSHALL while Queued: the resource is the truth."""
    decision = decide(observe(queued_status(), JobView(JobState.MISSING)), POLICY)
    assert decision.job is JobCommand.REPLACE and decision.job_id == JOB
    assert decision.status["reason"] == "Requeued" and "attempts" not in decision.status
    assert [e.reason for e in decision.events] == ["Requeued"]


def test_a_canceled_job_is_enqueued_again() -> None:
    decision = decide(observe(queued_status(), JobView(JobState.CANCELED)), POLICY)
    assert decision.job is JobCommand.REPLACE


def test_pending_after_a_redis_outage_enqueues_as_a_first_enqueue() -> None:
    obs = observe({}, JobView(JobState.MISSING))
    pending = apply({}, Decision(status=pending_patch(obs, JOB, "Connection refused")))
    assert pending["phase"] == "Pending" and "Connection refused" in pending["message"]
    decision = decide(observe(pending, JobView(JobState.MISSING)), POLICY)
    assert decision.job is JobCommand.ENQUEUE and decision.status["phase"] == "Queued"
    assert [e.reason for e in decision.events] == ["Queued"]


# -- processing -------------------------------------------------------------------------------------


def test_progress_is_mirrored_only_when_it_rises_and_never_reaches_100_before_completion() -> None:
    status = processing_status(progress=40)
    assert decide(observe(status, JobView(JobState.RUNNING), 55), POLICY).status == {"progress": 55}
    assert decide(observe(status, JobView(JobState.RUNNING), 40), POLICY).idle
    assert decide(observe(status, JobView(JobState.RUNNING), 12), POLICY).idle
    assert decide(observe(status, JobView(JobState.RUNNING), None), POLICY).idle
    assert decide(observe(status, JobView(JobState.RUNNING), 100), POLICY).status == {"progress": 99}


def test_completion_copies_the_result_into_the_status() -> None:
    ended = NOW - timedelta(seconds=1)
    decision = decide(observe(processing_status(), JobView(JobState.FINISHED, completed(), ended_at=ended)), POLICY)
    s = decision.status
    assert s["phase"] == "Completed" and s["progress"] == 100 and s["attempts"] == 1
    assert s["completedAt"] == "2026-01-02T03:04:04Z"
    assert s["outputs"]["summary"] == "720p,480p"
    assert s["outputs"]["masterPlaylist"] == "outputs/v/master.m3u8"
    assert s["outputs"]["renditions"][0] == {
        "name": "720p", "width": 1280, "height": 720, "bandwidth": 3_000_000, "averageBandwidth": 2_500_000,
        "codecs": "avc1.64001f,mp4a.40.2", "playlist": "720p/index.m3u8",
    }
    assert s["source"]["durationSeconds"] == 6.0 and s["source"]["hasAudio"] is True
    ready = s["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("True", "Transcoded")
    assert [e.reason for e in decision.events] == ["Completed"]


def test_a_run_that_started_and_finished_between_two_looks_still_counts() -> None:
    decision = decide(observe(queued_status(), JobView(JobState.FINISHED, completed())), POLICY)
    assert decision.status["phase"] == "Completed" and decision.status["attempts"] == 1


def test_a_permanent_media_error_fails_at_once_with_the_workers_reason_and_message() -> None:
    result = TranscodeResult(status="failed", video_id="v", reason="InvalidMedia", message="upload v is not a video")
    decision = decide(observe(processing_status(), JobView(JobState.FINISHED, result)), POLICY)
    s = decision.status
    assert (s["phase"], s["reason"], s["message"]) == ("Failed", "InvalidMedia", "upload v is not a video")
    assert s["conditions"][0]["status"] == "False" and s["conditions"][0]["reason"] == "InvalidMedia"
    assert decision.job is JobCommand.NONE
    assert [(e.reason, e.type) for e in decision.events] == [("Failed", "Warning")]


def test_a_finished_job_without_a_readable_result_fails() -> None:
    decision = decide(observe(processing_status(), JobView(JobState.FINISHED, None)), POLICY)
    assert decision.status["phase"] == "Failed" and decision.status["reason"] == "TranscodeFailed"


TRACEBACK = """Traceback (most recent call last):
  File "/x/rq/job.py", line 1, in perform
    return self.func()
vidup_transcoder.errors.TransientTranscodeError: ffmpeg failed (exit 1); last output:
  No space left on device
"""


def test_a_transient_failure_is_retried_after_the_backoff_with_the_workers_message() -> None:
    ended = NOW
    failed = JobView(JobState.FAILED, error=TRACEBACK, ended_at=ended)
    decision = decide(observe(processing_status(attempts=1), failed), POLICY)
    s = decision.status
    assert (s["phase"], s["reason"], s["attempts"]) == ("Queued", "Retrying", 1)
    assert "TransientTranscodeError: ffmpeg failed" in s["message"] and "No space left" in s["message"]
    assert "File " not in s["message"]
    assert "retrying in 2s" in s["message"] and decision.wake_after == 2
    assert decision.job is JobCommand.NONE
    assert [(e.reason, e.type) for e in decision.events] == [("Retrying", "Warning")]

    waiting = apply(processing_status(attempts=1), decision)
    early = decide(observe(waiting, failed, now=ended + timedelta(seconds=1)), POLICY)
    assert early.job is JobCommand.NONE and early.wake_after == 1 and not early.status
    due = decide(observe(waiting, failed, now=ended + timedelta(seconds=2)), POLICY)
    assert due.job is JobCommand.REPLACE and due.job_id == JOB
    assert due.status["reason"] == "Queued" and "attempt 2 of 3" in due.status["message"]


def test_a_failed_run_without_an_end_time_is_retried_instead_of_waiting_for_ever() -> None:
    """RQ's cleanup can fail an abandoned run without ``ended_at``; a vanished run has none either."""
    for vanished in (JobView(JobState.FAILED, error=TRACEBACK), JobView(JobState.MISSING)):
        first = decide(observe(processing_status(attempts=1), JobView(JobState.FAILED, error=TRACEBACK)), POLICY)
        waiting = apply(processing_status(attempts=1), first)
        for later in (1, 60, 3600):
            again = decide(observe(waiting, vanished, now=NOW + timedelta(seconds=later)), POLICY)
            assert again.job is JobCommand.REPLACE and again.job_id == JOB, (vanished, later, again)
            assert "attempt 2 of 3" in again.status["message"]


def test_backoff_doubles_and_is_capped() -> None:
    policy = Policy(max_attempts=10, retry_base_seconds=2, retry_max_seconds=10)
    assert [policy.delay_after(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]


def test_the_last_allowed_failure_ends_failed_with_transcode_failed() -> None:
    failed = JobView(JobState.FAILED, error=TRACEBACK, ended_at=NOW)
    decision = decide(observe(processing_status(attempts=3), failed), POLICY)
    s = decision.status
    assert (s["phase"], s["reason"], s["attempts"]) == ("Failed", "TranscodeFailed", 3)
    assert "attempt 3 of 3 failed" in s["message"] and "No space left" in s["message"]
    assert decision.job is JobCommand.NONE


def test_an_abandoned_run_is_enqueued_again_at_once_and_counted() -> None:
    decision = decide(observe(processing_status(attempts=1), JobView(JobState.ABANDONED)), POLICY)
    assert decision.job is JobCommand.REPLACE and decision.status["reason"] == "Requeued"
    assert decision.status["phase"] == "Queued" and decision.status["attempts"] == 1
    assert decision.status["progress"] == 0
    last = decide(observe(processing_status(attempts=3), JobView(JobState.ABANDONED)), POLICY)
    assert last.status["phase"] == "Failed" and last.job is JobCommand.NONE


def test_a_job_back_on_the_queue_while_processing_shows_queued_again() -> None:
    decision = decide(observe(processing_status(), JobView(JobState.WAITING)), POLICY)
    assert decision.status["phase"] == "Queued" and decision.status["reason"] == "Requeued"
    assert decision.job is JobCommand.NONE


def test_a_job_lost_while_processing_is_enqueued_again() -> None:
    decision = decide(observe(processing_status(), JobView(JobState.MISSING)), POLICY)
    assert decision.job is JobCommand.REPLACE and decision.status["phase"] == "Queued"


@pytest.mark.parametrize("glimpse", [JobState.ABANDONED, JobState.MISSING, JobState.WAITING])
def test_a_running_job_that_only_looked_lost_is_not_a_second_attempt(glimpse: JobState) -> None:
    """The HA race: a look between two writes of a busy worker (or a heartbeat late under load)
    shows the running job as lost; the status goes back to Queued. When the same run (same start)
    shows up again, it is resumed, not counted again, and no second Started event is posted."""
    started = NOW - timedelta(seconds=30)
    running = JobView(JobState.RUNNING, started_at=started)
    status = apply(queued_status(), decide(observe(queued_status(), running, 10), POLICY))
    assert status["attempts"] == 1
    status = apply(status, decide(observe(status, JobView(glimpse, started_at=started)), POLICY))
    assert status["phase"] == "Queued"
    again = decide(observe(status, running, 40), POLICY)
    assert again.status["phase"] == "Processing" and again.status["attempts"] == 1
    assert again.status["progress"] == 40 and again.events == ()
    done = JobView(JobState.FINISHED, completed(), started_at=started, ended_at=NOW)
    assert decide(observe(status, done), POLICY).status["attempts"] == 1


def test_a_new_run_after_a_real_loss_is_counted() -> None:
    first = NOW - timedelta(seconds=30)
    status = processing_status()
    status["startedAt"] = "2026-01-02T03:03:35Z"
    status = apply(status, decide(observe(status, JobView(JobState.ABANDONED, started_at=first)), POLICY))
    second = decide(observe(status, JobView(JobState.RUNNING, started_at=NOW)), POLICY)
    assert second.status["attempts"] == 2 and [e.reason for e in second.events] == ["Started"]


def test_a_retry_never_starts_in_the_second_of_the_failed_run() -> None:
    assert Policy(retry_base_seconds=0.1).delay_after(1) == 1.0


# -- whole lifetimes ---------------------------------------------------------------------------------

OUTCOMES = st.sampled_from(["ok", "transient", "abandoned", "invalid", "lost", "glimpse"])


@settings(max_examples=300, deadline=None)
@given(st.lists(OUTCOMES, min_size=1, max_size=8), st.integers(1, 5))
def test_every_lifetime_ends_terminal_with_one_job_id_and_honest_attempts(outcomes: list[str], limit: int) -> None:
    """Simulate runs with the given outcomes (lost = Redis forgot the queued job) until terminal."""
    policy = Policy(max_attempts=limit, retry_base_seconds=1, retry_max_seconds=4)
    status: dict[str, Any] = {}
    now = NOW
    job = JobView(JobState.MISSING)
    runs = 0
    script = list(outcomes)
    seen_ids: set[str] = set()
    for _ in range(200):
        decision = decide(observe(status, job, now=now), policy)
        status = apply(status, decision)
        if decision.job is not JobCommand.NONE:
            seen_ids.add(decision.job_id)
            job = JobView(JobState.WAITING)
        elif decision.wake_after:
            now += timedelta(seconds=decision.wake_after)
            continue
        if status.get("phase") in ("Completed", "Failed"):
            break
        if job.state is JobState.WAITING:
            outcome = script.pop(0) if script else "ok"
            if outcome == "lost":
                job = JobView(JobState.MISSING)
                continue
            runs += 1
            started = now
            job = JobView(JobState.RUNNING, started_at=started)
            status = apply(status, decide(observe(status, job, now=now), policy))
            if outcome == "glimpse":  # the running job looks lost for one look, then runs on
                glimpse = JobView(JobState.MISSING if runs % 2 else JobState.WAITING)
                for view in (glimpse, job):
                    decision = decide(observe(status, view, now=now), policy)
                    status = apply(status, decision)
                outcome = "ok"
            now += timedelta(seconds=1)
            job = {
                "ok": JobView(JobState.FINISHED, completed(), started_at=started, ended_at=now),
                "invalid": JobView(JobState.FINISHED, TranscodeResult("failed", "v", reason="InvalidMedia"),
                                   started_at=started, ended_at=now),
                "transient": JobView(JobState.FAILED, error="boom", started_at=started, ended_at=now),
                "abandoned": JobView(JobState.ABANDONED, started_at=started),
            }[outcome]
    assert status["phase"] in ("Completed", "Failed")
    assert seen_ids == {JOB}
    assert status["attempts"] == runs <= limit
    ready = status["conditions"][0]
    assert ready["status"] == ("True" if status["phase"] == "Completed" else "False")
    assert status["observedGeneration"] == 1
