"""How the worker process counts a job from the record its work-horse left (no RQ needed)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from vidup_transcoder import metrics
from vidup_transcoder.errors import TranscodeTimeoutError, TransientTranscodeError


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_completed_encode_is_counted_by_rung_count() -> None:
    before = (value("vidup_worker_encodes_total", rungs="3", outcome="completed"),
              value("vidup_worker_encode_seconds_count", rungs="3"),
              value("vidup_worker_realtime_factor_sum", rungs="3"))
    record = metrics.encode_record(42, rungs=3, encode_seconds=5.0, media_seconds=20.0, peak_memory_bytes=100 << 20)
    metrics.record_job(record, 42)
    assert value("vidup_worker_encodes_total", rungs="3", outcome="completed") == before[0] + 1
    assert value("vidup_worker_encode_seconds_count", rungs="3") == before[1] + 1
    assert value("vidup_worker_realtime_factor_sum", rungs="3") == before[2] + 4.0


def test_a_record_of_another_horse_means_this_one_was_killed() -> None:
    killed = value("vidup_worker_failures_total", reason="killed")
    stopped = value("vidup_worker_failures_total", reason="stopped")
    metrics.record_job(metrics.encode_record(41, rungs=2, encode_seconds=1.0), 42)
    metrics.record_job(None, 42, stopped=True)
    assert value("vidup_worker_failures_total", reason="killed") == killed + 1
    assert value("vidup_worker_failures_total", reason="stopped") == stopped + 1


def test_failure_reasons_are_kinds_not_messages() -> None:
    assert metrics.failure_reason(TranscodeTimeoutError("x took 999s")) == "timeout"
    assert metrics.failure_reason(TransientTranscodeError("disk")) == "transient"
    assert metrics.failure_reason(RuntimeError("boom")) == "error"
