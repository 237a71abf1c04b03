"""Small files that would cost a worker dearly: generated at test time with FFmpeg and a few bytes
of Python (a PNG writer, a Matroska duration patch), each a few kilobytes to a few megabytes."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from transcoder_media import ffmpeg


def png(width: int, height: int, channels: int = 1) -> bytes:
    """An all-black PNG of any size, however large (``channels`` 1 = gray, 4 = RGBA): zeros
    compress about a thousandfold, so a 16000x16000 picture is a few hundred kilobytes."""
    color_type = {1: 0, 4: 6}[channels]
    row = bytes(1 + width * channels)  # filter byte + pixels
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def png_stream_in_matroska(path: Path, frames: list[bytes], rate: int = 25) -> Path:
    """PNG frames as a Matroska video track: the track header takes the first frame's size, later
    frames may be any size (a stream that grows after the probe has looked)."""
    pipe = path.with_name(path.name + ".pngs")
    pipe.write_bytes(b"".join(frames))
    ffmpeg("-f", "png_pipe", "-framerate", str(rate), "-i", str(pipe), "-c", "copy", "-f", "matroska", str(path))
    pipe.unlink()
    return path


def declare_duration(path: Path, seconds: float) -> Path:
    """Overwrite a Matroska file's Segment Duration (an 8-byte float of milliseconds, as FFmpeg
    writes it) without touching the media: the container now lies about its length."""
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Duration element, 8-byte payload
    assert at >= 0, f"{path} has no 8-byte Duration element"
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000.0)
    path.write_bytes(bytes(data))
    return path


def clip(path: Path, size: str = "320x240", seconds: float = 1, rate: int = 25, container: str = "mp4",
         extra: tuple[str, ...] = ()) -> Path:
    """A short testsrc2 clip without audio (H.264 ultrafast), the raw material of most cases."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra, "-f", container, str(path))
    return path


def many_streams(path: Path, count: int) -> Path:
    """One small clip mapped ``count`` times into one Matroska file."""
    source = clip(path.with_name(path.name + ".src.mp4"))
    maps = [arg for _ in range(count) for arg in ("-map", "0:v")]
    ffmpeg("-i", str(source), *maps, "-c", "copy", "-f", "matroska", str(path))
    source.unlink()
    return path


def sparse(path: Path, gap_seconds: float) -> Path:
    """Two frames ``gap_seconds`` apart: a file of a few kilobytes that really lasts that long."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=2:duration=1", "-vf", f"setpts=N*{gap_seconds}/TB",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4", str(path))
    return path


def faststart_clip(path: Path, seconds: float = 6) -> Path:
    """A 640x360 clip with audio whose index (moov) comes first, as web-ready MP4s have it."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", "-movflags", "+faststart", "-f", "mp4", str(path))
    return path


def top_level_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of an MP4's top-level boxes."""
    boxes, at = [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if size < 8:
            break
        boxes.append((kind, at, size))
        at += size
    return boxes


def header_then_garbage(source: Path, path: Path) -> Path:
    """Everything up to and including the first kilobyte of media data, then random bytes."""
    data = source.read_bytes()
    mdat = next(offset for kind, offset, _ in top_level_boxes(data) if kind == b"mdat")
    keep = mdat + 8 + 1024
    path.write_bytes(data[:keep] + os.urandom(len(data) - keep))
    return path


def peak_children_rss_mib(code: str, env: dict[str, str]) -> tuple[str, float]:
    """Run ``code`` in a fresh interpreter; its stdout and the peak RSS of the processes it started
    (ffprobe, FFmpeg), which a test process that generated sources itself could not tell apart."""
    wrapper = code + "\nimport resource\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    done = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120, check=True)
    *lines, peak = done.stdout.strip().splitlines()
    return "\n".join(lines), int(peak) / 1024
