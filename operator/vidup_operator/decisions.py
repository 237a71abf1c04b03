"""The reconcile decision table: given a resource's status and its job's state, what to do.

Pure: no Redis, no API server, no clock. :func:`decide` is called over and over (level-triggered)
with whatever is true *now*; it must return the same answer for the same inputs and converge, so a
restart, a duplicate event or a lost Redis never enqueues twice or loses a video:

* the job id is ``job_id_for(uid, generation)``; an enqueue of an id that exists is a no-op;
* ``attempts`` counts runs that *started* (a job lost from the queue before it ran costs nothing),
  each run once, known by its start time (a run that only looked lost for a moment is not new);
* a raised (transient) failure is retried with exponential backoff until ``max_attempts`` runs;
* a returned ``failed`` result is a permanent media error: Failed at once;
* a job that says it runs but whose worker is gone, or a job Redis forgot, is enqueued again;
* a long video's job answers ``chunked``: from then on ``status.chunks`` says the video is in
  pieces, and the chunked stage (at the end of this module, over :mod:`vidup_operator.chunked`)
  follows the pieces, then the stitch, instead of the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from vidup import chunking
from vidup.resource import Phase
from vidup.transcode_jobs import (
    KIND_AUDIO,
    KIND_CHUNK,
    KIND_STITCH,
    REASON_INVALID_MEDIA,
    TranscodeResult,
    backoff_intervals,
    job_id_for,
)
from vidup_operator import chunked
from vidup_operator import status as st
from vidup_operator.jobview import JobState, JobView


@dataclass(frozen=True)
class Policy:
    """The retry budget (from :class:`vidup.settings.Settings`)."""

    max_attempts: int = 3
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0

    def delay_after(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed run (base, 2*base, ... capped), at least
        one: a run is known by its start second (see ``_counted``), so a retry never starts in it."""
        intervals = backoff_intervals(max(1, attempts), self.retry_base_seconds, self.retry_max_seconds)
        return max(1.0, float(intervals[-1]))


@dataclass(frozen=True)
class Observation:
    """Everything :func:`decide` may look at; gathered by the reconciler's edges."""

    uid: str
    generation: int
    renditions: tuple[int, ...]
    status: Mapping[str, Any]
    job: JobView
    progress: int | None
    now: datetime
    #: The spec's segment length and the operator's VIDUP_CHUNK_SECONDS (a new chunked stage's plan).
    segment_seconds: int = 10
    chunk_seconds: int = 0
    #: The chunked stage only: each piece's job (by piece name, ``stitch`` included), the pieces
    #: whose done marker is on storage, and the running chunks' progress.
    pieces: Mapping[str, JobView] = field(default_factory=dict)
    markers: frozenset[str] = frozenset()
    piece_progress: Mapping[str, int] = field(default_factory=dict)


class JobCommand(StrEnum):
    NONE = "none"
    #: Enqueue ``job_id`` unless a job with that id exists already.
    ENQUEUE = "enqueue"
    #: Delete whatever is left of ``job_id`` (a failed or abandoned run) and enqueue it afresh.
    REPLACE = "replace"


