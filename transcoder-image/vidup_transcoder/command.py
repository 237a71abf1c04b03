"""The FFmpeg command lines: one process that decodes once and splits to every rung, and the poster.

Why one process with ``split``: decoding (often HEVC from phones) is a large share of the work, so
doing it once beats one FFmpeg per rung. Why a time-based keyframe expression with
``-sc_threshold 0``: it puts an IDR frame at every segment boundary in every rung, so segments line
up across renditions and players switch cleanly; a GOP in frames would not survive rate changes.
Why an ``fps`` filter: it turns variable-frame-rate phone footage into a constant rate the
``FRAME-RATE`` attribute can describe, and caps 120/240 fps slow-motion captures at 60.
Why an optional thread cap: FFmpeg sizes its decoder, filter and encoder threads from the node's
CPUs, and its memory grows with them (a 1080p ladder maps 0.9 GiB on 2 CPUs, 7 GiB on 32), so a
fixed memory limit can only protect a pod if the thread count is bounded too (see limits.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vidup_transcoder.ladder import AUDIO_KBPS, Rendition

#: x264 speed/quality trade-off; tests use "ultrafast" through VIDUP_X264_PRESET.
DEFAULT_PRESET = "veryfast"
MAX_FRAME_RATE = 60
#: A sparse source (two frames an hour apart, a slideshow) is sampled at least this often.
MIN_FRAME_RATE = Fraction(1)
FALLBACK_FRAME_RATE = Fraction(30)
SEGMENT_PATTERN = "seg_%05d.ts"
MEDIA_PLAYLIST = "index.m3u8"
POSTER = "poster.jpg"


def x264_preset() -> str:
    """The preset from VIDUP_X264_PRESET, so CI can trade quality for speed without code changes."""
    return os.environ.get("VIDUP_X264_PRESET", "").strip() or DEFAULT_PRESET


#: Broadcast rates a variable-rate phone video's average (e.g. 29.86) is snapped to.
STANDARD_RATES = tuple(
    Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001", "60")
)
SNAP_TOLERANCE = 0.02


def output_frame_rate(fraction: str) -> Fraction:
    """The constant output rate: the source's average, snapped to a standard rate when within 2 %,
    then halved (thirded...) until it is at most 60 fps; at least 1 fps (a rate of 2 frames an hour
    would otherwise round to 0, which FFmpeg's fps filter cannot use)."""
    try:
        rate = Fraction(fraction)
    except (ValueError, ZeroDivisionError):
        rate = Fraction(0)
    if rate <= 0:
        return FALLBACK_FRAME_RATE
    if rate < MIN_FRAME_RATE:
        return MIN_FRAME_RATE
    if rate > MAX_FRAME_RATE:
        rate = rate / math.ceil(rate / MAX_FRAME_RATE)
    nearest = min(STANDARD_RATES, key=lambda std: abs(std - rate))
    if abs(nearest - rate) <= nearest * Fraction(SNAP_TOLERANCE):
        return nearest
    return rate.limit_denominator(1001)


# level: (max macroblocks/s, max frame size in macroblocks, max bitrate kbit/s for Main)
_LEVELS: tuple[tuple[str, int, int, int], ...] = (
    ("1.0", 1485, 99, 64), ("1.1", 3000, 396, 192), ("1.2", 6000, 396, 384), ("1.3", 11880, 396, 768),
    ("2.0", 11880, 396, 2000), ("2.1", 19800, 792, 4000), ("2.2", 20250, 1620, 4000),
    ("3.0", 40500, 1620, 10000), ("3.1", 108000, 3600, 14000), ("3.2", 216000, 5120, 20000),
    ("4.0", 245760, 8192, 20000), ("4.1", 245760, 8192, 50000), ("4.2", 522240, 8704, 50000),
    ("5.0", 589824, 22080, 135000), ("5.1", 983040, 36864, 240000), ("5.2", 2073600, 36864, 240000),
    ("6.0", 4177920, 139264, 240000), ("6.1", 8355840, 139264, 480000), ("6.2", 16711680, 139264, 800000),
)


def h264_level(width: int, height: int, fps: float, maxrate_kbps: int) -> str:
    """The lowest H.264 level (High profile: 1.25x Main's bitrate) that fits size, rate and bitrate.

    Players refuse streams whose declared level is beyond what they decode, so declaring the lowest
    that fits (854x480@30 -> 3.1, 1080p30 -> 4.0) maximises compatibility.
    """
    mbs_w, mbs_h = math.ceil(width / 16), math.ceil(height / 16)
    frame_mbs = mbs_w * mbs_h
    for name, max_mbps, max_fs, max_br in _LEVELS:
        side_limit = math.sqrt(max_fs * 8)
        if (frame_mbs <= max_fs and mbs_w <= side_limit and mbs_h <= side_limit
                and frame_mbs * fps <= max_mbps and maxrate_kbps <= max_br * 1.25):
            return name
    return _LEVELS[-1][0]


@dataclass(frozen=True)
class EncodePlan:
    """Everything the command depends on, so the command is a pure function of it."""

    source: Path
    out_dir: Path
    renditions: list[Rendition]
    segment_seconds: int
    frame_rate: Fraction
    has_audio: bool
    preset: str = DEFAULT_PRESET
    #: Threads for the decoder, the filter graph and each encoder; None leaves FFmpeg's own choice.
    threads: int | None = None


def filter_graph(plan: EncodePlan) -> str:
    """Decode once, fix the rate once, split, then scale each branch straight to 8-bit 4:2:0."""
    n = len(plan.renditions)
    rate = f"{plan.frame_rate.numerator}/{plan.frame_rate.denominator}"
    parts = [f"[0:v:0]fps={rate},split={n}" + "".join(f"[s{i}]" for i in range(n))]
    for i, r in enumerate(plan.renditions):
        parts.append(f"[s{i}]scale=w={r.width}:h={r.height},format=yuv420p,setsar=1[v{i}]")
    return ";".join(parts)


def rendition_args(plan: EncodePlan, index: int, hls_options: tuple[str, ...] = ()) -> list[str]:
    """One HLS output: H.264 High + stereo AAC-LC, keyframes forced on segment boundaries.

    ``hls_options`` go right before the muxer's own (a chunk's timestamp offset and first segment
    number, :mod:`vidup_transcoder.chunk_command`)."""
    r = plan.renditions[index]
    rung = r.rung
    level = h264_level(r.width, r.height, float(plan.frame_rate), rung.maxrate_kbps)
    seg = plan.segment_seconds
    args = ["-map", f"[v{index}]"]
    if plan.has_audio:
        args += ["-map", "0:a:0", "-c:a", "aac", "-ac", "2", "-ar", "48000", "-b:a", f"{AUDIO_KBPS}k"]
    args += [
        "-c:v", "libx264", "-preset", plan.preset, "-profile:v", "high", "-level:v", level,
        "-pix_fmt", "yuv420p",
        "-b:v", f"{rung.video_kbps}k", "-maxrate", f"{rung.maxrate_kbps}k", "-bufsize", f"{rung.bufsize_kbps}k",
        "-force_key_frames", f"expr:gte(t,n_forced*{seg})", "-sc_threshold", "0",
        "-max_muxing_queue_size", "4096",
        *(["-threads", str(plan.threads)] if plan.threads else []),
        *hls_options,
        "-f", "hls", "-hls_time", str(seg), "-hls_playlist_type", "vod",
        "-hls_flags", "independent_segments", "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(plan.out_dir / r.name / SEGMENT_PATTERN),
        str(plan.out_dir / r.name / MEDIA_PLAYLIST),
    ]
    return args


def build_ffmpeg_command(plan: EncodePlan) -> list[str]:
    """The single FFmpeg invocation; progress goes to stdout as key=value lines, errors to stderr."""
    threads = ["-filter_complex_threads", str(plan.threads), "-threads", str(plan.threads)] if plan.threads else []
    argv = [
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1", *threads, "-i", str(plan.source), "-filter_complex", filter_graph(plan),
    ]
    for i in range(len(plan.renditions)):
        argv += rendition_args(plan, i)
    return argv


def poster_time(duration_seconds: float) -> float:
    """A frame a little way in: the first frame is often black or a fade."""
    return round(min(duration_seconds / 3.0, 5.0), 3)


def build_poster_command(source: Path, target: Path, width: int, height: int, at_seconds: float,
                         threads: int | None = None) -> list[str]:
    """One JPEG frame at the top rendition's size (input seeking keeps this cheap); ``threads`` is
    the same cap as the encode's, so the poster's decoder fits the same memory limit."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        *(["-threads", str(threads)] if threads else []),
        "-ss", f"{at_seconds:.3f}", "-i", str(source), "-map", "0:v:0", "-frames:v", "1",
        "-vf", f"scale=w={width}:h={height},setsar=1", "-q:v", "3", "-f", "image2", str(target),
    ]
