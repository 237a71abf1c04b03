"""The worker's Prometheus metrics, defined once; served on ``VIDUP_METRICS_PORT`` (0/empty: off).

RQ runs each job in a forked work-horse that exits afterwards, so nothing the horse counts in
memory would survive to a scrape (and prometheus_client's multiprocess mode would leave a file per
horse behind, for ever). Instead the horse writes what it measured into the job's meta
(:data:`META_KEY`, see :func:`vidup_transcoder.job.transcode`) and the worker process, which
outlives its horses and serves the metrics, records it once the horse is gone
(:func:`record_job`). A horse that died before writing (killed, out of memory) is a failure with
reason ``killed``. Labels are the rung count, outcome and failure reason: never a video id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

#: The job meta field the horse fills (a dict, see :func:`encode_record`).
META_KEY = "vidup_encode"

ENCODES_RUNNING = Gauge("vidup_worker_encodes_running", "Transcode jobs this worker is running now (0 or 1).")
ENCODES = Counter("vidup_worker_encodes_total", "Transcode jobs run, by ladder size and outcome.",
                  ["rungs", "outcome"])
ENCODE_SECONDS = Histogram(
    "vidup_worker_encode_seconds", "Wall time of the ladder's FFmpeg encode (probe and poster excluded).", ["rungs"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
REALTIME_FACTOR = Histogram(
    "vidup_worker_realtime_factor",
    "Seconds of video encoded per second of wall time (above 1: faster than real time).", ["rungs"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
FAILURES = Counter("vidup_worker_failures_total", "Transcode jobs that did not complete, by reason.", ["reason"])
FFMPEG_PEAK_MEMORY = Histogram(
    "vidup_worker_ffmpeg_peak_memory_bytes", "Peak resident memory of the largest FFmpeg/ffprobe child of a job.",
    buckets=tuple(float(m << 20) for m in (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)),
)

#: The rung label when the job failed before the ladder was chosen.
UNKNOWN_RUNGS = "unknown"


def encode_record(pid: int, rungs: int | None = None, encode_seconds: float | None = None,
                  media_seconds: float | None = None, peak_memory_bytes: int | None = None,
                  failure: str | None = None) -> dict[str, Any]:
    """What a horse leaves in its job's meta: plain JSON-able values, tagged with its pid so a
    record left by an earlier attempt of the same job is never taken for this one's."""
    return {"pid": pid, "rungs": rungs, "encode_seconds": encode_seconds, "media_seconds": media_seconds,
            "peak_memory_bytes": peak_memory_bytes, "failure": failure}


def failure_reason(exc: BaseException) -> str:
    """A low-cardinality reason for a raised failure: the exception's kind, not its message."""
    from vidup_transcoder.errors import TranscodeCancelledError, TranscodeTimeoutError, TransientTranscodeError

    if isinstance(exc, TranscodeTimeoutError):
        return "timeout"
    if isinstance(exc, TranscodeCancelledError):
        return "cancelled"
    if isinstance(exc, TransientTranscodeError):
        return "transient"
    return "error"


def record_job(record: Mapping[str, Any] | None, horse_pid: int, stopped: bool = False) -> None:
    """Count one job whose horse has exited. ``record`` is the job's meta entry (None or another
    pid's: the horse never wrote one), ``stopped`` whether the worker killed it on purpose."""
    if record is None or record.get("pid") != horse_pid:
        reason = "stopped" if stopped else "killed"
        ENCODES.labels(UNKNOWN_RUNGS, "failed").inc()
        FAILURES.labels(reason).inc()
        return
    rungs = str(record["rungs"]) if record.get("rungs") else UNKNOWN_RUNGS
    failure = record.get("failure")
    ENCODES.labels(rungs, "failed" if failure else "completed").inc()
    if failure:
        FAILURES.labels(str(failure)).inc()
    encode_seconds = record.get("encode_seconds")
    if encode_seconds:
        ENCODE_SECONDS.labels(rungs).observe(float(encode_seconds))
        media = record.get("media_seconds")
        if media:
            REALTIME_FACTOR.labels(rungs).observe(float(media) / float(encode_seconds))
    peak = record.get("peak_memory_bytes")
    if peak:
        FFMPEG_PEAK_MEMORY.observe(float(peak))


def serve_from_env() -> int:
    """Start the metrics server on ``VIDUP_METRICS_PORT`` (``VIDUP_METRICS_HOST``, default all
    interfaces) if set; returns the port (0: not served)."""
    raw = os.environ.get("VIDUP_METRICS_PORT", "").strip()
    port = int(raw) if raw else 0
    if port:
        host = os.environ.get("VIDUP_METRICS_HOST", "").strip() or "0.0.0.0"
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)
    return port