@dataclass(frozen=True)
class PieceCommand:
    """Enqueue one piece of a chunked video (see :mod:`vidup.chunking`), dropping a dead run of it
    first; the request is the video's with these fields (the plan is fixed by the status)."""

    job_id: str
    piece: str
    kind: str
    media_seconds: float
    chunk_seconds: int
    chunk: int = -1


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the resource (shown by ``kubectl describe``)."""

    reason: str
    message: str
    type: str = "Normal"


@dataclass(frozen=True)
class Decision:
    job: JobCommand = JobCommand.NONE
    job_id: str = ""
    #: A job of an older generation to cancel (the spec changed under it).
    cancel_job_id: str = ""
    #: Pieces of a chunked video to enqueue, and piece jobs to stop (the video failed under them).
    pieces: tuple[PieceCommand, ...] = ()
    cancel_pieces: tuple[str, ...] = ()
    #: The stitched package is in place: the pieces on storage can go.
    remove_parts: bool = False
    #: A JSON merge patch for ``status``; empty means "nothing to write".
    status: dict[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    #: Come back after this many seconds at the latest (a retry is due), even without news.
    wake_after: float | None = None

    @property
    def idle(self) -> bool:
        return (self.job is JobCommand.NONE and not self.status and not self.cancel_job_id
                and not self.pieces and not self.cancel_pieces and not self.remove_parts)


def needs_work(generation: int, status: Mapping[str, Any] | None) -> bool:
    """Whether a resource still needs the operator: not terminal for its current generation."""
    status = status or {}
    phase = status.get("phase")
    terminal = phase in (Phase.COMPLETED, Phase.FAILED)
    return not (terminal and status.get("observedGeneration") == generation)


def _phase_patch(
    obs: Observation,
    phase: Phase,
    reason: str,
    message: str,
    *,
    ready: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    conditions = st.ready_condition(
        obs.status.get("conditions"), ready=ready, reason=reason, message=message,
        generation=obs.generation, now=obs.now,
    )
    return {
        "phase": str(phase),
        "reason": reason,
        "message": message,
        "observedGeneration": obs.generation,
        "conditions": conditions,
        **fields,
    }


def _changed(current: Mapping[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is already there, so an unchanged status is never re-written."""
    return {k: v for k, v in patch.items() if current.get(k) != v}


def decide(obs: Observation, policy: Policy) -> Decision:
    """The one decision for this moment; see the module docstring for the rules."""
    job_id = job_id_for(obs.uid, obs.generation)
    status = obs.status
    if status.get("jobId") != job_id or status.get("observedGeneration") != obs.generation:
        return _start_generation(obs, job_id)

    phase = status.get("phase")
    if phase in (Phase.COMPLETED, Phase.FAILED):
        return Decision()
    attempts = int(status.get("attempts") or 0)
    if chunked_stage(status):
        return _decide_chunked(obs, job_id, attempts, policy)
    processing = phase == Phase.PROCESSING
    job = obs.job

    if job.state in (JobState.MISSING, JobState.CANCELED):
        return _requeue_lost(obs, job_id, policy)

    if job.state is JobState.WAITING:
        if processing:  # someone (RQ's abandoned-job handling) put it back on the queue
            message = "the worker running it was lost; the job is back on the queue"
            return Decision(
                status=_phase_patch(obs, Phase.QUEUED, st.REASON_REQUEUED, message, progress=0),
                events=(Event(st.REASON_REQUEUED, message, "Warning"),),
            )
        if phase != Phase.QUEUED:  # e.g. Pending after a Redis outage, and the job is there after all
            return Decision(status=_queued(obs, job_id, "waiting for a worker"))
        return Decision()

    if job.state is JobState.RUNNING:
        if not processing:
            counted = _counted(status, job)
            if not counted:
                attempts += 1
            message = f"attempt {attempts} of {policy.max_attempts} running"
            started = job.started_at or obs.now
            patch = _phase_patch(
                obs, Phase.PROCESSING, st.REASON_PROCESSING, message,
                attempts=attempts, progress=max(0, min(99, obs.progress or 0)),
                startedAt=st.rfc3339(started),
            )
            if counted:  # the run we already counted, seen as lost for a moment: no new start
                return Decision(status=patch)
            return Decision(status=patch, events=(Event("Started", f"transcode started ({message})"),))
        current = int(status.get("progress") or 0)
        if obs.progress is not None and min(99, obs.progress) > current:
            return Decision(status={"progress": min(99, obs.progress)})
        return Decision()

    if not processing and not _waiting_to_retry(status, job) and not _counted(status, job):
        attempts += 1  # the run started and ended between two looks
    if job.state is JobState.FINISHED:
        return _finished(obs, job, attempts)
    if job.state is JobState.ABANDONED:
        return _abandoned(obs, job_id, attempts, policy)
    return _failed(obs, job_id, job, attempts, policy)


