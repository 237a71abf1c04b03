"""The status document of a video, computed from its VideoTranscode resource and nothing else.

Pure: a resource dict and the URLs in, a JSON-able dict out, so the mapping is unit-tested
without a cluster and the HTTP route, the WebSocket and ``vidup upload --json`` share one shape.

``status`` uses the original brief's four values; the resource's finer ``phase`` is kept too:

=========================  ============
phase                      status
=========================  ============
(no status yet), Pending   PENDING
Queued                     PENDING
Processing                 PROCESSING
Completed                  COMPLETED
Failed                     FAILED
=========================  ============
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidup.resource import Phase

STATUS_BY_PHASE = {
    Phase.PENDING: "PENDING",
    Phase.QUEUED: "PENDING",
    Phase.PROCESSING: "PROCESSING",
    Phase.COMPLETED: "COMPLETED",
    Phase.FAILED: "FAILED",
}
TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED"})


@dataclass(frozen=True)
class VideoUrls:
    """Where the document's links point. ``hls_base`` ends with ``/`` and carries the playback
    token (``.../videos/<id>/hls/<token>/``); empty when no token can be issued."""

    self_url: str
    events_url: str
    hls_base: str


def phase_of(obj: dict[str, Any]) -> Phase:
    """The resource's phase; a resource the operator has not touched yet is Pending."""
    raw = (obj.get("status") or {}).get("phase") or Phase.PENDING.value
    try:
        return Phase(raw)
    except ValueError:
        return Phase.PENDING


def tenant_of(obj: dict[str, Any]) -> str:
    return str((obj.get("spec") or {}).get("tenant", ""))


def output_relative(outputs_path: str, path: str) -> str:
    """A file of the outputs relative to the output directory.

    The CRD says ``masterPlaylist`` and ``poster`` are relative to ``outputs.path``; accept a path
    relative to the storage root too (``outputs/<id>/master.m3u8``), so either writer is read right.
    """
    prefix = outputs_path.rstrip("/") + "/"
    if outputs_path and path.startswith(prefix):
        return path[len(prefix):]
    return path.lstrip("/")


def _clamp_progress(value: Any) -> int:
    try:
        return max(0, min(100, int(value)))
    except (TypeError, ValueError):
        return 0


def status_document(obj: dict[str, Any], urls: VideoUrls) -> dict[str, Any]:
    """The JSON of ``GET /videos/<id>`` for one VideoTranscode resource."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    source_spec = spec.get("source") or {}
    status = obj.get("status") or {}
    phase = phase_of(obj)
    state = STATUS_BY_PHASE[phase]
    failed = phase is Phase.FAILED
    completed = phase is Phase.COMPLETED
    outputs = status.get("outputs") or {}
    probed = status.get("source") or {}

    master_url = poster_url = None
    renditions: list[dict[str, Any]] = []
    if completed and urls.hls_base:
        out_path = str(outputs.get("path", ""))
        if outputs.get("masterPlaylist"):
            master_url = urls.hls_base + output_relative(out_path, str(outputs["masterPlaylist"]))
        if outputs.get("poster"):
            poster_url = urls.hls_base + output_relative(out_path, str(outputs["poster"]))
        for r in outputs.get("renditions") or []:
            renditions.append({
                "name": r.get("name"),
                "width": r.get("width"),
                "height": r.get("height"),
                "bandwidth": r.get("bandwidth"),
                "average_bandwidth": r.get("averageBandwidth"),
                "codecs": r.get("codecs"),
                "playlist_url": urls.hls_base + output_relative(out_path, str(r.get("playlist", ""))),
            })

    return {
        "id": meta.get("name"),
        "status": state,
        "phase": phase.value,
        "progress": _clamp_progress(status.get("progress", 0)),
        "job_id": status.get("jobId") or None,
        "attempts": int(status.get("attempts") or 0),
        "chunks": _chunks(status.get("chunks")),
        "tenant": spec.get("tenant"),
        "path": source_spec.get("path"),
        "filename": source_spec.get("filename") or None,
        "size": source_spec.get("size"),
        "duration": probed.get("durationSeconds"),
        "width": probed.get("width"),
        "height": probed.get("height"),
        "created_at": meta.get("creationTimestamp"),
        "started_at": status.get("startedAt"),
        "completed_at": status.get("completedAt"),
        "reason": (status.get("reason") or None) if failed else None,
        "error": (status.get("message") or None) if failed else None,
        "master_playlist_url": master_url,
        "poster_url": poster_url,
        "renditions": renditions,
        "url": urls.self_url,
        "events_url": urls.events_url,
    }


def _chunks(chunks: Any) -> dict[str, int] | None:
    """A long video encoded in chunks: how many, and how many are encoded (null otherwise)."""
    if not isinstance(chunks, dict) or not chunks.get("total"):
        return None
    return {"total": int(chunks["total"]), "completed": int(chunks.get("completed") or 0)}


def list_document(items: list[dict[str, Any]], urls_for: Callable[[dict[str, Any]], VideoUrls],
                  continue_token: str | None) -> dict[str, Any]:
    """The JSON of ``GET /videos``: one page of status documents and the token for the next."""
    return {
        "items": [status_document(obj, urls_for(obj)) for obj in items],
        "continue": continue_token or None,
    }
