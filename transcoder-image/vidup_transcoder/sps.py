"""Read the H.264 profile, constraint flags and level an encoded segment really has.

The CODECS attribute must describe the stream as encoded, not as requested: x264 silently drops
to (Constrained) Baseline with ``-preset ultrafast`` even when asked for High. The three bytes after
the SPS NAL header are exactly RFC 6381's ``avc1.PPCCLL``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from vidup_transcoder.errors import TransientTranscodeError


def find_sps(annexb: bytes) -> tuple[int, int, int] | None:
    """(profile_idc, constraint flags, level_idc) of the first SPS in an Annex B byte stream."""
    start = 0
    while True:
        i = annexb.find(b"\x00\x00\x01", start)
        if i < 0 or i + 6 >= len(annexb):
            return None
        header = annexb[i + 3]
        if header & 0x1F == 7:
            return annexb[i + 4], annexb[i + 5], annexb[i + 6]
        start = i + 3


def segment_sps(segment: Path) -> tuple[int, int, int]:
    """Copy the first video frame of ``segment`` out as raw H.264 and read its SPS."""
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(segment), "-map", "0:v:0", "-c", "copy",
            "-frames:v", "1", "-f", "h264", "pipe:1"]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    found = find_sps(done.stdout) if done.returncode == 0 else None
    if found is None:
        raise TransientTranscodeError(f"could not read the H.264 parameters of {segment.name}")
    return found