def _start_generation(obs: Observation, job_id: str) -> Decision:
    """A new resource, or a spec change: one fresh job for this generation."""
    old = str(obs.status.get("jobId") or "")
    message = "waiting for a worker"
    patch = _queued(obs, job_id, message)
    patch.update(attempts=0, progress=0, startedAt=None, completedAt=None, source=None, chunks=None)
    if old and old != job_id:
        event = Event(st.REASON_QUEUED, f"spec changed (generation {obs.generation}); job {job_id} queued")
    else:
        event = Event(st.REASON_QUEUED, f"job {job_id} queued")
    return Decision(
        job=JobCommand.ENQUEUE, job_id=job_id, cancel_job_id=old if old != job_id else "",
        cancel_pieces=all_piece_jobs(old, obs.status) if old != job_id else (), status=patch, events=(event,),
    )


def all_piece_jobs(job_id: str, status: Mapping[str, Any]) -> tuple[str, ...]:
    """Every piece job of ``job_id``'s chunked run, the stitch included (none if it was not chunked):
    what a spec change or a delete must stop."""
    if not job_id or not chunked_stage(status):
        return ()
    names = chunking.pieces(int(status["chunks"]["total"]), has_audio=True)
    return tuple(chunking.piece_job_id(job_id, p) for p in [*names, chunking.STITCH])


def _queued(obs: Observation, job_id: str, message: str) -> dict[str, Any]:
    return _phase_patch(
        obs, Phase.QUEUED, st.REASON_QUEUED, message, jobId=job_id,
        outputs=st.requested_outputs(obs.renditions),
    )


def _requeue_lost(obs: Observation, job_id: str, policy: Policy) -> Decision:
    """The resource says there is work, Redis has no (live) job: the resource is the truth."""
    if _waiting_to_retry(obs.status, obs.job):
        # The failed run was forgotten while we waited to retry it: retry now instead.
        return _retry_now(obs, job_id, int(obs.status.get("attempts") or 0), policy)
    if obs.status.get("phase") == Phase.PENDING:
        # The first enqueue could not reach Redis; this is that enqueue, not a recovery.
        patch = _queued(obs, job_id, "waiting for a worker")
        return Decision(
            job=JobCommand.ENQUEUE, job_id=job_id, status=patch,
            events=(Event(st.REASON_QUEUED, f"job {job_id} queued"),),
        )
    message = "the job was lost from Redis; enqueued again"
    if obs.job.state is JobState.CANCELED:
        message = "the job was canceled outside the operator; enqueued again"
    patch = _changed(obs.status, _phase_patch(obs, Phase.QUEUED, st.REASON_REQUEUED, message, progress=0))
    return Decision(
        job=JobCommand.REPLACE, job_id=job_id, status=patch,
        events=(Event(st.REASON_REQUEUED, message, "Warning"),),
    )


def _finished(obs: Observation, job: JobView, attempts: int) -> Decision:
    result = job.result
    ended = st.rfc3339(job.ended_at or obs.now)
    if result is None:
        message = "the job finished without a readable result"
        patch = _phase_patch(
            obs, Phase.FAILED, st.REASON_TRANSCODE_FAILED, message, attempts=attempts, completedAt=ended,
        )
        return Decision(status=patch, events=(Event("Failed", message, "Warning"),))
    if result.status == "chunked":
        return _start_chunks(obs, job_id_for(obs.uid, obs.generation), result, attempts)
    if result.status == "completed":
        heights = st.summary(r.height for r in result.renditions)
        duration = result.source.duration_seconds if result.source else result.duration_seconds
        message = f"transcoded {duration:.1f}s of video into {heights}"
        patch = _phase_patch(
            obs, Phase.COMPLETED, st.REASON_TRANSCODED, message, ready=True,
            attempts=attempts, progress=100, completedAt=ended,
            source=st.source_status(result.source), outputs=st.outputs_status(result),
        )
        return Decision(status=patch, events=(Event("Completed", message),))
    reason = result.reason or REASON_INVALID_MEDIA
    message = result.message or "the upload could not be transcoded"
    patch = _phase_patch(
        obs, Phase.FAILED, reason, message, attempts=attempts, completedAt=ended,
        source=st.source_status(result.source),
    )
    return Decision(status=patch, events=(Event("Failed", f"{reason}: {message}", "Warning"),))


