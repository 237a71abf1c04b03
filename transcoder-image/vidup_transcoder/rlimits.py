"""Kernel resource limits for an FFmpeg/ffprobe child, and reading which one it ran into.

The probe decides from what a file declares; these bound what it does when it lies (a stream that
switches to a 16000x16000 picture after its first frame, a container that says one second and holds
an hour). They are set with ``setrlimit`` in the child between fork and exec, so they bind FFmpeg
alone: the worker, its other jobs and Redis connections are never affected.

* memory: RLIMIT_DATA (heap, anonymous mappings, thread stacks). Over it, allocations fail and
  FFmpeg exits with "Cannot allocate memory" instead of the kernel OOM-killing the whole pod.
  RLIMIT_AS is set to twice that as a backstop for kernels that do not count mmap in RLIMIT_DATA.
* CPU time: RLIMIT_CPU. FFmpeg treats the soft limit's SIGXCPU like SIGTERM (stops, exit 255); the
  hard limit a few seconds later is a SIGKILL should it not.
* file size: RLIMIT_FSIZE, so no single output file outgrows the job's output budget (SIGXFSZ).
"""

from __future__ import annotations

import resource
import signal
from dataclasses import dataclass

from vidup_transcoder.limits import GIB, MIB

#: Seconds between the CPU soft limit (SIGXCPU, FFmpeg stops) and the hard one (SIGKILL).
CPU_HARD_MARGIN_SECONDS = 10
#: FFmpeg's exit status after it stopped on a signal it handles (SIGTERM, SIGINT, SIGXCPU).
FFMPEG_SIGNALLED_EXIT = 255


@dataclass(frozen=True)
class ChildLimits:
    """Limits for one child process; None leaves a resource as the worker has it."""

    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    file_size_bytes: int | None = None

    def apply(self) -> None:
        """Set the limits on the calling process (run in the child, before exec)."""
        if self.memory_bytes:
            _lower(resource.RLIMIT_DATA, self.memory_bytes)
            _lower(resource.RLIMIT_AS, 2 * self.memory_bytes)
        if self.cpu_seconds:
            _lower(resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + CPU_HARD_MARGIN_SECONDS)
        if self.file_size_bytes:
            _lower(resource.RLIMIT_FSIZE, self.file_size_bytes)


def _lower(which: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above one the worker itself already runs under (that would fail)."""
    _, cur_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
    resource.setrlimit(which, (min(soft, hard), hard))


def human_bytes(n: int) -> str:
    """3758096384 -> "3.5 GiB", 262144 -> "256 KiB": limits are quoted in messages people read."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def exceeded_limit(limits: ChildLimits, returncode: int, cpu_seconds: float, out_of_memory: bool) -> str | None:
    """Which limit a child ran into, as a phrase for a message; None if it was none of them.

    Memory is read from FFmpeg's "Cannot allocate memory" (``out_of_memory``), whatever the exit
    status: FFmpeg drops a frame it cannot allocate as a decoding error and may still exit 0. With a
    limit set, that is the limit (in a container the kernel OOM-kills rather than refusing an
    allocation), and the same bytes will run into it again, so it is the source's fault. CPU is read
    from the exit status FFmpeg has after SIGXCPU together with the CPU time it really used, so a
    plain SIGTERM is never taken for it.
    """
    if limits.file_size_bytes and returncode == -signal.SIGXFSZ:
        return f"an output file grew past the {human_bytes(limits.file_size_bytes)} output limit"
    if limits.cpu_seconds and cpu_seconds >= limits.cpu_seconds * 0.95 and returncode in (
        FFMPEG_SIGNALLED_EXIT, -signal.SIGXCPU, -signal.SIGKILL
    ):
        return f"decoding needed more than the {limits.cpu_seconds} CPU-seconds it may use"
    if limits.memory_bytes and out_of_memory:
        return f"decoding needed more than the {human_bytes(limits.memory_bytes)} of memory it may use"
    return None
