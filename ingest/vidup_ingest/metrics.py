"""The ingest's Prometheus metrics, defined once and updated from the code paths they count.

Under gunicorn every worker process records into ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode, set up by :mod:`vidup_ingest.server.metrics` before any worker exists) and the
master serves the sum; created in-process (tests, ``create_app``) they live in the default registry.
Labels are low-cardinality on purpose: routes are URL rules (``/files/<upload_id>``), never paths,
so no upload or video id ever becomes a label.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UPLOADS_CREATED = Counter("vidup_ingest_uploads_created_total", "Uploads created (POST), partial and final included.")
UPLOADS_FINISHED = Counter("vidup_ingest_uploads_finished_total",
                           "Uploads that received their last byte (or were concatenated), partial ones included.")
UPLOADS_TERMINATED = Counter("vidup_ingest_uploads_terminated_total", "Uploads deleted by their client (DELETE).")
UPLOADS_EXPIRED = Counter("vidup_ingest_uploads_expired_total", "Unfinished uploads deleted because they expired.")
RECEIVED_BYTES = Counter("vidup_ingest_received_bytes_total", "Upload body bytes committed to storage.")
REQUEST_DURATION = Histogram(
    "vidup_ingest_request_duration_seconds",
    "Time to answer a request (to the response head; a streamed response's body is not included).",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
# livesum: the sum over the live worker processes (a dead worker's bodies are no longer in progress).
UPLOADS_IN_PROGRESS = Gauge("vidup_ingest_uploads_in_progress", "Upload bodies (PATCH or POST) being received now.",
                            multiprocess_mode="livesum")
HANDOVER_FAILURES = Counter("vidup_ingest_handover_failures_total",
                            "Failed calls to the Kubernetes API for a VideoTranscode (retried later).",
                            ["operation"])
RATE_LIMITED = Counter("vidup_ingest_rate_limited_total", "Requests refused with 429 by a per-tenant rate limit.",
                       ["scope"])

#: The route label of a request that matched no URL rule (404s, scanners): one series for all.
UNMATCHED_ROUTE = "unmatched"


def route_label(rule: str | None) -> str:
    """The ``route`` label for a request: its URL rule, or one fixed value when none matched (an
    unmatched path would make every scanner's probe a new series)."""
    return rule if rule else UNMATCHED_ROUTE