def _abandoned(obs: Observation, job_id: str, attempts: int, policy: Policy) -> Decision:
    message = f"attempt {attempts} of {policy.max_attempts} was abandoned: the worker running it was lost"
    if attempts >= policy.max_attempts:
        return _give_up(obs, attempts, message)
    patch = _phase_patch(
        obs, Phase.QUEUED, st.REASON_REQUEUED, f"{message}; enqueued again", attempts=attempts, progress=0,
    )
    return Decision(
        job=JobCommand.REPLACE, job_id=job_id, status=patch,
        events=(Event(st.REASON_REQUEUED, f"{message}; enqueued again", "Warning"),),
    )


def _failed(obs: Observation, job_id: str, job: JobView, attempts: int, policy: Policy) -> Decision:
    error = _last_line(job.error) or "the transcode failed"
    if _waiting_to_retry(obs.status, job):
        # Without an end time (the run vanished, or RQ's cleanup failed an abandoned run without
        # stamping one) there is no fixed point to count the backoff from: counting from "now"
        # would push the retry back on every look, for ever. The run ended at least one look ago.
        if job.ended_at is None:
            return _retry_now(obs, job_id, attempts, policy)
        due = job.ended_at + timedelta(seconds=policy.delay_after(attempts))
        if obs.now >= due:
            return _retry_now(obs, job_id, attempts, policy)
        return Decision(wake_after=(due - obs.now).total_seconds())
    if attempts >= policy.max_attempts:
        return _give_up(obs, attempts, f"attempt {attempts} of {policy.max_attempts} failed: {error}")
    delay = policy.delay_after(attempts)
    message = f"attempt {attempts} of {policy.max_attempts} failed: {error}; retrying in {delay:g}s"
    patch = _phase_patch(obs, Phase.QUEUED, st.REASON_RETRYING, message, attempts=attempts, progress=0)
    return Decision(status=patch, events=(Event(st.REASON_RETRYING, message, "Warning"),), wake_after=delay)


def _retry_now(obs: Observation, job_id: str, attempts: int, policy: Policy) -> Decision:
    """The backoff is over: enqueue the next run, and leave Retrying so its outcome counts."""
    message = f"attempt {attempts + 1} of {policy.max_attempts} waiting for a worker"
    patch = _phase_patch(obs, Phase.QUEUED, st.REASON_QUEUED, message, progress=0)
    return Decision(job=JobCommand.REPLACE, job_id=job_id, status=patch)


def _give_up(obs: Observation, attempts: int, message: str) -> Decision:
    patch = _phase_patch(
        obs, Phase.FAILED, st.REASON_TRANSCODE_FAILED, message, attempts=attempts,
        completedAt=st.rfc3339(obs.job.ended_at or obs.now),
    )
    return Decision(status=patch, events=(Event("Failed", message, "Warning"),))


def _counted(status: Mapping[str, Any], job: JobView) -> bool:
    """Whether the job's run is the one ``attempts`` already counts: the same start time.

    An attempt is a run that started, so a run is counted once however the looks at it go: a
    running job can look lost for a moment (a heartbeat late on a starved node, a look between two
    writes of a busy worker) and the status go back to Queued; when the same run shows up again it
    is that run resumed, not a new attempt. ``startedAt`` has second precision; a new run of the
    job cannot start in the second the previous one did, because a retry waits at least a second
    (``Policy.delay_after``) and a requeue follows the detection of a dead worker.
    """
    return (
        job.started_at is not None
        and int(status.get("attempts") or 0) > 0
        and status.get("startedAt") == st.rfc3339(job.started_at)
    )


