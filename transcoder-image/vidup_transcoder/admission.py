"""Whether a probed source may be transcoded at all, and what its encode may spend.

Pure functions of the probe and :class:`~vidup_transcoder.limits.MediaLimits`, so every rule is
unit-tested without FFmpeg. A refusal is an :class:`InvalidMediaError` (permanent: the same bytes
are refused the same way) whose message names the value, the limit and the variable that sets it,
because the person reading ``status.message`` is either the uploader or the operator who may raise
it. The budgets are what the FFmpeg child is then held to, in case the file lied to the probe.
"""

from __future__ import annotations

from vidup_transcoder import command
from vidup_transcoder.errors import InvalidMediaError
from vidup_transcoder.ladder import AUDIO_KBPS, Rendition
from vidup_transcoder.limits import MediaLimits
from vidup_transcoder.probe import Probe

#: Demuxers that read pictures (png_pipe, jpeg_pipe...): FFmpeg invents their rate (25 fps).
_IMAGE_DEMUXER_SUFFIX = "_pipe"
_IMAGE_DEMUXERS = frozenset({"image2"})
#: Output shorter than declared by more than this (seconds, or fraction of the duration) = truncated.
TRUNCATION_SLACK_SECONDS = 2.0
TRUNCATION_SLACK_FRACTION = 0.1


def duration_text(seconds: float) -> str:
    """12.5 s, 3 min 20 s, 27 h 46 min: durations in messages read at a glance."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def decoded_gigapixels(p: Probe) -> float:
    """Pixels FFmpeg decodes and scales, in 10^9: frame size x frames, where frames come at the
    source's average rate or the output rate, whichever is higher (the ``fps`` filter duplicates
    a sparse source's frames before they are scaled from full size)."""
    output_rate = float(command.output_frame_rate(p.frame_rate_fraction))
    rate = max(p.average_frame_rate, output_rate)
    return p.stored_width * p.stored_height * rate * p.duration_seconds / 1e9


def is_still_picture(p: Probe) -> bool:
    """One picture read by an image demuxer: a photo, not a video. A sequence of pictures in the
    same demuxer is a video (a raw Motion JPEG stream is exactly that) and is judged like one."""
    names = [name for name in p.format_name.split(",") if name]
    if not any(name.endswith(_IMAGE_DEMUXER_SUFFIX) or name in _IMAGE_DEMUXERS for name in names):
        return False
    return p.frame_rate <= 0 or p.duration_seconds * p.frame_rate <= 1.5


def check_source(p: Probe, limits: MediaLimits, label: str) -> None:
    """Refuse a source whose declared shape would exhaust a worker; return if it is within limits."""
    if is_still_picture(p):
        raise InvalidMediaError(f"{label} is a still picture ({p.format_name}), not a video")
    if limits.max_streams and p.stream_count > limits.max_streams:
        raise InvalidMediaError(
            f"{label} has {p.stream_count} streams; at most {limits.max_streams} are accepted (VIDUP_MAX_STREAMS)"
        )
    w, h = p.stored_width, p.stored_height
    if limits.max_frame_side and max(w, h) > limits.max_frame_side:
        raise InvalidMediaError(
            f"{label} has {w}x{h} frames; at most {limits.max_frame_side} pixels a side are accepted "
            "(VIDUP_MAX_FRAME_SIDE)"
        )
    if limits.max_frame_pixels and w * h > limits.max_frame_pixels:
        raise InvalidMediaError(
            f"{label} has {w}x{h} frames ({w * h / 1e6:.1f} megapixels); at most "
            f"{limits.max_frame_pixels / 1e6:.1f} megapixels are accepted (VIDUP_MAX_FRAME_PIXELS)"
        )
    if limits.max_frame_rate and p.average_frame_rate > limits.max_frame_rate:
        raise InvalidMediaError(
            f"{label} declares {p.average_frame_rate:g} frames per second; at most {limits.max_frame_rate:g} "
            "are accepted (VIDUP_MAX_FRAME_RATE)"
        )
    if limits.max_duration_seconds and p.duration_seconds > limits.max_duration_seconds:
        raise InvalidMediaError(
            f"{label} declares a duration of {duration_text(p.duration_seconds)}; at most "
            f"{duration_text(limits.max_duration_seconds)} are accepted (VIDUP_MAX_DURATION_SECONDS)"
        )
    gigapixels = decoded_gigapixels(p)
    if limits.max_decoded_gigapixels and gigapixels > limits.max_decoded_gigapixels:
        raise InvalidMediaError(
            f"{label} would decode {gigapixels:,.0f} gigapixels ({w}x{h}, {duration_text(p.duration_seconds)}); "
            f"at most {limits.max_decoded_gigapixels:,.0f} are accepted (VIDUP_MAX_DECODED_GIGAPIXELS)"
        )


def output_budget_bytes(duration_seconds: float, renditions: list[Rendition], has_audio: bool,
                        limits: MediaLimits) -> int | None:
    """Bytes the whole package may take: base + factor x (sum of maxrates + audio) x duration.

    A source that declares one second and decodes for an hour outgrows this long before the disk
    fills. None when both terms are switched off.
    """
    if limits.output_base_bytes <= 0 and limits.output_bitrate_factor <= 0:
        return None
    kbps = sum(r.rung.maxrate_kbps + (AUDIO_KBPS if has_audio else 0) for r in renditions)
    per_second = kbps * 1000 / 8
    return int(max(0, limits.output_base_bytes) + max(0.0, limits.output_bitrate_factor) * per_second
               * max(0.0, duration_seconds))


def cpu_budget_seconds(duration_seconds: float, limits: MediaLimits) -> int | None:
    """CPU-seconds the encode may use: base + per-source-second x duration; None when switched off."""
    if limits.cpu_base_seconds <= 0 and limits.cpu_per_source_second <= 0:
        return None
    seconds = max(0.0, limits.cpu_base_seconds) + max(0.0, limits.cpu_per_source_second) * max(0.0, duration_seconds)
    return max(1, int(seconds))


def check_complete(output_seconds: float, declared_seconds: float, label: str) -> None:
    """Refuse a package much shorter than the source declares: the file is truncated (its index
    promises media its bytes do not hold) or decodes only in part. Short gaps are normal (a last
    audio frame, edit lists), hence the slack."""
    slack = max(TRUNCATION_SLACK_SECONDS, TRUNCATION_SLACK_FRACTION * declared_seconds)
    if output_seconds < declared_seconds - slack:
        raise InvalidMediaError(
            f"{label} decodes to only {duration_text(output_seconds)} of the {duration_text(declared_seconds)} "
            "it declares: the file is truncated or damaged"
        )
