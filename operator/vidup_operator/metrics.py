"""The operator's Prometheus metrics, defined once; served on ``VIDUP_METRICS_PORT`` (0/empty: off).

Two kinds: counters and histograms updated where the reconciler acts (:func:`record_decision`,
whose arithmetic is the pure :func:`decision_facts`), and gauges computed at scrape time from what
the operator already knows, so they can never drift: resources by phase from the watch stream
(:class:`ResourceView`, fed by an event handler) and the transcode queue from RQ
(:class:`QueueCollector`). Labels are phases, reasons and the queue name, never a video id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from vidup.resource import Phase
from vidup_operator import status as st
from vidup_operator.decisions import Decision, JobCommand, Observation
from vidup_operator.jobview import JobState

log = logging.getLogger(__name__)

#: The phase label of a resource the operator has not written a status for yet.
NEW = "New"

#: Seconds, from a fast local encode to a long video waiting behind a busy queue.
_WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

TRANSITIONS = Counter("vidup_operator_transitions_total", "Phase changes written to VideoTranscode status.",
                      ["from_phase", "to_phase"])
UPLOAD_TO_START = Histogram(
    "vidup_operator_upload_to_start_seconds",
    "From the upload's handover (the resource's creation) to its first transcode run starting.",
    buckets=_WAIT_BUCKETS,
)
START_TO_COMPLETE = Histogram(
    "vidup_operator_start_to_complete_seconds",
    "From the successful run's start to its end (the video Completed).", buckets=_WAIT_BUCKETS,
)
RETRIES = Counter("vidup_operator_retries_total", "Failed runs scheduled for another attempt after a backoff.")
REQUEUES = Counter("vidup_operator_requeues_total",
                   "Jobs put on the queue again, by what the operator saw of the previous one "
                   "(failed: a retry after backoff; abandoned/missing/canceled: lost; waiting: RQ requeued it).",
                   ["reason"])
LEADER = Gauge("vidup_operator_leader", "1 while this replica holds the leader lease and reconciles.")


@dataclass(frozen=True)
class DecisionFacts:
    """What one written decision means for the metrics (see :func:`decision_facts`)."""

    transition: tuple[str, str] | None = None
    upload_to_start: float | None = None
    start_to_complete: float | None = None
    retry: bool = False
    requeue_reason: str | None = None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def decision_facts(before: Mapping[str, Any], decision: Decision, obs: Observation, created: Any) -> DecisionFacts:
    """Pure: the transition, waits, retry and requeue a decision whose status patch was written.

    ``before`` is the status before the patch, ``created`` the resource's creationTimestamp (the
    ingest creates the resource when the upload finishes). The first run's start is counted once,
    when ``attempts`` goes from 0 to 1 (seen running, or seen only once it had ended: a short encode
    can start and end between two looks); a completion by the Completed phase.
    """
    patch = decision.status
    before_phase = before.get("phase")
    to_phase = patch.get("phase")
    transition = None
    if to_phase and to_phase != before_phase:
        transition = (str(before_phase or NEW), str(to_phase))
    upload_to_start = None
    first_start = patch.get("attempts") == 1 and int(before.get("attempts") or 0) == 0
    if first_start and obs.job.started_at is not None:
        created_at = _parse_time(created)
        if created_at is not None:
            upload_to_start = max(0.0, (obs.job.started_at - created_at).total_seconds())
    start_to_complete = None
    if to_phase == Phase.COMPLETED and obs.job.started_at is not None:
        ended = obs.job.ended_at or obs.now
        start_to_complete = max(0.0, (ended - obs.job.started_at).total_seconds())
    retry = to_phase == Phase.QUEUED and patch.get("reason") == st.REASON_RETRYING
    requeue_reason = None
    if decision.job is JobCommand.REPLACE or (
        to_phase == Phase.QUEUED and patch.get("reason") == st.REASON_REQUEUED and obs.job.state is JobState.WAITING
    ):
        requeue_reason = obs.job.state.value
    return DecisionFacts(transition, upload_to_start, start_to_complete, retry, requeue_reason)


def record_decision(before: Mapping[str, Any], decision: Decision, obs: Observation, created: Any) -> None:
    """Count a decision the reconciler has just written (job first, then status)."""
    facts = decision_facts(before, decision, obs, created)
    if facts.transition is not None:
        TRANSITIONS.labels(*facts.transition).inc()
    if facts.upload_to_start is not None:
        UPLOAD_TO_START.observe(facts.upload_to_start)
    if facts.start_to_complete is not None:
        START_TO_COMPLETE.observe(facts.start_to_complete)
    if facts.retry:
        RETRIES.inc()
    if facts.requeue_reason is not None:
        REQUEUES.labels(facts.requeue_reason).inc()


class ResourceView(Collector):
    """``vidup_operator_resources{phase}``: the phase of every VideoTranscode the watch stream showed
    this replica, counted at scrape time. Empty on a standby (it watches nothing)."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}

    def seen(self, uid: str, phase: str | None) -> None:
        self._phases[uid] = phase or NEW

    def gone(self, uid: str) -> None:
        self._phases.pop(uid, None)

    def clear(self) -> None:
        self._phases.clear()

    def counts(self) -> dict[str, int]:
        """Resources per phase, every known phase present (a zero is a value, not a gap)."""
        counts = {NEW: 0, **{str(p): 0 for p in Phase}}
        for phase in list(self._phases.values()):
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily("vidup_operator_resources", "VideoTranscodes by phase.", labels=["phase"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("vidup_operator_resources", "VideoTranscodes by phase.", labels=["phase"])
        for phase, count in sorted(self.counts().items()):
            family.add_metric([phase], count)
        yield family


class QueueStats(Protocol):
    """What :class:`QueueCollector` reads (:class:`vidup_operator.jobs.JobStore`)."""

    @property
    def queue_name(self) -> str: ...

    def queue_stats(self) -> tuple[int, float | None]: ...


class QueueCollector(Collector):
    """``vidup_operator_queue_depth`` and ``vidup_operator_queue_oldest_age_seconds``, read from RQ
    at scrape time. With Redis away the scrape still answers, without these two."""

    def __init__(self, jobs: QueueStats) -> None:
        self.jobs = jobs

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("vidup_operator_queue_depth", "Transcode jobs waiting for a worker.", labels=["queue"]),
            GaugeMetricFamily("vidup_operator_queue_oldest_age_seconds",
                              "Age of the job at the head of the queue (0 when empty).", labels=["queue"]),
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            depth, oldest = self.jobs.queue_stats()
        except RedisError as exc:
            log.warning("metrics: could not read the queue: %s", exc)
            return
        depth_family, age_family = self._families()
        depth_family.add_metric([self.jobs.queue_name], depth)
        age_family.add_metric([self.jobs.queue_name], oldest or 0.0)
        yield depth_family
        yield age_family


#: The one view the event handler feeds (the operator runs one Kopf per process).
RESOURCES = ResourceView()
REGISTRY.register(RESOURCES)


def serve_from_env(jobs: QueueStats | None = None) -> int:
    """Start the metrics server on ``VIDUP_METRICS_PORT`` (``VIDUP_METRICS_HOST``, default all
    interfaces) if set, with the queue gauges for ``jobs``; returns the port (0: not served)."""
    raw = os.environ.get("VIDUP_METRICS_PORT", "").strip()
    port = int(raw) if raw else 0
    if not port:
        return 0
    if jobs is not None:
        REGISTRY.register(QueueCollector(jobs))
    host = os.environ.get("VIDUP_METRICS_HOST", "").strip() or "0.0.0.0"
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return port