def _waiting_to_retry(status: Mapping[str, Any], job: JobView) -> bool:
    """Queued with reason Retrying and the failed run still there: only the backoff is left."""
    return (
        status.get("phase") == Phase.QUEUED
        and status.get("reason") == st.REASON_RETRYING
        and job.state in (JobState.FAILED, JobState.MISSING, JobState.CANCELED)
    )


def _last_line(text: str) -> str:
    """The exception of a traceback (the worker's message, maybe several lines), not the stack."""
    lines = text.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        body = lines[starts[-1] + 1:]
        first = next((i for i, line in enumerate(body) if line and not line.startswith(" ")), None)
        lines = body[first:] if first is not None else body
    return "\n".join(lines).strip()[:2000]


def pending_patch(obs: Observation, job_id: str, error: str) -> dict[str, Any]:
    """Status when the job could not be enqueued (Redis unreachable): Pending, to be tried again."""
    message = f"could not enqueue the transcode yet: {error}"
    patch = _phase_patch(obs, Phase.PENDING, st.REASON_PENDING, message, jobId=job_id)
    patch.update(
        attempts=0, progress=0, startedAt=None, completedAt=None, source=None, chunks=None,
        outputs=st.requested_outputs(obs.renditions),
    )
    return patch


# -- the chunked stage ---------------------------------------------------------------------------


def chunked_stage(status: Mapping[str, Any]) -> bool:
    """Whether the resource's current generation is being encoded in pieces."""
    return int((status.get("chunks") or {}).get("total") or 0) > 0


def _piece_command(job_id: str, piece: str, media_seconds: float, chunk_seconds: int) -> PieceCommand:
    kind = {chunking.AUDIO: KIND_AUDIO, chunking.STITCH: KIND_STITCH}.get(piece, KIND_CHUNK)
    index = int(piece[1:]) if kind == KIND_CHUNK else -1
    return PieceCommand(chunking.piece_job_id(job_id, piece), piece, kind, media_seconds, chunk_seconds, index)


def _start_chunks(obs: Observation, job_id: str, result: TranscodeResult, attempts: int) -> Decision:
    """The ``whole`` job probed a long source and split nothing yet: plan, record, enqueue every piece.

    The plan is the operator's own (VIDUP_CHUNK_SECONDS now, the probed duration), written into
    ``status.chunks``; every later look and every piece plans from the status, never from config."""
    source = result.source
    media = source.duration_seconds if source is not None else result.duration_seconds
    # (VIDUP_CHUNK_SECONDS set to 0 since the whole job was enqueued: the default length, not none)
    seconds = chunking.chunk_length(obs.segment_seconds, obs.chunk_seconds or chunking.DEFAULT_CHUNK_SECONDS)
    plan = chunking.plan_chunks(media, obs.segment_seconds, seconds)
    has_audio = bool(source and source.has_audio)
    names = chunking.pieces(len(plan), has_audio)
    audio = " and the audio" if has_audio else ""
    message = f"{len(plan)} chunks of {seconds}s{audio} queued ({media:.1f}s of video)"
    chunks = {"total": len(plan), "completed": 0, "seconds": seconds, "summary": f"0/{len(plan)}", "failures": {}}
    patch = _phase_patch(obs, Phase.PROCESSING, st.REASON_CHUNKED, message, attempts=max(1, attempts),
                         progress=0, source=st.source_status(source), chunks=chunks)
    commands = tuple(_piece_command(job_id, name, media, seconds) for name in names)
    return Decision(status=patch, pieces=commands, events=(Event(st.REASON_CHUNKED, message),))


