"""The chunked stage of a long video, as pure facts: which pieces are done, which want a job, which
broke the video, and how far the whole has come.

A long video's ``whole`` job only probes it and answers ``chunked`` (see :mod:`vidup.chunking`); from
then on the resource's ``status.chunks`` says the video is in pieces, and every look surveys them:

* a piece is **done** when its done marker is on storage (what the worker leaves last) or its job
  returned a completed result: the marker is what survives a Redis flush, so finished chunks are
  never encoded again, whoever restarted;
* a piece whose job is missing (never enqueued, or Redis forgot it) or canceled **wants a job**;
* a piece whose worker died **was lost**: it wants a job again at once (a death is not the
  piece's fault); a piece whose job raised **failed**: it wants a job again once the operator's
  backoff has passed since the failure. Both are counted per piece in ``status.chunks.failures``,
  and a piece at ``max_attempts`` failed or lost runs breaks the video (a chunk that kills every
  worker it meets must not loop for ever). The operator is the only one that requeues a piece:
  pieces carry no RQ retries, so the workers' dead-worker sweep (which requeues jobs with retries
  left) never races it into running one piece twice;
* a piece that returned a failed result (invalid media) **breaks** the video at once.

The decision table (:mod:`vidup_operator.decisions`) turns a :class:`Survey` into jobs and status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vidup import chunking
from vidup_operator.jobview import JobState, JobView


@dataclass(frozen=True)
class Broken:
    """A piece that ends the video: a permanent media error, or a transient one out of retries."""

    piece: str
    view: JobView
    #: True for a returned ``failed`` result (InvalidMedia): the same bytes fail every time.
    invalid_media: bool


@dataclass(frozen=True)
class Survey:
    done: frozenset[str]
    #: Pieces to enqueue (``replace``: drop what is left of a dead run first), in plan order.
    wanted: tuple[str, ...] = ()
    #: The subset of ``wanted`` whose worker died this time, and the one whose run failed.
    lost: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    broken: Broken | None = None
    running: tuple[str, ...] = ()
    #: ``status.chunks.failures`` with this look's requeues counted.
    failures: dict[str, int] = field(default_factory=dict)
    #: Seconds until the earliest failed piece's backoff is over (None: none is waiting).
    wake_after: float | None = None


def _done(piece: str, view: JobView | None, markers: frozenset[str]) -> bool:
    if piece in markers:
        return True
    return (
        view is not None and view.state is JobState.FINISHED
        and view.result is not None and view.result.status == "completed"
    )


def survey(
    names: list[str], views: Mapping[str, JobView], markers: frozenset[str], failures: Mapping[str, int],
    max_attempts: int, delay_after: Callable[[int], float], now: datetime,
) -> Survey:
    """Classify every piece in ``names`` (see the module docstring). ``delay_after(n)`` is the
    backoff after a piece's ``n``-th failed run."""
    done: set[str] = set()
    wanted: list[str] = []
    lost: list[str] = []
    failed: list[str] = []
    running: list[str] = []
    counted = {k: int(v) for k, v in failures.items()}
    broken: Broken | None = None
    wake: list[float] = []
    for piece in names:
        view = views.get(piece) or JobView(JobState.MISSING)
        runs = counted.get(piece, 0) + 1  # with the run in front of us
        if _done(piece, view, markers):
            done.add(piece)
        elif view.state is JobState.FINISHED:
            invalid = view.result is not None and view.result.status == "failed"
            broken = broken or Broken(piece, view, invalid_media=invalid)
        elif view.state in (JobState.FAILED, JobState.ABANDONED):
            if runs >= max_attempts:
                broken = broken or Broken(piece, view, invalid_media=False)
                continue
            if view.state is JobState.FAILED and view.ended_at is not None:
                due = view.ended_at + timedelta(seconds=delay_after(runs))
                if now < due:
                    wake.append((due - now).total_seconds())
                    continue
            counted[piece] = runs
            wanted.append(piece)
            (lost if view.state is JobState.ABANDONED else failed).append(piece)
        elif view.state in (JobState.MISSING, JobState.CANCELED):
            wanted.append(piece)
        elif view.state is JobState.RUNNING:
            running.append(piece)
    return Survey(frozenset(done), tuple(wanted), tuple(lost), tuple(failed), broken, tuple(running), counted,
                  min(wake) if wake else None)


def progress(
    plan: list[chunking.Chunk], done: frozenset[str], running: Mapping[str, int], media_seconds: float,
) -> int:
    """0-99 over the video chunks, each weighed by its duration (audio is a few seconds of work on
    a worker of its own, so it does not count); 100 is the stitched package in place."""
    if media_seconds <= 0 or not plan:
        return 0
    seconds = 0.0
    for chunk in plan:
        if chunk.name in done:
            seconds += chunk.duration_seconds
        else:
            seconds += chunk.duration_seconds * max(0, min(100, running.get(chunk.name, 0))) / 100
    return max(0, min(99, int(99 * seconds / media_seconds)))
