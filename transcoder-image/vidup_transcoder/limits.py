"""What one upload may make a worker spend, read from ``VIDUP_*`` variables (README "Hostile media").

A few hundred bytes can declare a 16384x16384 picture, a 100000 fps stream, a week of video or
hundreds of streams; decoding them would exhaust a worker's memory, CPU or disk. The probe-time
limits turn such sources into a permanent ``InvalidMedia`` failure before FFmpeg starts
(:mod:`vidup_transcoder.admission`); the FFmpeg limits bound what a source that lies in its headers
can still do (:mod:`vidup_transcoder.rlimits`, :mod:`vidup_transcoder.output_guard`).

================================== ============ ====================================================
VIDUP_MAX_FRAME_PIXELS             35389440     pixels in one frame (8192x4320, DCI 8K; UHD 8K fits)
VIDUP_MAX_FRAME_SIDE               8192         longest side of a frame, in pixels
VIDUP_MAX_FRAME_RATE               240          average frames per second (240: phone slow motion)
VIDUP_MAX_DURATION_SECONDS         14400        length of a source (4 hours)
VIDUP_MAX_STREAMS                  32           streams in one file (video, audio, data, subtitles)
VIDUP_MAX_DECODED_GIGAPIXELS       3600         width x height x frames to decode, in 10^9 pixels:
                                                4 h of 4K or 1 h of 8K at 30 fps; an hour of 8K60
                                                is refused
VIDUP_FFMPEG_MEMORY_LIMIT          auto         RLIMIT_DATA of every FFmpeg/ffprobe child, in bytes
                                                (or 3584Mi, 4Gi); auto: 4Gi, or the container's
                                                memory limit minus 512Mi if that is less; 0: none
VIDUP_FFMPEG_THREADS               8            threads FFmpeg may use per stage (decoder, filters,
                                                each encoder) on nodes with more CPUs; FFmpeg's own
                                                choice on smaller ones; 0: always FFmpeg's own
VIDUP_FFMPEG_CPU_BASE_SECONDS      300          RLIMIT_CPU of the encode: this many CPU-seconds...
VIDUP_FFMPEG_CPU_PER_SOURCE_SECOND 60           ...plus this many per second of source
VIDUP_OUTPUT_BASE_BYTES            67108864     output a job may write: this many bytes...
VIDUP_OUTPUT_BITRATE_FACTOR        2            ...plus this many times the ladder's peak bit rate
                                                (every rung's maxrate + audio) x duration
================================== ============ ====================================================

Why these defaults: an 8K source is the largest a phone or camera makes, 240 fps its fastest slow
motion. The memory limit is RLIMIT_DATA, not RLIMIT_AS: address space also counts the 64 MiB malloc
arenas glibc reserves per thread and the mapped libraries, so it overstates use by a margin that
grows with the node's cores. Measured on Debian's FFmpeg 5.1 with this job's command
(1080p/720p/480p, veryfast): a 1080p H.264 source peaks at 0.9 GiB of data (0.5 GiB resident) with
FFmpeg's own threading on 2 CPUs and at 1.7 GiB with 8 threads per stage; the heaviest allowed
source, 8K HEVC 10-bit, at 1.8 GiB and 3.1 GiB (2.2 GiB resident). Without the thread cap the same
1080p encode maps 3.8 GiB with FFmpeg's threading for 16 CPUs and 7.1 GiB for 32, which no fixed
limit could allow and still protect a 4 GiB pod; hence the cap. The CPU limit is a backstop for
large nodes (on small ones the job's wall-clock budget ends a runaway encode first): a 1080p30
ladder needs 1.6 CPU-seconds per second of source, 8K30 HEVC 10-bit 7; slower x264 presets need
more. Output: the ladder's rungs are capped at their maxrate, so twice the sum of maxrates is never
reached by an honest encode; the base covers playlists, the poster and tiny sources.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vidup.settings import env_float, env_int

GIB = 1024**3
MIB = 1024**2
#: The FFmpeg memory limit when the container has none (or a larger one).
DEFAULT_FFMPEG_MEMORY = 4 * GIB
#: Left to the worker, its work-horse and the page cache when the limit comes from the container's.
CONTAINER_RESERVE = 512 * MIB
#: Never go below this when deriving from a tiny container limit: FFmpeg could not even start.
MIN_FFMPEG_MEMORY = 256 * MIB
#: cgroup v1 writes "no limit" as a number near 2**63.
_UNLIMITED = 1 << 60
_QUANTITY = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|Ti)?\s*$")
_UNITS = {None: 1, "Ki": 1024, "Mi": MIB, "Gi": GIB, "Ti": 1024 * GIB}


def parse_bytes(text: str) -> int:
    """A byte count as plain digits or a Kubernetes binary quantity ("3584Mi", "4Gi")."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"not a byte count: {text!r} (use digits or a Ki/Mi/Gi/Ti suffix)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this container (cgroup v2 or v1), or None when there is none.

    In a pod that is ``resources.limits.memory``; exceeding it gets the whole worker OOM-killed,
    which is exactly what the FFmpeg limit exists to prevent, so the default stays below it.
    """
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            value = int(raw)
        except ValueError:
            continue
        return value if 0 < value < _UNLIMITED else None
    return None


def default_ffmpeg_memory(container_limit: int | None) -> int:
    """4 GiB, or the container's limit minus a reserve for the worker if that is smaller."""
    if container_limit is None:
        return DEFAULT_FFMPEG_MEMORY
    return max(MIN_FFMPEG_MEMORY, min(DEFAULT_FFMPEG_MEMORY, container_limit - CONTAINER_RESERVE))