def _decide_chunked(obs: Observation, job_id: str, attempts: int, policy: Policy) -> Decision:
    """Every look of a chunked video: enqueue what is missing, then the stitch, then Completed."""
    status = obs.status
    chunks = dict(status.get("chunks") or {})
    total, seconds = int(chunks["total"]), int(chunks.get("seconds") or 0)
    source = status.get("source") or {}
    media = float(source.get("durationSeconds") or 0.0)
    names = chunking.pieces(total, bool(source.get("hasAudio")))
    plan = chunking.plan_chunks(media, obs.segment_seconds, seconds)

    def look(pieces: list[str], failures: Mapping[str, int]) -> chunked.Survey:
        return chunked.survey(pieces, obs.pieces, obs.markers, failures, policy.max_attempts, policy.delay_after,
                              obs.now)

    survey = look(names, chunks.get("failures") or {})
    result = survey
    completed = sum(1 for c in plan if c.name in survey.done)
    stitch = obs.pieces.get(chunking.STITCH) or JobView(JobState.MISSING)
    if survey.broken is None and len(survey.done) == len(names):
        result = look([chunking.STITCH], survey.failures)
        if chunking.STITCH in result.done:
            done = _finished(obs, stitch, attempts)
            done_chunks = {**chunks, "completed": total, "summary": f"{total}/{total}"}
            return Decision(status={**done.status, "chunks": done_chunks}, events=done.events, remove_parts=True)
    if result.broken is not None:
        return _chunk_broke(obs, result.broken, attempts, names, survey.done, policy.max_attempts)
    new_chunks = {**chunks, "completed": completed, "summary": f"{completed}/{total}", "failures": result.failures}
    progress = max(int(status.get("progress") or 0),
                   chunked.progress(plan, survey.done, obs.piece_progress, media))
    patch = _changed(status, {"chunks": new_chunks, "progress": progress})
    events = []
    if result.lost:
        events.append(Event(st.REASON_REQUEUED, f"the worker running {', '.join(result.lost)} was lost; "
                                                "enqueued again", "Warning"))
    for piece in result.failed:
        error = _last_line(obs.pieces[piece].error) or "it failed"
        runs = result.failures[piece]
        events.append(Event(st.REASON_RETRYING, f"{piece} attempt {runs} of {policy.max_attempts} failed: {error}; "
                                                "enqueued again", "Warning"))
    missing = [p for p in result.wanted if p not in result.lost and p not in result.failed]
    if set(missing) - {chunking.STITCH}:
        events.append(Event(st.REASON_REQUEUED, f"{', '.join(missing)} not found in Redis; enqueued again",
                            "Warning"))
    if chunking.STITCH in missing:
        events.append(Event(st.REASON_STITCHING, f"all {total} chunks encoded; stitching the package"))
    commands = tuple(_piece_command(job_id, p, media, seconds) for p in result.wanted)
    return Decision(status=patch, pieces=commands, events=tuple(events), wake_after=result.wake_after)


def _chunk_broke(
    obs: Observation, broken: chunked.Broken, attempts: int, names: list[str], done: frozenset[str],
    max_attempts: int,
) -> Decision:
    """One piece ends the video: Failed at once, and the other pieces' jobs are stopped."""
    view = broken.view
    if broken.invalid_media and view.result is not None:
        reason = view.result.reason or REASON_INVALID_MEDIA
        message = f"{broken.piece}: {view.result.message or 'the upload could not be transcoded'}"
    else:
        reason = st.REASON_TRANSCODE_FAILED
        why = _last_line(view.error) or "the job finished without a readable result"
        if view.state is JobState.ABANDONED:
            why = "the worker running it was lost"
        message = f"{broken.piece} failed {max_attempts} times; the last time: {why}"
        if view.state is JobState.FINISHED:
            message = f"{broken.piece}: {why}"
    patch = _phase_patch(obs, Phase.FAILED, reason, message, attempts=attempts,
                         completedAt=st.rfc3339(view.ended_at or obs.now))
    job_id = job_id_for(obs.uid, obs.generation)
    others = tuple(chunking.piece_job_id(job_id, p) for p in [*names, chunking.STITCH]
                   if p not in done and p != broken.piece)
    return Decision(status=patch, cancel_pieces=others, events=(Event("Failed", f"{reason}: {message}", "Warning"),))
