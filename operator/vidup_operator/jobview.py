"""The job as the operator sees it: RQ's many statuses folded into the few the decisions care about.

Its own module so both the decision table and the chunked stage's survey (:mod:`.chunked`) use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from vidup.transcode_jobs import TranscodeResult


class JobState(StrEnum):
    """The job as the operator sees it, folded from RQ's many statuses."""

    MISSING = "missing"  # no such job in Redis (never enqueued, expired, or Redis lost its data)
    WAITING = "waiting"  # queued, scheduled, deferred: no worker has it yet
    RUNNING = "running"  # a live worker is executing it
    FINISHED = "finished"  # returned a result (completed or a permanent media failure)
    FAILED = "failed"  # raised, timed out or was stopped: transient
    ABANDONED = "abandoned"  # says started, but the worker running it is gone
    CANCELED = "canceled"  # someone canceled it; the resource still wants a transcode


@dataclass(frozen=True)
class JobView:
    state: JobState
    result: TranscodeResult | None = None
    error: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
