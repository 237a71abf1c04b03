"""The RQ entry point: one request in, one HLS package (or a clear permanent failure) out.

``transcode`` only translates between RQ and :func:`run_transcode`; everything it does is testable
without a queue. Permanent media errors come back as a ``failed`` result (RQ must not retry them);
transient ones are raised so RQ retries with backoff. Hostile media (README "Hostile media") is
refused from the probe where its headers give it away, and otherwise runs into the limits FFmpeg is
held to -- memory, CPU time, output size -- which are permanent failures too: the same bytes run
into the same limit on every attempt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from vidup import chunking
from vidup.settings import Settings
from vidup.storage import Blobs, FileBlobs, open_blobs
from vidup.storage import layout as storage_layout
from vidup.transcode_jobs import (
    KIND_WHOLE,
    REASON_INVALID_MEDIA,
    RenditionResult,
    TranscodeRequest,
    TranscodeResult,
    progress_channel,
    progress_key,
)
from vidup_transcoder import admission, command, ladder, master_playlist, metrics, package_store, probe, sps
from vidup_transcoder.errors import (
    InvalidMediaError,
    TranscodeCancelledError,
    TranscodeTimeoutError,
    TransientTranscodeError,
)
from vidup_transcoder.limits import MediaLimits
from vidup_transcoder.output_guard import OutputGuard
from vidup_transcoder.progress import ProgressParser
from vidup_transcoder.rlimits import ChildLimits, exceeded_limit
from vidup_transcoder.runner import RunOutcome, run_streaming

log = logging.getLogger(__name__)

#: Fixed allowance (probe, poster, start-up) plus seconds of wall time per second of source. Generous
#: on purpose: a timeout only exists to free a worker from a stuck encode, never to race a slow one.
TIMEOUT_BASE_SECONDS = 300
TIMEOUT_PER_SOURCE_SECOND = 6.0
#: Keep progress around long enough for the operator to read the last value.
PROGRESS_TTL_SECONDS = 7 * 24 * 3600
MESSAGE_LIMIT = 2000
#: Wall-clock and CPU allowance of one poster extraction (one frame, however large).
POSTER_SECONDS = 120

#: FFmpeg stderr that means "these bytes are broken", not "this machine had a bad moment".
_MEDIA_ERROR_MARKERS = (
    "invalid data found", "error while decoding", "corrupt", "moov atom not found", "invalid nal",
    "error reading header", "could not find codec parameters", "output file is empty",
    "decoding error", "no frame!", "not found for input stream", "unsupported codec",
)
_TRANSIENT_MARKERS = ("no space left", "input/output error", "stale file handle", "cannot allocate memory")


def job_timeout_for(duration_seconds: float) -> int:
    """The RQ ``job_timeout`` for a source of this duration; the job enforces the same budget itself."""
    return int(TIMEOUT_BASE_SECONDS + TIMEOUT_PER_SOURCE_SECOND * max(0.0, duration_seconds))


class ProgressPublisher:
    """Writes ``progress``/``updated`` into the job's hash and announces each change on its channel.

    Best effort: a Redis blip must not fail an hour-long encode, so errors are logged and dropped.
    """

    def __init__(self, connection: redis.Redis | None, job_id: str) -> None:
        self.connection = connection
        self.key = progress_key(job_id)
        self.channel = progress_channel(job_id)
        self.last: int = -1

    def publish(self, percent: int) -> None:
        if percent <= self.last or self.connection is None:
            return
        self.last = percent
        try:
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping={"progress": percent, "updated": int(time.time())})
                pipe.expire(self.key, PROGRESS_TTL_SECONDS)
                pipe.publish(self.channel, str(percent))
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not publish progress %s for %s: %s", percent, self.key, exc)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception while FFmpeg runs, so cancellation unwinds through the
    cleanup code instead of killing the process with the temporary output still on disk."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise TranscodeCancelledError("transcode cancelled (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _trim(lines: list[str]) -> str:
    text = "\n".join(lines).strip()
    return text[-MESSAGE_LIMIT:] if len(text) > MESSAGE_LIMIT else text


def _classify_failure(outcome: RunOutcome, label: str, limits: ChildLimits) -> Exception:
    returncode, stderr_tail = outcome.returncode, outcome.stderr_tail
    exceeded = exceeded_limit(limits, returncode, outcome.cpu_seconds, outcome.out_of_memory)
    if exceeded:
        return InvalidMediaError(f"{label} could not be transcoded: {exceeded}")
    tail = _trim(stderr_tail) or "(no error output)"
    lowered = tail.lower()
    if returncode < 0:
        return TransientTranscodeError(f"ffmpeg was killed by signal {-returncode}; last output:\n{tail}")
    if any(m in lowered for m in _TRANSIENT_MARKERS):
        return TransientTranscodeError(f"ffmpeg failed (exit {returncode}); last output:\n{tail}")
    if any(m in lowered for m in _MEDIA_ERROR_MARKERS):
        return InvalidMediaError(f"{label} could not be decoded: {tail}")
    return TransientTranscodeError(f"ffmpeg failed (exit {returncode}); last output:\n{tail}")


@dataclass(frozen=True)
class _Measured:
    rendition: ladder.Rendition
    playlist: master_playlist.MediaPlaylist
    codecs: str


def _measure(partial: Path, r: ladder.Rendition, has_audio: bool, label: str) -> _Measured:
    path = partial / r.name / command.MEDIA_PLAYLIST
    if not path.is_file():
        raise TransientTranscodeError(f"ffmpeg exited without writing {r.name}/{command.MEDIA_PLAYLIST}")
    playlist = master_playlist.read_media_playlist(path)
    if not playlist.segments:
        raise InvalidMediaError(f"{label} has no decodable video frames")
    profile_idc, flags, level_idc = sps.segment_sps(path.parent / playlist.segments[0].uri)
    codecs = master_playlist.h264_codec_string(profile_idc, flags, level_idc)
    if has_audio:
        codecs += "," + master_playlist.AAC_LC
    return _Measured(r, playlist, codecs)


def _make_poster(source: Path, target: Path, top: ladder.Rendition, duration: float, limits: ChildLimits,
                 label: str, threads: int | None) -> None:
    """Try a frame a little way in, then the very first one (a seek can land past a short stream)."""
    limits = ChildLimits(limits.memory_bytes, POSTER_SECONDS, limits.file_size_bytes)
    for at in dict.fromkeys((command.poster_time(duration), 0.0)):
        argv = command.build_poster_command(source, target, top.width, top.height, at, threads)
        outcome = run_streaming(argv, lambda _line: None, timeout_seconds=POSTER_SECONDS, limits=limits)
        if outcome.returncode == 0 and target.is_file() and target.stat().st_size > 0:
            return
        exceeded = exceeded_limit(limits, outcome.returncode, outcome.cpu_seconds, outcome.out_of_memory)
        if exceeded:
            raise InvalidMediaError(f"{label} has no usable poster frame: {exceeded}")
    raise TransientTranscodeError(f"could not extract a poster frame: {_trim(outcome.stderr_tail)}")


def _failed(req: TranscodeRequest, message: str) -> TranscodeResult:
    return TranscodeResult(status="failed", video_id=req.video_id, reason=REASON_INVALID_MEDIA, message=message)


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
        from vidup_transcoder import chunked  # imported here: chunked builds on this module

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
        return _failed(req, str(exc))
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
    with _sigterm_raises():
        outcome = run_streaming(command.build_ffmpeg_command(plan), on_line, timeout_seconds=budget,
                                limits=child_limits)
    stats.update(encode_seconds=time.monotonic() - encode_started, peak_memory_bytes=outcome.peak_memory_bytes)
    if outcome.timed_out:
        raise TranscodeTimeoutError(
            f"transcode exceeded its {budget:.0f}s budget for {facts.duration_seconds:.1f}s of video; "
            f"last output:\n{_trim(outcome.stderr_tail)}"
        )
    if outcome.returncode != 0 or outcome.out_of_memory:
        raise _classify_failure(outcome, label, child_limits)
    guard.check(force=True)

    measured = [_measure(partial, r, facts.has_audio, label) for r in renditions]
    admission.check_complete(measured[0].playlist.duration, facts.duration_seconds, label)
    _make_poster(source, partial / command.POSTER, renditions[0], facts.duration_seconds, child_limits, label,
                 plan.threads)
    guard.check(force=True)
    remaining = budget - (clock() - started)
    if remaining <= 0:
        raise TranscodeTimeoutError(f"transcode exceeded its {budget:.0f}s budget")

    frame_rate = float(plan.frame_rate)
    variants = [
        master_playlist.Variant(
            uri=f"{m.rendition.name}/{command.MEDIA_PLAYLIST}",
            bandwidth=master_playlist.peak_bandwidth(m.playlist.segments, m.playlist.target_duration),
            average_bandwidth=master_playlist.average_bandwidth(m.playlist.segments),
            width=m.rendition.width, height=m.rendition.height, codecs=m.codecs, frame_rate=frame_rate,
        )
        for m in measured
    ]
    # The master is the "ready" marker for players: written last, atomically (published last).
    master_playlist.write_atomically(
        partial / storage_layout.MASTER_PLAYLIST, master_playlist.render_master(variants)
    )
    store.publish(partial, req.output_path)

    publisher.publish(100)
    return TranscodeResult(
        status="completed",
        video_id=req.video_id,
        output_path=req.output_path,
        master_playlist=f"{req.output_path}/{storage_layout.MASTER_PLAYLIST}",
        poster=f"{req.output_path}/{command.POSTER}",
        duration_seconds=round(measured[0].playlist.duration, 3),
        source=facts.facts(),
        renditions=[
            RenditionResult(
                name=v_m.rendition.name, width=v.width, height=v.height, bandwidth=v.bandwidth,
                average_bandwidth=v.average_bandwidth, codecs=v.codecs, playlist=v.uri,
            )
            for v, v_m in zip(variants, measured, strict=True)
        ],
    )


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
