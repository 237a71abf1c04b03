"""The RQ entry point: one request in, one HLS package (or a clear permanent failure) out.

``transcode`` only translates between RQ and :func:`run_transcode`; everything it does is testable
without a queue. Permanent media errors come back as a ``failed`` result (RQ must not retry them);
transient ones are raised so RQ retries with backoff. Hostile media (README "Hostile media") is
refused from the probe where its headers give it away, and otherwise runs into the limits FFmpeg is
held to -- memory, CPU time, output size -- which are permanent failures too: the same bytes run
into the same limit on every attempt.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from vidup import chunking
from vidup.settings import Settings
from vidup.storage import Blobs, FileBlobs, open_blobs
from vidup.storage import layout as storage_layout
from vidup.transcode_jobs import KIND_WHOLE, TranscodeRequest, TranscodeResult
from vidup_transcoder import (
    admission,
    chunked,
    command,
    encoding,
    ladder,
    master_playlist,
    metrics,
    package_store,
    probe,
)
from vidup_transcoder.encoding import (
    ProgressPublisher,
    classify_failure,
    failed_result,
    job_timeout_for,
    make_poster,
    measure,
    sigterm_raises,
    trim,
)
from vidup_transcoder.errors import InvalidMediaError, TranscodeTimeoutError
from vidup_transcoder.limits import MediaLimits
from vidup_transcoder.output_guard import OutputGuard
from vidup_transcoder.progress import ProgressParser
from vidup_transcoder.rlimits import ChildLimits
from vidup_transcoder.runner import run_streaming

log = logging.getLogger(__name__)


def run_transcode(
    req: TranscodeRequest,
    storage_dir: Path,
    job_id: str,
    connection: redis.Redis | None = None,
    timeout_seconds: float | None = None,
    preset: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    limits: MediaLimits | None = None,
    blobs: Blobs | None = None,
    stats: dict[str, Any] | None = None,
) -> TranscodeResult:
    """Probe, admit, encode the ladder in one limited FFmpeg, measure, write the master last, publish.
    ``limits`` defaults to the VIDUP_* variables (:mod:`vidup_transcoder.limits`).

    ``blobs`` is the store holding ``req.source_path`` and receiving ``req.output_path`` (default:
    files under ``storage_dir``); with a bucket, ``storage_dir`` is only the scratch root. Where the
    source is read and how the package is published is :mod:`vidup_transcoder.package_store`'s
    business, so this function never asks which store it has.

    ``stats``, if given, receives what the metrics want to know (rungs, encode and media seconds,
    FFmpeg's peak memory) as far as the job got."""
    limits = limits if limits is not None else MediaLimits.from_env()
    if req.kind != KIND_WHOLE:
        # One piece of a chunked video (a chunk, the audio, the stitch): vidup_transcoder.chunked.
        return chunked.run_piece(req, blobs if blobs is not None else FileBlobs(storage_dir), storage_dir, job_id,
                                 ProgressPublisher(connection, job_id), timeout_seconds, preset, clock, limits,
                                 {} if stats is None else stats)
    store = package_store.package_store_for(blobs if blobs is not None else FileBlobs(storage_dir), storage_dir)
    label = f"upload {req.video_id}"
    # An earlier attempt of this job that died (SIGKILLed worker) may have left a staging directory.
    store.discard(req.output_path, job_id)
    publisher = ProgressPublisher(connection, job_id)
    try:
        return _transcode(req, store, job_id, label, publisher, timeout_seconds, preset, clock, limits,
                          {} if stats is None else stats)
    except InvalidMediaError as exc:
        return failed_result(req, str(exc))
    finally:
        store.discard(req.output_path, job_id)


def _transcode(req: TranscodeRequest, store: package_store.PackageStore, job_id: str, label: str,
               publisher: ProgressPublisher, timeout_seconds: float | None, preset: str | None,
               clock: Callable[[], float], limits: MediaLimits, stats: dict[str, Any]) -> TranscodeResult:
    source = store.fetch_source(req.source_path, job_id, label)
    facts = probe.probe(source, label, limits.ffmpeg_memory_bytes)
    admission.check_source(facts, limits, label)

    renditions = ladder.choose_ladder(facts.display_width, facts.display_height, req.renditions)
    if chunking.wants_chunks(facts.duration_seconds, req.segment_seconds, req.chunk_seconds, req.chunk_min_chunks):
        # Long enough to split: encode nothing; the operator enqueues the pieces (vidup.chunking).
        chunks = chunking.plan_chunks(facts.duration_seconds, req.segment_seconds, req.chunk_seconds)
        return TranscodeResult(status="chunked", video_id=req.video_id, source=facts.facts(), chunks=len(chunks))
    stats.update(rungs=len(renditions), media_seconds=facts.duration_seconds)
    budget = timeout_seconds if timeout_seconds is not None else job_timeout_for(facts.duration_seconds)
    output_budget = admission.output_budget_bytes(facts.duration_seconds, renditions, facts.has_audio, limits)
    child_limits = ChildLimits(
        memory_bytes=limits.ffmpeg_memory_bytes or None,
        cpu_seconds=admission.cpu_budget_seconds(facts.duration_seconds, limits),
        file_size_bytes=output_budget,
    )
    started = clock()
    partial = store.new_partial(req.output_path, job_id)
    guard = OutputGuard(partial, output_budget, label, facts.duration_seconds)
    for r in renditions:
        (partial / r.name).mkdir()
    plan = command.EncodePlan(
        source=source, out_dir=partial, renditions=renditions, segment_seconds=req.segment_seconds,
        frame_rate=command.output_frame_rate(facts.frame_rate_fraction), has_audio=facts.has_audio,
        preset=preset or command.x264_preset(), threads=limits.ffmpeg_thread_cap(),
    )
    publisher.publish(0)
    parser = ProgressParser(facts.duration_seconds)

    def on_line(line: str) -> None:
        guard.check()  # raises (and so stops FFmpeg) once the output outgrows its budget
        percent = parser.feed(line, clock())
        if percent is not None:
            publisher.publish(min(percent, 99))  # 100 means "package in place", not "ffmpeg done"

    encode_started = time.monotonic()
    with sigterm_raises():
        outcome = run_streaming(command.build_ffmpeg_command(plan), on_line, timeout_seconds=budget,
                                limits=child_limits)
    stats.update(encode_seconds=time.monotonic() - encode_started, peak_memory_bytes=outcome.peak_memory_bytes)
    if outcome.timed_out:
        raise TranscodeTimeoutError(
            f"transcode exceeded its {budget:.0f}s budget for {facts.duration_seconds:.1f}s of video; "
            f"last output:\n{trim(outcome.stderr_tail)}"
        )
    if outcome.returncode != 0 or outcome.out_of_memory:
        raise classify_failure(outcome, label, child_limits)
    guard.check(force=True)

    measured = [measure(partial, r, facts.has_audio, label) for r in renditions]
    admission.check_complete(measured[0].playlist.duration, facts.duration_seconds, label)
    make_poster(source, partial / command.POSTER, renditions[0], facts.duration_seconds, child_limits, label,
                 plan.threads)
    guard.check(force=True)
    remaining = budget - (clock() - started)
    if remaining <= 0:
        raise TranscodeTimeoutError(f"transcode exceeded its {budget:.0f}s budget")

    variants = encoding.variants(measured, float(plan.frame_rate))
    # The master is the "ready" marker for players: written last, atomically (published last).
    master_playlist.write_atomically(
        partial / storage_layout.MASTER_PLAYLIST, master_playlist.render_master(variants)
    )
    store.publish(partial, req.output_path)

    publisher.publish(100)
    return encoding.completed_result(req, facts.facts(), measured, variants)


def transcode(request: dict[str, Any]) -> dict[str, Any]:
    """RQ job function (``vidup.transcode_jobs.JOB_FUNCTION``): a request dict in, a result dict out."""
    from rq import get_current_job  # imported here so the pure modules never need RQ

    settings = Settings.from_env()
    req = TranscodeRequest.from_dict(request)
    job = get_current_job()
    if job is not None:
        connection: redis.Redis = job.connection
        job_id = job.id
    else:
        connection = redis.Redis.from_url(settings.redis_url)
        job_id = f"local-{req.video_id}"
    stats: dict[str, Any] = {}
    try:
        result = run_transcode(req, settings.storage_dir, job_id, connection, blobs=open_blobs(settings), stats=stats)
    except Exception as exc:
        _leave_encode_record(job, stats, metrics.failure_reason(exc))
        raise
    _leave_encode_record(job, stats, None if result.status != "failed" else (result.reason or "failed"))
    return result.to_dict()


def _leave_encode_record(job: Any, stats: dict[str, Any], failure: str | None) -> None:
    """Hand the measurements to the worker process through the job's meta (the horse exits right
    after; see :mod:`vidup_transcoder.metrics`). Best effort: metrics never fail a transcode."""
    if job is None:
        return
    job.meta[metrics.META_KEY] = metrics.encode_record(os.getpid(), failure=failure, **stats)
    try:
        job.save_meta()
    except redis.RedisError as exc:
        log.warning("could not record the encode's measurements: %s", exc)
