"""Helpers for the chunked-transcode tests: run every piece of a video in order, then the stitch."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import m3u8
from transcoder_media import ffprobe_json

from vidup import chunking
from vidup.storage import Blobs
from vidup.storage import layout as storage_layout
from vidup.transcode_jobs import KIND_AUDIO, KIND_CHUNK, KIND_STITCH, KIND_WHOLE, TranscodeRequest, TranscodeResult
from vidup_transcoder.job import run_transcode

SEGMENT = 2
CHUNK = 4
RUNGS = [1080, 720, 480]


def request(name: str, kind: str = KIND_WHOLE, media_seconds: float = 0.0, chunk: int = -1,
            renditions: list[int] | None = None) -> TranscodeRequest:
    return TranscodeRequest(
        name, f"uploads/{name}", f"outputs/{name}", list(renditions or RUNGS), SEGMENT, kind=kind,
        chunk_seconds=CHUNK, chunk_min_chunks=3, media_seconds=media_seconds, chunk=chunk,
        parts_path=storage_layout.parts_relpath(name, f"job-{name}"),
    )


def run(storage: Path, req: TranscodeRequest, piece: str = "", blobs: Blobs | None = None) -> TranscodeResult:
    job_id = f"job-{req.video_id}" + (f"_{piece}" if piece else "")
    return run_transcode(req, storage, job_id, None, preset="ultrafast", blobs=blobs)


def chunked_transcode(storage: Path, name: str, renditions: list[int] | None = None,
                      blobs: Blobs | None = None) -> tuple[int, TranscodeResult]:
    """The whole job (which must answer ``chunked``), every piece, then the stitch."""
    whole = run(storage, request(name, renditions=renditions), blobs=blobs)
    assert whole.status == "chunked", whole
    assert whole.source is not None
    seconds = whole.source.duration_seconds
    for i in range(whole.chunks):
        done = run(storage, request(name, KIND_CHUNK, seconds, i, renditions), chunking.chunk_name(i), blobs)
        assert done.status == "completed", done.message
    if whole.source.has_audio:
        done = run(storage, request(name, KIND_AUDIO, seconds, renditions=renditions), chunking.AUDIO, blobs)
        assert done.status == "completed", done.message
    stitched = run(storage, request(name, KIND_STITCH, seconds, renditions=renditions), chunking.STITCH, blobs)
    return whole.chunks, stitched


def packets(segment: Path, stream: str) -> list[dict[str, Any]]:
    data = ffprobe_json(segment, "-select_streams", stream, "-show_entries", "packet=pts_time,duration_time,flags")
    return list(data["packets"])


def span(playlist: Path, stream: str) -> list[tuple[float, float]]:
    """(first pts, end of the last packet) of each segment of a media playlist."""
    out = []
    for seg in m3u8.load(str(playlist)).segments:
        pkts = packets(playlist.parent / seg.uri, stream)
        assert pkts, f"{seg.uri} has no {stream}"
        ends = [float(p["pts_time"]) + float(p["duration_time"]) for p in pkts]
        out.append((min(float(p["pts_time"]) for p in pkts), max(ends)))
    return out


def concat_decode(playlist: Path, target: Path) -> Path:
    """The rendition's segments decoded back to back into one lossless file (for PSNR)."""
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", "-i", str(playlist), "-map", "0:v:0",
                    "-c:v", "ffv1", str(target)], check=True)
    return target


def psnr(a: Path, b: Path) -> float:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(a), "-i", str(b), "-lavfi", "psnr",
                          "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    line = [ln for ln in out.splitlines() if "PSNR" in ln][-1]
    return float(line.split("average:")[1].split()[0])
