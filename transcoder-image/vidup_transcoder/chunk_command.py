"""The FFmpeg command lines of a chunked encode: one time range of the video, or the whole audio.

A chunked video must play exactly like the single-job encode (:mod:`vidup_transcoder.command`), so a
chunk's command is that command with three things added, all measured on Debian's FFmpeg 5.1:

* **The cut.** The input is sought (accurately) :data:`PREROLL_SECONDS` before the chunk, the
  pre-roll moved below zero (``setpts``) so the chunk's start is 0, then the ``fps`` filter fixes
  the rate on a grid that starts exactly there (``start_time`` pads the pre-roll if a sparse source
  has no frame in it), and ``trim`` keeps frames ``0 .. N-1`` with ``N = round(duration x rate)``.
  So a chunk always starts at its own start (the HLS muxer cuts segments relative to the first
  frame, and its keyframes, forced at ``t = k x segment`` as in the single job, fall where that
  rule expects them), and where the chunk's length is not a whole number of frames (29.97 fps) the
  join is off by at most half a frame instead of accumulating.
* **The timeline.** ``-output_ts_offset start + TS_OFFSET_SECONDS`` puts the chunk's timestamps on
  the video's timeline. The offset is never below :data:`TS_OFFSET_SECONDS` so no packet (B-frame
  decode times, the AAC encoder's priming frame) is ever negative: the muxer shifts streams that
  start negative by their own first timestamp, which would differ between chunk 0, later chunks
  and the audio. The MPEG-TS muxer then adds its constant 1.4 s mux delay to every piece alike.
* **The names.** ``-start_number`` numbers segments globally (``seg_%05d.ts``), so the pieces'
  files never collide and the stitch only concatenates.

The audio is encoded once over the whole source, with the same offset, into audio-only MPEG-TS
segments: its packets relate to the video's exactly as in the single-job encode (the first AAC
packet 1024 samples, the encoder's priming, before the first video frame).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from vidup_transcoder.command import (
    MEDIA_PLAYLIST,
    SEGMENT_PATTERN,
    EncodePlan,
    rendition_args,
)
from vidup_transcoder.ladder import AUDIO_KBPS

#: Added to every piece's timestamps so none is ever negative (see the module docstring).
TS_OFFSET_SECONDS = 10
#: Decoded before a chunk's start so the fps filter sees the frame that covers the start.
PREROLL_SECONDS = 1.0
#: Decoded past a chunk's end so the fps filter sees the frame after its last one.
POSTROLL_SECONDS = 1.0
#: Directory of the audio rendition inside the package (and of the audio piece in the parts).
AUDIO_DIR = "audio"


def chunk_frames(duration_seconds: float, frame_rate: Fraction) -> int:
    """Frames of a chunk that is not the last: ``duration x rate`` rounded half up (at least one)."""
    exact = Fraction(duration_seconds).limit_denominator(1000) * frame_rate
    return max(1, int(exact + Fraction(1, 2)))


def _seconds(value: float) -> str:
    return f"{value:.6f}"


def chunk_filter_graph(plan: EncodePlan, preroll: float, frames: int | None) -> str:
    """:func:`vidup_transcoder.command.filter_graph` for a chunk: shift, fixed rate from 0, trim."""
    n = len(plan.renditions)
    rate = f"{plan.frame_rate.numerator}/{plan.frame_rate.denominator}"
    end = f":end_pts={frames}" if frames is not None else ""  # fps's time base is 1/rate: pts = frame
    head = (f"[0:v:0]setpts=PTS-{_seconds(preroll)}/TB,fps={rate}:start_time={_seconds(-preroll)},"
            f"trim=start_pts=0{end},split={n}")
    parts = [head + "".join(f"[s{i}]" for i in range(n))]
    for i, r in enumerate(plan.renditions):
        parts.append(f"[s{i}]scale=w={r.width}:h={r.height},format=yuv420p,setsar=1[v{i}]")
    return ";".join(parts)


def build_chunk_command(plan: EncodePlan, start_seconds: float, duration_seconds: float, first_segment: int,
                        last: bool) -> list[str]:
    """Every rung of ``[start, start + duration)`` of the video, video only, in one FFmpeg.

    ``last``: the chunk runs to the end of the source (no trim), exactly as the single job ends."""
    plan = replace(plan, has_audio=False)
    preroll = min(PREROLL_SECONDS, start_seconds)
    frames = None if last else chunk_frames(duration_seconds, plan.frame_rate)
    window = [] if last else ["-t", _seconds(preroll + duration_seconds + POSTROLL_SECONDS)]
    threads = ["-filter_complex_threads", str(plan.threads), "-threads", str(plan.threads)] if plan.threads else []
    argv = [
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1", *threads,
        "-ss", _seconds(start_seconds - preroll), *window, "-i", str(plan.source),
        "-filter_complex", chunk_filter_graph(plan, preroll, frames),
    ]
    hls_options = ("-output_ts_offset", _seconds(start_seconds + TS_OFFSET_SECONDS),
                   "-start_number", str(first_segment))
    for i in range(len(plan.renditions)):
        argv += rendition_args(plan, i, hls_options)
    return argv


def build_audio_command(source: Path, out_dir: Path, segment_seconds: int, threads: int | None) -> list[str]:
    """The source's first audio stream as one audio-only HLS rendition in ``out_dir`` (stereo
    AAC-LC, 48 kHz, the ladder's audio rate, as the single job muxes it with each rung)."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1", *(["-threads", str(threads)] if threads else []),
        "-i", str(source), "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-c:a", "aac", "-ac", "2", "-ar", "48000", "-b:a", f"{AUDIO_KBPS}k",
        "-output_ts_offset", str(TS_OFFSET_SECONDS), "-start_number", "0",
        "-f", "hls", "-hls_time", str(segment_seconds), "-hls_playlist_type", "vod",
        "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(out_dir / SEGMENT_PATTERN),
        str(out_dir / MEDIA_PLAYLIST),
    ]
