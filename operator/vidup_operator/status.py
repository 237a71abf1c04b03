"""Pure builders for the pieces of ``VideoTranscode.status``: conditions, outputs, source facts, times.

Kept apart from the decisions so the shapes (camelCase, the CRD's schema, the Kubernetes condition
conventions) live in one place and the decision table reads as phases and reasons only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from vidup.transcode_jobs import SourceFacts, TranscodeResult

READY = "Ready"

#: Reasons on the status and the Ready condition (CamelCase, as the condition schema requires).
REASON_PENDING = "Pending"
REASON_QUEUED = "Queued"
REASON_PROCESSING = "Processing"
REASON_RETRYING = "Retrying"
REASON_REQUEUED = "Requeued"
REASON_TRANSCODED = "Transcoded"
REASON_TRANSCODE_FAILED = "TranscodeFailed"
#: A long video split into chunks (Processing), and all of them encoded (the stitch queued).
REASON_CHUNKED = "Chunked"
REASON_STITCHING = "Stitching"


def rfc3339(moment: datetime) -> str:
    """Kubernetes ``metav1.Time`` form: UTC, second precision, ``Z`` suffix."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(heights: Iterable[int]) -> str:
    """``1080p,720p,480p``: what ``kubectl get`` shows in the RENDITIONS column, tallest first."""
    return ",".join(f"{h}p" for h in sorted(set(heights), reverse=True))


def ready_condition(
    current: Sequence[Mapping[str, Any]] | None,
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The conditions list with ``Ready`` set; ``lastTransitionTime`` moves only when status flips.

    Other condition types are kept as they are, so a future condition is not lost by a Ready update.
    """
    status = "True" if ready else "False"
    previous = next((c for c in current or () if c.get("type") == READY), None)
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = str(previous["lastTransitionTime"])
    else:
        transition = rfc3339(now)
    condition = {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    others = [dict(c) for c in current or () if c.get("type") != READY]
    return [condition, *others]


def source_status(facts: SourceFacts | None) -> dict[str, Any] | None:
    """``status.source`` from what the worker's ffprobe found."""
    if facts is None:
        return None
    return {
        "durationSeconds": facts.duration_seconds,
        "width": facts.width,
        "height": facts.height,
        "rotation": facts.rotation,
        "frameRate": facts.frame_rate,
        "videoCodec": facts.video_codec,
        "pixelFormat": facts.pixel_format,
        "hasAudio": facts.has_audio,
    }


def outputs_status(result: TranscodeResult) -> dict[str, Any]:
    """``status.outputs`` from a completed result; ``summary`` lists the heights actually produced."""
    return {
        "path": result.output_path,
        "masterPlaylist": result.master_playlist,
        "poster": result.poster,
        "summary": summary(r.height for r in result.renditions),
        "renditions": [
            {
                "name": r.name,
                "width": r.width,
                "height": r.height,
                "bandwidth": r.bandwidth,
                "averageBandwidth": r.average_bandwidth,
                "codecs": r.codecs,
                "playlist": r.playlist,
            }
            for r in result.renditions
        ],
    }


def requested_outputs(heights: Iterable[int]) -> dict[str, Any]:
    """Until a transcode completes, RENDITIONS shows what was asked for (the CRD column says so).

    The other fields are explicit nulls so a merge patch clears what an older generation produced.
    """
    return {
        "summary": summary(heights), "path": None, "masterPlaylist": None, "poster": None, "renditions": None,
    }
