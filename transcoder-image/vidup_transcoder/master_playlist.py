"""Measure the encoded segments and write the master playlist from what is really on disk.

FFmpeg 5.1's own master declares ``BANDWIDTH`` from nominal rates, which came out *below* the
measured peak on short clips (RFC 8216 forbids that) and lacks ``AVERAGE-BANDWIDTH`` and
``FRAME-RATE``; see the project's HLS notes. So the job measures every segment file and computes
the RFC 8216 section 4.1 peak itself: the largest bit rate over any run of consecutive segments
lasting 0.5 to 1.5 times the target duration.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float
    size_bytes: int


@dataclass(frozen=True)
class MediaPlaylist:
    target_duration: int
    segments: list[Segment]

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


def parse_media_playlist(text: str) -> tuple[int, list[tuple[str, float]]]:
    """Target duration and (uri, duration) pairs from a VOD media playlist."""
    target = 0
    pairs: list[tuple[str, float]] = []
    pending: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            pending = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line and not line.startswith("#") and pending is not None:
            pairs.append((line, pending))
            pending = None
    return target, pairs


def read_media_playlist(path: Path) -> MediaPlaylist:
    """The playlist with each segment's real size, read from the files next to it."""
    target, pairs = parse_media_playlist(path.read_text())
    segments = [Segment(uri, dur, (path.parent / uri).stat().st_size) for uri, dur in pairs]
    return MediaPlaylist(target, segments)


def peak_bandwidth(segments: Sequence[Segment], target_duration: float) -> int:
    """RFC 8216 section 4.1 peak segment bit rate in bit/s, rounded up.

    Runs whose duration falls outside [0.5, 1.5] x target do not count; when no run qualifies (a clip
    shorter than half a target duration) the whole clip's rate is the only honest answer.
    """
    low, high = 0.5 * target_duration, 1.5 * target_duration
    best = 0.0
    for start in range(len(segments)):
        size = 0
        duration = 0.0
        for seg in segments[start:]:
            size += seg.size_bytes
            duration += seg.duration
            if duration > high + 1e-9:
                break
            if duration >= low - 1e-9 and duration > 0:
                best = max(best, size * 8 / duration)
    if best == 0.0:
        return average_bandwidth(segments)
    return math.ceil(best)


def average_bandwidth(segments: Sequence[Segment]) -> int:
    """Total bits over total duration, rounded up."""
    duration = sum(s.duration for s in segments)
    if duration <= 0:
        return 0
    return math.ceil(sum(s.size_bytes for s in segments) * 8 / duration)


def h264_codec_string(profile_idc: int, constraint_flags: int, level_idc: int) -> str:
    """RFC 6381 ``avc1.PPCCLL`` from the three SPS bytes, e.g. High@4.0 -> avc1.640028."""
    return f"avc1.{profile_idc:02x}{constraint_flags:02x}{level_idc:02x}"


AAC_LC = "mp4a.40.2"


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int
    average_bandwidth: int
    width: int
    height: int
    codecs: str
    frame_rate: float


AUDIO_GROUP = "aud"


@dataclass(frozen=True)
class AudioRendition:
    """A separate audio rendition (a chunked video's sound, encoded once): every variant names its
    group, and their CODECS and BANDWIDTH must already count it."""

    uri: str
    channels: int = 2
    name: str = "Audio"
    group: str = AUDIO_GROUP


def render_master(variants: Sequence[Variant], audio: AudioRendition | None = None) -> str:
    """The master playlist text; segments all start with an IDR frame, hence INDEPENDENT-SEGMENTS.
    With ``audio``, the ``EXT-X-MEDIA`` audio group every variant names."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    group = ""
    if audio is not None:
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{audio.group}",NAME="{audio.name}",DEFAULT=YES,AUTOSELECT=YES,'
            f'CHANNELS="{audio.channels}",URI="{audio.uri}"'
        )
        group = f',AUDIO="{audio.group}"'
    for v in variants:
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={v.bandwidth},AVERAGE-BANDWIDTH={v.average_bandwidth},"
            f'RESOLUTION={v.width}x{v.height},FRAME-RATE={v.frame_rate:.3f},CODECS="{v.codecs}"{group}'
        )
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write then rename, so a reader sees the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
