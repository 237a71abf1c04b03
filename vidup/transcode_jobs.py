"""The contract between the operator and the FFmpeg workers: the job, its result, its progress.

Workers need no Kubernetes credentials: the operator enqueues a plain JSON-serialisable
:class:`TranscodeRequest` on the RQ queue, the worker publishes progress under
:func:`progress_key` and returns a :class:`TranscodeResult` as a dict. A permanent media error is a
*returned* result with ``status="failed"`` (so RQ never retries it); a transient failure is a raised
exception, which RQ retries with the backoff from :func:`backoff_intervals`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: Dotted path RQ imports to run a transcode; lives in the worker image.
JOB_FUNCTION = "vidup_transcoder.job.transcode"

#: Reason on a resource whose media cannot be transcoded.
REASON_INVALID_MEDIA = "InvalidMedia"


def job_id_for(uid: str, generation: int) -> str:
    """One job per resource generation, so a duplicate event or a restart never enqueues twice."""
    return f"vt-{uid}-g{generation}"


def progress_key(job_id: str) -> str:
    """Redis hash the worker writes ``progress`` (0-100) and ``updated`` (epoch seconds) into."""
    return f"vidup:progress:{job_id}"


def progress_channel(job_id: str) -> str:
    """Redis pub/sub channel on which each progress change is also announced."""
    return f"vidup:progress-events:{job_id}"


def backoff_intervals(retries: int, base_seconds: float, max_seconds: float) -> list[int]:
    """Exponential backoff delays for RQ's ``Retry(interval=...)``: base, 2*base, 4*base... capped."""
    return [int(min(max_seconds, base_seconds * 2**i)) for i in range(max(0, retries))]


#: What a job does (``TranscodeRequest.kind``). ``whole``: the video in one job, or, when the
#: probe finds it long enough (:func:`vidup.chunking.wants_chunks`), a ``chunked`` result that
#: tells the operator to enqueue the pieces instead. ``chunk``: one time range, video only, every
#: rung. ``audio``: the whole source's sound, once. ``stitch``: the package from the pieces.
KIND_WHOLE = "whole"
KIND_CHUNK = "chunk"
KIND_AUDIO = "audio"
KIND_STITCH = "stitch"
KINDS = (KIND_WHOLE, KIND_CHUNK, KIND_AUDIO, KIND_STITCH)


@dataclass(frozen=True)
class TranscodeRequest:
    video_id: str
    #: Source and output paths are relative to the worker's VIDUP_STORAGE_DIR.
    source_path: str
    output_path: str
    renditions: list[int]
    segment_seconds: int = 10
    kind: str = KIND_WHOLE
    #: ``whole``: chunk a source at least ``chunk_min_chunks`` chunks of ``chunk_seconds`` long
    #: (0: never). Pieces: the chunk length the plan was made with.
    chunk_seconds: int = 0
    chunk_min_chunks: int = 3
    #: Pieces: the source's duration as the ``whole`` job probed it; every piece plans from it, so
    #: all cut at the same times (:func:`vidup.chunking.plan_chunks`).
    media_seconds: float = 0.0
    #: ``chunk``: which chunk of the plan.
    chunk: int = -1
    #: Pieces: ``parts/<video>/<job id>``, where each piece leaves its files and its done marker.
    parts_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranscodeRequest:
        kind = str(data.get("kind", KIND_WHOLE))
        if kind not in KINDS:
            raise ValueError(f"unknown transcode kind {kind!r}")
        return cls(
            video_id=data["video_id"],
            source_path=data["source_path"],
            output_path=data["output_path"],
            renditions=[int(h) for h in data["renditions"]],
            segment_seconds=int(data.get("segment_seconds", 10)),
            kind=kind,
            chunk_seconds=int(data.get("chunk_seconds", 0)),
            chunk_min_chunks=int(data.get("chunk_min_chunks", 3)),
            media_seconds=float(data.get("media_seconds", 0.0)),
            chunk=int(data.get("chunk", -1)),
            parts_path=str(data.get("parts_path", "")),
        )


@dataclass(frozen=True)
class RenditionResult:
    name: str
    width: int
    height: int
    bandwidth: int
    average_bandwidth: int
    codecs: str
    #: Relative to the output directory, e.g. "720p/index.m3u8".
    playlist: str


@dataclass(frozen=True)
class SourceFacts:
    duration_seconds: float
    width: int
    height: int
    rotation: int = 0
    frame_rate: float = 0.0
    video_codec: str = ""
    pixel_format: str = ""
    has_audio: bool = False


@dataclass(frozen=True)
class TranscodeResult:
    #: ``chunked``: a ``whole`` job found the source long enough to split; nothing was encoded,
    #: ``source`` holds the probe and ``chunks`` the number of chunks.
    status: Literal["completed", "failed", "chunked"]
    video_id: str
    #: These three are relative to VIDUP_STORAGE_DIR; empty when failed.
    output_path: str = ""
    master_playlist: str = ""
    poster: str = ""
    duration_seconds: float = 0.0
    source: SourceFacts | None = None
    renditions: list[RenditionResult] = field(default_factory=list)
    reason: str = ""
    message: str = ""
    chunks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranscodeResult:
        source = data.get("source")
        return cls(
            status=data["status"],
            video_id=data["video_id"],
            output_path=data.get("output_path", ""),
            master_playlist=data.get("master_playlist", ""),
            poster=data.get("poster", ""),
            duration_seconds=float(data.get("duration_seconds", 0.0)),
            source=SourceFacts(**source) if source else None,
            renditions=[RenditionResult(**r) for r in data.get("renditions", [])],
            reason=data.get("reason", ""),
            message=data.get("message", ""),
            chunks=int(data.get("chunks", 0)),
        )
