"""Probe a source with ffprobe and turn its JSON into the facts the ladder needs.

``parse_probe`` is pure (ffprobe JSON in, :class:`Probe` out) so odd real-world shapes -- rotated
phone videos, anamorphic pixels, cover-art streams, missing durations -- are unit-tested without
running anything. ``probe`` is the thin edge that runs ffprobe, under the same memory limit as
FFmpeg (finding a stream's parameters can mean decoding a frame, and a frame can be 16000x16000)
and with a deadline on every ffprobe it starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidup.transcode_jobs import SourceFacts
from vidup_transcoder.errors import InvalidMediaError, TransientTranscodeError
from vidup_transcoder.rlimits import ChildLimits, exceeded_limit
from vidup_transcoder.runner import run_streaming

#: ffprobe must never hang a worker on a pathological file (wall clock, and CPU time as a backstop).
PROBE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Probe:
    """What the job needs to know about a source; ``display_*`` is what a viewer sees."""

    duration_seconds: float
    stored_width: int
    stored_height: int
    display_width: int
    display_height: int
    rotation: int
    frame_rate: float
    #: The exact rate as ffprobe wrote it ("30000/1001"), so the fps filter never drifts.
    frame_rate_fraction: str
    video_codec: str
    pixel_format: str
    has_audio: bool
    #: The container's average rate only (0 when unknown): ``frame_rate`` falls back to
    #: ``r_frame_rate``, a timestamp granularity (1000 for WebM) that says nothing about real frames.
    average_frame_rate: float = 0.0
    #: Streams of every kind in the file.
    stream_count: int = 0
    #: The demuxer, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "png_pipe".
    format_name: str = ""

    def facts(self) -> SourceFacts:
        """The contract's view: dimensions as displayed (after rotation and pixel aspect)."""
        return SourceFacts(
            duration_seconds=self.duration_seconds,
            width=self.display_width,
            height=self.display_height,
            rotation=self.rotation,
            frame_rate=self.frame_rate,
            video_codec=self.video_codec,
            pixel_format=self.pixel_format,
            has_audio=self.has_audio,
        )


def _fraction(value: Any) -> Fraction | None:
    """ffprobe writes rates as "30000/1001" and aspect ratios as "4:3"; "0/0" and "N/A" mean unknown."""
    if not isinstance(value, str):
        return None
    text = value.replace(":", "/")
    try:
        result = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return result if result > 0 else None


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result > 0 else None


def rotation_of(stream: dict[str, Any]) -> int:
    """Clockwise display rotation in {0, 90, 180, 270}.

    ffprobe 5.1 reports the Display Matrix side data's ``rotation`` (counter-clockwise degrees);
    older muxers left a clockwise ``rotate`` tag. Only the parity matters for the ladder, but a
    normalised value is more useful to whoever reads the result.
    """
    for side in stream.get("side_data_list") or []:
        if side.get("side_data_type") == "Display Matrix" and "rotation" in side:
            try:
                return round(-float(side["rotation"])) % 360 // 90 * 90
            except (TypeError, ValueError):
                return 0
    tag = (stream.get("tags") or {}).get("rotate")
    if tag is not None:
        try:
            return round(float(tag)) % 360 // 90 * 90
        except (TypeError, ValueError):
            return 0
    return 0