def available_cpus() -> int:
    """The CPUs FFmpeg will see (it sizes its threads from the affinity mask, as this does)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class MediaLimits:
    """Every limit; the defaults are the table above. Zero disables a limit (tests, trusted input)."""

    max_frame_pixels: int = 8192 * 4320
    max_frame_side: int = 8192
    max_frame_rate: float = 240.0
    max_duration_seconds: float = 4 * 3600.0
    max_streams: int = 32
    max_decoded_gigapixels: float = 3600.0
    ffmpeg_memory_bytes: int = DEFAULT_FFMPEG_MEMORY
    ffmpeg_threads: int = 8
    cpu_base_seconds: float = 300.0
    cpu_per_source_second: float = 60.0
    output_base_bytes: int = 64 * MIB
    output_bitrate_factor: float = 2.0

    @classmethod
    def from_env(cls) -> MediaLimits:
        d = cls()
        memory = os.environ.get("VIDUP_FFMPEG_MEMORY_LIMIT", "").strip()
        return cls(
            max_frame_pixels=env_int("VIDUP_MAX_FRAME_PIXELS", d.max_frame_pixels),
            max_frame_side=env_int("VIDUP_MAX_FRAME_SIDE", d.max_frame_side),
            max_frame_rate=env_float("VIDUP_MAX_FRAME_RATE", d.max_frame_rate),
            max_duration_seconds=env_float("VIDUP_MAX_DURATION_SECONDS", d.max_duration_seconds),
            max_streams=env_int("VIDUP_MAX_STREAMS", d.max_streams),
            max_decoded_gigapixels=env_float("VIDUP_MAX_DECODED_GIGAPIXELS", d.max_decoded_gigapixels),
            ffmpeg_memory_bytes=(
                default_ffmpeg_memory(cgroup_memory_limit()) if memory.lower() in ("", "auto")
                else parse_bytes(memory)
            ),
            ffmpeg_threads=env_int("VIDUP_FFMPEG_THREADS", d.ffmpeg_threads),
            cpu_base_seconds=env_float("VIDUP_FFMPEG_CPU_BASE_SECONDS", d.cpu_base_seconds),
            cpu_per_source_second=env_float("VIDUP_FFMPEG_CPU_PER_SOURCE_SECOND", d.cpu_per_source_second),
            output_base_bytes=env_int("VIDUP_OUTPUT_BASE_BYTES", d.output_base_bytes),
            output_bitrate_factor=env_float("VIDUP_OUTPUT_BITRATE_FACTOR", d.output_bitrate_factor),
        )

    def ffmpeg_thread_cap(self, cpus: int | None = None) -> int | None:
        """The ``-threads`` to pass, or None to leave FFmpeg's own choice (a node at or under the cap)."""
        cpus = available_cpus() if cpus is None else cpus
        if self.ffmpeg_threads <= 0 or cpus <= self.ffmpeg_threads:
            return None
        return self.ffmpeg_threads
