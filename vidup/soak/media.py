"""Small generated source videos of varied sizes, cached between runs.

The soak needs tens of uploads whose sizes differ by more than an order of magnitude (so chunking,
interruptions and resumes land at many different offsets) without making FFmpeg's work heavy on a
small machine. Low-resolution sources (320x240, one rendition) keep each transcode at a second or
two of CPU; temporal noise in some of them raises the bitrate (and so the upload size) without
making the encode longer. Generating them costs a few seconds, so they are cached by their
parameters under the vidup cache directory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vidup.localstack.binaries import cache_root

SIZE = "320x240"
#: (seconds, noise strength): about 0.2 MB (2 s, clean) up to about 8 MB (6 s, heavy noise).
VARIANTS: tuple[tuple[int, int], ...] = (
    (2, 0), (3, 0), (4, 0), (6, 0), (2, 15), (3, 25), (4, 40), (5, 20), (6, 60), (5, 60),
)


@dataclass(frozen=True)
class Source:
    """One source file and what the audit compares the stored upload with."""

    path: Path
    seconds: int
    noise: int
    size: int
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.seconds}s/noise{self.noise}"


def media_dir() -> Path:
    return cache_root() / "soak-media"


def _generate(path: Path, seconds: int, noise: int) -> None:
    """Encode to a temporary name and rename, so an interrupted run never caches half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    video = f"testsrc2=size={SIZE}:rate=25" + (f",noise=alls={noise}:allf=t" if noise else "")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", video,
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", "-f", "mp4", str(tmp)],
        check=True, timeout=120,
    )
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sources(directory: Path | None = None) -> list[Source]:
    """Every variant, generated on first use; ordered as :data:`VARIANTS`."""
    directory = directory or media_dir()
    found: list[Source] = []
    for seconds, noise in VARIANTS:
        path = directory / f"src-{SIZE}-{seconds}s-noise{noise}.mp4"
        if not path.is_file() or path.stat().st_size == 0:
            _generate(path, seconds, noise)
        found.append(Source(path, seconds, noise, path.stat().st_size, _sha256(path)))
    return found
