"""The chunked stage of the decision table, pure: a long video's whole job answers ``chunked``, the
pieces are enqueued once, finished pieces (marker or result) are never enqueued again, lost ones
are, a broken one fails the video, the stitch comes last, and progress only grows."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from test_decisions import JOB, NOW, POLICY, UID, apply, completed, processing_status

from vidup import chunking
from vidup.transcode_jobs import SourceFacts, TranscodeResult
from vidup_operator.chunked import progress, survey
from vidup_operator.decisions import Decision, Observation, decide
from vidup_operator.jobview import JobState, JobView

MEDIA = 245.0  # 60 s chunks at 0, 60, 120 and 180; the 5 s after 240 (under a segment) joins the last
STARTED = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)


def observe(status: dict[str, Any], job: JobView, pieces: dict[str, JobView] | None = None,
            markers: frozenset[str] = frozenset(), piece_progress: dict[str, int] | None = None) -> Observation:
    return Observation(UID, 1, (1080, 720, 480), status, job, None, NOW, segment_seconds=10, chunk_seconds=60,
                       pieces=pieces or {}, markers=markers, piece_progress=piece_progress or {})


def chunked_result(has_audio: bool = True) -> TranscodeResult:
    facts = SourceFacts(MEDIA, 1920, 1080, 0, 30.0, "h264", "yuv420p", has_audio)
    return TranscodeResult(status="chunked", video_id="v", source=facts, chunks=4)


def ok() -> JobView:
    return JobView(JobState.FINISHED, result=TranscodeResult(status="completed", video_id="v"), started_at=STARTED,
                   ended_at=NOW)


def chunked_status(has_audio: bool = True) -> tuple[dict[str, Any], Decision]:
    status = processing_status()
    finished = JobView(JobState.FINISHED, result=chunked_result(has_audio), started_at=STARTED, ended_at=NOW)
    decision = decide(observe(status, finished), POLICY)
    return apply(status, decision), decision


def test_plan_pieces_and_ids() -> None:
    plan = chunking.plan_chunks(MEDIA, 10, 60)
    assert [(c.start_seconds, c.duration_seconds, c.first_segment) for c in plan] == [
        (0, 60, 0), (60, 60, 6), (120, 60, 12), (180, 65, 18)]
    assert chunking.plan_chunks(250.0, 10, 60)[-1].duration_seconds == 10  # a whole segment: a chunk
    assert chunking.chunk_length(10, 55) == 60 and chunking.chunk_length(10, 3) == 10
    assert chunking.wants_chunks(180, 10, 60, 3) and not chunking.wants_chunks(179.9, 10, 60, 3)
    assert not chunking.wants_chunks(10_000, 10, 0, 3)
    piece = chunking.piece_job_id(JOB, "c0003")
    assert chunking.parent_job_id(piece) == JOB and chunking.parent_job_id(JOB) == JOB


def test_a_chunked_answer_records_the_plan_and_enqueues_every_piece_once() -> None:
    status, decision = chunked_status()
    assert status["phase"] == "Processing" and status["reason"] == "Chunked"
    assert status["chunks"] == {"total": 4, "completed": 0, "seconds": 60, "summary": "0/4", "failures": {}}
    assert status["source"]["durationSeconds"] == MEDIA and status["attempts"] == 1
    assert [(p.piece, p.kind, p.chunk) for p in decision.pieces] == [
        ("c0000", "chunk", 0), ("c0001", "chunk", 1), ("c0002", "chunk", 2), ("c0003", "chunk", 3),
        ("audio", "audio", -1)]
    assert {p.job_id for p in decision.pieces} == {chunking.piece_job_id(JOB, p.piece) for p in decision.pieces}
    assert all(p.media_seconds == MEDIA and p.chunk_seconds == 60 for p in decision.pieces)
    # the next looks follow the pieces, never the whole job (Redis may have forgotten it)
    waiting = {p: JobView(JobState.WAITING) for p in chunking.pieces(4, True)}
    again = decide(observe(status, JobView(JobState.MISSING), waiting), POLICY)
    assert again.idle


def test_no_audio_means_no_audio_piece() -> None:
    _status, decision = chunked_status(has_audio=False)
    assert [p.piece for p in decision.pieces] == ["c0000", "c0001", "c0002", "c0003"]


def test_after_a_redis_flush_only_pieces_without_a_marker_are_enqueued_again() -> None:
    status, _ = chunked_status()
    markers = frozenset({"c0000", "c0002"})
    decision = decide(observe(status, JobView(JobState.MISSING), {}, markers), POLICY)
    assert [p.piece for p in decision.pieces] == ["c0001", "c0003", "audio"]
    assert decision.status["chunks"]["completed"] == 2 and decision.status["chunks"]["summary"] == "2/4"
    assert any(e.reason == "Requeued" for e in decision.events)


def test_a_lost_worker_costs_its_piece_one_run_and_max_attempts_fail_the_video() -> None:
    status, _ = chunked_status()
    pieces = {p: JobView(JobState.RUNNING) for p in chunking.pieces(4, True)}
    pieces["c0001"] = JobView(JobState.ABANDONED, started_at=STARTED)
    decision = decide(observe(status, JobView(JobState.MISSING), pieces), POLICY)
    assert [p.piece for p in decision.pieces] == ["c0001"]
    assert decision.status["chunks"]["failures"] == {"c0001": 1}
    assert [e.reason for e in decision.events] == ["Requeued"]
    status = apply(status, decision)
    status["chunks"] = dict(status["chunks"], failures={"c0001": POLICY.max_attempts - 1})
    final = decide(observe(status, JobView(JobState.MISSING), pieces), POLICY)
    assert final.status["phase"] == "Failed" and final.status["reason"] == "TranscodeFailed"
    assert "c0001 failed 3 times" in final.status["message"] and "lost" in final.status["message"]
    assert not final.pieces
    assert chunking.piece_job_id(JOB, "c0000") in final.cancel_pieces
    assert chunking.piece_job_id(JOB, "c0001") not in final.cancel_pieces


def test_a_failed_piece_waits_out_the_backoff_then_runs_again_counted_once() -> None:
    status, _ = chunked_status()
    error = "Traceback (most recent call last):\n  x\nOSError: disk"
    pieces = {p: JobView(JobState.WAITING) for p in chunking.pieces(4, True)}
    pieces["c0002"] = JobView(JobState.FAILED, error=error, started_at=STARTED, ended_at=NOW)
    waiting = decide(observe(status, JobView(JobState.MISSING), pieces), POLICY)
    assert not waiting.pieces and waiting.wake_after == POLICY.delay_after(1)
    later = Observation(UID, 1, (1080, 720, 480), status, JobView(JobState.MISSING), None,
                        NOW + timedelta(seconds=POLICY.delay_after(1)), segment_seconds=10, chunk_seconds=60,
                        pieces=pieces)
    retry = decide(later, POLICY)
    assert [p.piece for p in retry.pieces] == ["c0002"]
    assert retry.status["chunks"]["failures"] == {"c0002": 1}
    assert [e.reason for e in retry.events] == ["Retrying"] and "OSError: disk" in retry.events[0].message


def test_invalid_media_in_a_chunk_fails_the_video_at_once() -> None:
    status, _ = chunked_status()
    bad = TranscodeResult(status="failed", video_id="v", reason="InvalidMedia", message="broken frames")
    pieces = {"c0002": JobView(JobState.FINISHED, result=bad, ended_at=NOW)}
    decision = decide(observe(status, JobView(JobState.MISSING), pieces, frozenset({"c0000"})), POLICY)
    assert decision.status["phase"] == "Failed" and decision.status["reason"] == "InvalidMedia"
    assert "broken frames" in decision.status["message"]
    assert chunking.piece_job_id(JOB, "c0000") not in decision.cancel_pieces  # done: nothing to stop


def test_a_piece_failing_its_last_attempt_fails_the_video() -> None:
    status, _ = chunked_status()
    status["chunks"] = dict(status["chunks"], failures={"c0003": POLICY.max_attempts - 1})
    pieces = {"c0003": JobView(JobState.FAILED, error="Traceback (most recent call last):\n  x\nOSError: disk",
                               ended_at=NOW)}
    decision = decide(observe(status, JobView(JobState.MISSING), pieces), POLICY)
    assert decision.status["phase"] == "Failed"
    assert "c0003 failed 3 times; the last time: OSError: disk" in decision.status["message"]


def test_all_pieces_done_enqueues_the_stitch_then_its_result_completes_the_video() -> None:
    status, _ = chunked_status()
    names = chunking.pieces(4, True)
    pieces = {p: ok() for p in names}
    decision = decide(observe(status, JobView(JobState.MISSING), pieces), POLICY)
    assert [p.piece for p in decision.pieces] == ["stitch"] and decision.pieces[0].kind == "stitch"
    assert any(e.reason == "Stitching" for e in decision.events)
    status = apply(status, decision)
    pieces["stitch"] = JobView(JobState.RUNNING, started_at=NOW)
    assert decide(observe(status, JobView(JobState.MISSING), pieces), POLICY).idle
    pieces["stitch"] = JobView(JobState.FINISHED, result=completed(), started_at=STARTED, ended_at=NOW)
    done = decide(observe(status, JobView(JobState.MISSING), pieces), POLICY)
    assert done.status["phase"] == "Completed" and done.status["progress"] == 100
    assert done.status["chunks"]["completed"] == 4 and done.status["chunks"]["summary"] == "4/4"
    assert done.status["attempts"] == 1 and done.remove_parts
    assert done.status["outputs"]["summary"] == "720p,480p"


def test_progress_is_weighed_by_chunk_duration_and_never_goes_back() -> None:
    plan = chunking.plan_chunks(MEDIA, 10, 60)
    assert progress(plan, frozenset(), {}, MEDIA) == 0
    assert progress(plan, frozenset({"c0003"}), {}, MEDIA) == int(99 * 65 / MEDIA)
    assert progress(plan, frozenset({"c0000"}), {"c0001": 50}, MEDIA) == int(99 * 90 / MEDIA)
    assert progress(plan, frozenset(c.name for c in plan), {}, MEDIA) == 99
    status, _ = chunked_status()
    status["progress"] = 60
    pieces = {p: JobView(JobState.RUNNING) for p in chunking.pieces(4, True)}
    decision = decide(observe(status, JobView(JobState.MISSING), pieces, piece_progress={"c0000": 10}), POLICY)
    assert "progress" not in decision.status  # 60 stays; a restarted chunk never pulls it back


def test_the_survey_counts_a_finished_result_and_a_marker_alike() -> None:
    s = survey(["c0000", "c0001", "audio"], {"c0000": ok()}, frozenset({"c0001"}), {}, 3, POLICY.delay_after, NOW)
    assert s.done == {"c0000", "c0001"} and s.wanted == ("audio",) and s.broken is None


def test_a_spec_change_mid_chunks_stops_the_old_pieces() -> None:
    status, _ = chunked_status()
    decision = decide(Observation(UID, 2, (720,), status, JobView(JobState.MISSING), None, NOW), POLICY)
    assert decision.cancel_job_id == JOB and decision.status["chunks"] is None
    assert set(decision.cancel_pieces) == {chunking.piece_job_id(JOB, p) for p in
                                           ["c0000", "c0001", "c0002", "c0003", "audio", "stitch"]}
