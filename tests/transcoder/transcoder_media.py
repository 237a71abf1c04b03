"""Helpers for the transcoder tests: generate short sources with lavfi and inspect real outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import m3u8


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_source(
    path: Path,
    size: str = "1920x1080",
    seconds: float = 4,
    rate: int = 30,
    audio: bool = True,
    vcodec: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
    vfilter: str | None = None,
    extra: tuple[str, ...] = (),
    rotate: int | None = None,
    container: str = "mp4",
) -> Path:
    """A testsrc2 (+ sine) clip; ``rotate`` stores a display-matrix rotation the way phones do."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    if vfilter:
        args += ["-vf", vfilter]
    args += list(vcodec)
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k"]
    args += [*extra, "-f", container]
    target = path if rotate is None else path.with_name("unrotated-" + path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg(*args, str(target))
    if rotate is not None:
        ffmpeg("-i", str(target), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", "-f", container, str(path))
        target.unlink()
    return path


def ffprobe_json(path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def streams(path: Path) -> list[dict[str, Any]]:
    return list(ffprobe_json(path, "-show_streams")["streams"])


def video_packets(segment: Path) -> list[dict[str, Any]]:
    data = ffprobe_json(segment, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")
    return list(data["packets"])


def segment_starts(playlist_path: Path) -> list[float]:
    """First video timestamp of each segment, asserting each segment opens on a keyframe."""
    playlist = m3u8.load(str(playlist_path))
    starts = []
    for seg in playlist.segments:
        packets = video_packets(playlist_path.parent / seg.uri)
        assert packets, f"{seg.uri} has no video"
        assert "K" in packets[0]["flags"], f"{playlist_path.parent.name}/{seg.uri} does not start on a keyframe"
        starts.append(float(packets[0]["pts_time"]))
    return starts