def _video_stream(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first real video stream; cover art (attached_pic) in audio files does not count."""
    for stream in streams:
        if stream.get("codec_type") != "video":
            continue
        if (stream.get("disposition") or {}).get("attached_pic"):
            continue
        return stream
    return None


def parse_probe(data: dict[str, Any], name: str = "the file", measured_duration: float | None = None) -> Probe:
    """Facts from ``ffprobe -show_format -show_streams -of json``; raises InvalidMediaError for non-videos.

    ``measured_duration`` is used when the container declares none (e.g. browser MediaRecorder WebM).
    """
    streams = data.get("streams") or []
    video = _video_stream(streams)
    if video is None:
        raise InvalidMediaError(f"{name} contains no video stream")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise InvalidMediaError(f"{name} has a video stream without a picture size")
    fmt = data.get("format") or {}
    duration = _float(fmt.get("duration")) or _float(video.get("duration")) or measured_duration
    if not duration:
        raise InvalidMediaError(f"{name} has no measurable duration (truncated or empty video stream)")

    sar = _fraction(video.get("sample_aspect_ratio")) or Fraction(1)
    rotation = rotation_of(video)
    display_w, display_h = max(1, round(width * sar)), height
    if rotation in (90, 270):
        display_w, display_h = display_h, display_w
    average = _fraction(video.get("avg_frame_rate"))
    rate = average or _fraction(video.get("r_frame_rate")) or Fraction(0)
    try:
        declared_streams = int(fmt.get("nb_streams") or 0)
    except (TypeError, ValueError):
        declared_streams = 0
    return Probe(
        duration_seconds=round(duration, 3),
        stored_width=width,
        stored_height=height,
        display_width=display_w,
        display_height=display_h,
        rotation=rotation,
        frame_rate=round(float(rate), 3),
        frame_rate_fraction=f"{rate.numerator}/{rate.denominator}",
        video_codec=str(video.get("codec_name") or ""),
        pixel_format=str(video.get("pix_fmt") or ""),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        average_frame_rate=round(float(average), 3) if average else 0.0,
        stream_count=max(len(streams), declared_streams),
        format_name=str(fmt.get("format_name") or ""),
    )


_CONTEXT_PREFIX = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\]\s*)+")


def _clean(line: str, path: Path, label: str) -> str:
    """An ffprobe line fit for a person: no "[png @ 0x55...]" prefixes, no storage paths."""
    return _CONTEXT_PREFIX.sub("", line.strip()).replace(f"{path}: ", "").replace(str(path), label)[-300:]


def _last_line(text: str, path: Path, label: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _clean(lines[-1], path, label) if lines else "no details"


def _first_line(text: str, path: Path, label: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _clean(lines[0], path, label) if lines else ""


def measure_duration(path: Path, limits: ChildLimits | None = None) -> float | None:
    """Duration from the packets themselves, for containers that do not declare one.

    Streams ffprobe's CSV line by line (flat memory even for hours of video) and keeps the largest
    end time seen; gives up (None) after the probe deadline.
    """
    argv = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
            "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)]
    best = 0.0

    def on_line(line: str) -> None:
        nonlocal best
        parts = line.strip().split(",")
        try:
            end = float(parts[0]) + (float(parts[1]) if len(parts) > 1 and parts[1] else 0.0)
        except ValueError:
            return
        best = max(best, end)

    outcome = run_streaming(argv, on_line, timeout_seconds=PROBE_TIMEOUT_SECONDS, limits=limits)
    if outcome.timed_out:
        return None
    return best or None


def probe(path: Path, name: str | None = None, memory_bytes: int | None = None) -> Probe:
    """Run ffprobe on ``path``; InvalidMediaError if it is not a playable video.

    A missing file is *transient* (shared storage that is momentarily unmounted looks the same),
    while an empty or unreadable one is permanent. ``memory_bytes`` limits ffprobe's memory.
    """
    label = name or path.name
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise TransientTranscodeError(f"source {label} is not on the storage volume") from exc
    if size == 0:
        raise InvalidMediaError(f"{label} is empty (0 bytes)")
    limits = ChildLimits(memory_bytes=memory_bytes or None, cpu_seconds=PROBE_TIMEOUT_SECONDS)
    argv = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    out: list[str] = []
    done = run_streaming(argv, out.append, timeout_seconds=PROBE_TIMEOUT_SECONDS, limits=limits)
    stderr = "\n".join(done.stderr_tail)
    if done.timed_out:
        raise TransientTranscodeError(f"ffprobe took longer than {PROBE_TIMEOUT_SECONDS}s on {label}")
    if done.returncode != 0:
        exceeded = exceeded_limit(limits, done.returncode, done.cpu_seconds, done.out_of_memory)
        if exceeded:
            raise InvalidMediaError(f"{label} could not be probed: {exceeded}")
        if done.returncode < 0:
            raise TransientTranscodeError(f"ffprobe was killed by signal {-done.returncode}")
        raise InvalidMediaError(f"{label} is not a readable video: {_last_line(stderr, path, label)}")
    try:
        data = json.loads("".join(out) or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidMediaError(f"{label} is not a readable video (ffprobe output unparsable)") from exc
    fmt_duration = _float((data.get("format") or {}).get("duration"))
    measured = None if fmt_duration else measure_duration(path, limits)
    try:
        return parse_probe(data, label, measured)
    except InvalidMediaError as exc:
        hint = _first_line(stderr, path, label)  # e.g. "Picture size 16384x16384 is invalid"
        if hint:
            raise InvalidMediaError(f"{exc} ({hint})") from None
        raise
