"""Probe a source with ffprobe and turn its JSON into the facts the ladder needs.

``parse_probe`` is pure (ffprobe JSON in, :class:`Probe` out) so odd real-world shapes -- rotated
phone videos, anamorphic pixels, cover-art streams, missing durations -- are unit-tested without
running anything. ``probe`` is the thin edge that runs ffprobe.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidup.transcode_jobs import SourceFacts
from vidup_transcoder.errors import InvalidMediaError, TransientTranscodeError

#: ffprobe must never hang a worker on a pathological file.
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
    rate = _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate")) or Fraction(0)
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
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no details"


def measure_duration(path: Path) -> float | None:
    """Duration from the packets themselves, for containers that do not declare one.

    Streams ffprobe's CSV line by line (flat memory even for hours of video) and keeps the largest
    end time seen.
    """
    argv = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
            "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)]
    best = 0.0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.strip().split(",")
            try:
                end = float(parts[0]) + (float(parts[1]) if len(parts) > 1 and parts[1] else 0.0)
            except ValueError:
                continue
            best = max(best, end)
    return best or None


def probe(path: Path, name: str | None = None) -> Probe:
    """Run ffprobe on ``path``; InvalidMediaError if it is not a playable video.

    A missing file is *transient* (shared storage that is momentarily unmounted looks the same),
    while an empty or unreadable one is permanent.
    """
    label = name or path.name
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise TransientTranscodeError(f"source {label} is not on the storage volume") from exc
    if size == 0:
        raise InvalidMediaError(f"{label} is empty (0 bytes)")
    argv = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TransientTranscodeError(f"ffprobe took longer than {PROBE_TIMEOUT_SECONDS}s on {label}") from exc
    if done.returncode != 0:
        if done.returncode < 0:
            raise TransientTranscodeError(f"ffprobe was killed by signal {-done.returncode}")
        raise InvalidMediaError(f"{label} is not a readable video: {_last_line(done.stderr)}")
    try:
        data = json.loads(done.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidMediaError(f"{label} is not a readable video (ffprobe output unparsable)") from exc
    fmt_duration = _float((data.get("format") or {}).get("duration"))
    measured = None if fmt_duration else measure_duration(path)
    return parse_probe(data, label, measured)
