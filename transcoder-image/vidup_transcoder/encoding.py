"""What every transcode job shares, the single one and each piece of a chunked one: its time
budget, its progress publisher, how an FFmpeg failure is classified (media or machine), how a
rendition's playlist is measured, and the poster.

Its own module so :mod:`vidup_transcoder.job` (the RQ entry point, the single job) and
:mod:`vidup_transcoder.chunked` (the pieces) both build on it without importing each other.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import redis

from vidup.storage import layout as storage_layout
from vidup.transcode_jobs import (
    REASON_INVALID_MEDIA,
    RenditionResult,
    SourceFacts,
    TranscodeRequest,
    TranscodeResult,
    progress_channel,
    progress_key,
)
from vidup_transcoder import command, ladder, master_playlist, sps
from vidup_transcoder.errors import InvalidMediaError, TranscodeCancelledError, TransientTranscodeError
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
def sigterm_raises() -> Iterator[None]:
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


def trim(lines: list[str]) -> str:
    text = "\n".join(lines).strip()
    return text[-MESSAGE_LIMIT:] if len(text) > MESSAGE_LIMIT else text


def classify_failure(outcome: RunOutcome, label: str, limits: ChildLimits) -> Exception:
    returncode, stderr_tail = outcome.returncode, outcome.stderr_tail
    exceeded = exceeded_limit(limits, returncode, outcome.cpu_seconds, outcome.out_of_memory)
    if exceeded:
        return InvalidMediaError(f"{label} could not be transcoded: {exceeded}")
    tail = trim(stderr_tail) or "(no error output)"
    lowered = tail.lower()
    if returncode < 0:
        return TransientTranscodeError(f"ffmpeg was killed by signal {-returncode}; last output:\n{tail}")
    if any(m in lowered for m in _TRANSIENT_MARKERS):
        return TransientTranscodeError(f"ffmpeg failed (exit {returncode}); last output:\n{tail}")
    if any(m in lowered for m in _MEDIA_ERROR_MARKERS):
        return InvalidMediaError(f"{label} could not be decoded: {tail}")
    return TransientTranscodeError(f"ffmpeg failed (exit {returncode}); last output:\n{tail}")


@dataclass(frozen=True)
class Measured:
    rendition: ladder.Rendition
    playlist: master_playlist.MediaPlaylist
    codecs: str


def measure(partial: Path, r: ladder.Rendition, has_audio: bool, label: str) -> Measured:
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
    return Measured(r, playlist, codecs)


def make_poster(source: Path, target: Path, top: ladder.Rendition, duration: float, limits: ChildLimits,
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
    raise TransientTranscodeError(f"could not extract a poster frame: {trim(outcome.stderr_tail)}")


def failed_result(req: TranscodeRequest, message: str) -> TranscodeResult:
    return TranscodeResult(status="failed", video_id=req.video_id, reason=REASON_INVALID_MEDIA, message=message)


def variants(measured: list[Measured], frame_rate: float, audio_peak: int = 0,
             audio_average: int = 0) -> list[master_playlist.Variant]:
    """The master's variants from the measured renditions; a separate audio rendition's peak and
    average rates (a chunked video's) are added to each, since a player streams both."""
    return [
        master_playlist.Variant(
            uri=f"{m.rendition.name}/{command.MEDIA_PLAYLIST}",
            bandwidth=master_playlist.peak_bandwidth(m.playlist.segments, m.playlist.target_duration) + audio_peak,
            average_bandwidth=master_playlist.average_bandwidth(m.playlist.segments) + audio_average,
            width=m.rendition.width, height=m.rendition.height, codecs=m.codecs, frame_rate=frame_rate,
        )
        for m in measured
    ]


def completed_result(req: TranscodeRequest, facts: SourceFacts, measured: list[Measured],
                     variants: list[master_playlist.Variant]) -> TranscodeResult:
    """The result of a published package (the single job's, or the stitch's)."""
    return TranscodeResult(
        status="completed",
        video_id=req.video_id,
        output_path=req.output_path,
        master_playlist=f"{req.output_path}/{storage_layout.MASTER_PLAYLIST}",
        poster=f"{req.output_path}/{command.POSTER}",
        duration_seconds=round(measured[0].playlist.duration, 3),
        source=facts,
        renditions=[
            RenditionResult(
                name=m.rendition.name, width=v.width, height=v.height, bandwidth=v.bandwidth,
                average_bandwidth=v.average_bandwidth, codecs=v.codecs, playlist=v.uri,
            )
            for v, m in zip(variants, measured, strict=True)
        ],
    )
