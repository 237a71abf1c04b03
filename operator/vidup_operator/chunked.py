"""The chunked stage of a long video, as pure facts: which pieces are done, which want a job, which
broke the video, and how far the whole has come.

A long video's ``whole`` job only probes it and answers ``chunked`` (see :mod:`vidup.chunking`); from
then on the resource's ``status.chunks`` says the video is in pieces, and every look surveys them:

* a piece is **done** when its done marker is on storage (what the worker leaves last) or its job
  returned a completed result: the marker is what survives a Redis flush, so finished chunks are
  never encoded again, whoever restarted;
* a piece whose job is missing (never enqueued, or Redis forgot it) or canceled **wants a job**;
* a piece whose worker died **was lost**: it wants a job too, and the loss is counted per piece in
  ``status.chunks.losses``, so a chunk that kills every worker it meets fails the video after
  ``max_attempts`` losses instead of looping for ever;
* a piece that returned a failed result (invalid media) or that failed its last RQ retry **breaks**
  the video. A raised failure is retried by RQ itself with the operator's backoff
  (``vidup_operator.jobs.piece_retry``), so a transient error in one chunk costs that chunk only.

The decision table (:mod:`vidup_operator.decisions`) turns a :class:`Survey` into jobs and status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    #: The subset of ``wanted`` whose worker died this time (each costs one of its losses).
    lost: tuple[str, ...] = ()
    broken: Broken | None = None
    running: tuple[str, ...] = ()
    losses: dict[str, int] = field(default_factory=dict)


def _done(piece: str, view: JobView | None, markers: frozenset[str]) -> bool:
    if piece in markers:
        return True
    return (
        view is not None and view.state is JobState.FINISHED
        and view.result is not None and view.result.status == "completed"
    )


def survey(
    names: list[str], views: Mapping[str, JobView], markers: frozenset[str], losses: Mapping[str, int],
    max_losses: int,
) -> Survey:
    """Classify every piece in ``names`` (see the module docstring)."""
    done: set[str] = set()
    wanted: list[str] = []
    lost: list[str] = []
    running: list[str] = []
    counted = {k: int(v) for k, v in losses.items()}
    broken: Broken | None = None
    for piece in names:
        view = views.get(piece) or JobView(JobState.MISSING)
        if _done(piece, view, markers):
            done.add(piece)
        elif view.state is JobState.FINISHED:
            invalid = view.result is not None and view.result.status == "failed"
            broken = broken or Broken(piece, view, invalid_media=invalid)
        elif view.state is JobState.FAILED:
            broken = broken or Broken(piece, view, invalid_media=False)
        elif view.state is JobState.ABANDONED:
            counted[piece] = counted.get(piece, 0) + 1
            if counted[piece] >= max_losses:
                broken = broken or Broken(piece, view, invalid_media=False)
            else:
                wanted.append(piece)
                lost.append(piece)
        elif view.state in (JobState.MISSING, JobState.CANCELED):
            wanted.append(piece)
        elif view.state is JobState.RUNNING:
            running.append(piece)
    return Survey(frozenset(done), tuple(wanted), tuple(lost), broken, tuple(running), counted)


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
