"""Run FFmpeg as a child without ever holding its output in memory.

stdout carries ``-progress`` lines, handed one by one to a callback; stderr is drained by a thread
into a bounded deque so a chatty or failing FFmpeg cannot grow the worker, yet its last lines are
there for the failure message. A watchdog enforces the deadline from inside the job, and however the
caller leaves (error, timeout, cancellation), FFmpeg is terminated before this returns. Kernel limits
(:class:`~vidup_transcoder.rlimits.ChildLimits`) are set in the child before it execs, and the CPU
time it used is reported so a failure can be told apart from one caused by its CPU limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vidup_transcoder.rlimits import ChildLimits

STDERR_LINES = 20
#: How FFmpeg reports a refused allocation (ENOMEM), e.g. under its RLIMIT_DATA.
OUT_OF_MEMORY_MARKER = "cannot allocate memory"
TERMINATE_GRACE_SECONDS = 5.0


# Loaded once at import: dlopen() right after fork() in a process that had threads can deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies. Used for FFmpeg (so an
    abandoned encode never keeps burning CPU or writing into a directory being cleaned) and for RQ's
    work-horse (so a SIGKILLed worker takes its job's processes along, as a dying pod would)."""
    if _LIBC is not None:
        with contextlib.suppress(Exception):
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


@dataclass(frozen=True)
class RunOutcome:
    returncode: int
    stderr_tail: list[str]
    timed_out: bool
    #: User + system CPU time of the child (children reaped meanwhile by this process count too;
    #: a job runs its children one at a time, so that is the child).
    cpu_seconds: float = 0.0
    #: Any stderr line reported a refused allocation (even one the tail no longer holds): FFmpeg
    #: treats a frame it could not allocate as a decoding error and may still exit 0 without it.
    out_of_memory: bool = False
    #: Peak resident memory of the largest child this process has reaped so far (``ru_maxrss`` of
    #: RUSAGE_CHILDREN): in a work-horse, which runs one job's children one at a time, the job's
    #: largest FFmpeg/ffprobe.
    peak_memory_bytes: int = 0


def _children_peak_memory_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024  # Linux reports KiB


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child_setup(limits: ChildLimits | None) -> Callable[[], None] | None:
    """What runs in the child between fork and exec: die with the parent, then the limits."""
    if limits is None:
        return die_with_parent if _LIBC is not None else None

    def setup() -> None:
        die_with_parent()
        limits.apply()

    return setup


def stop_process(proc: subprocess.Popen[str], grace: float = TERMINATE_GRACE_SECONDS) -> None:
    """SIGTERM (FFmpeg then finishes its current packet and exits), SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def run_streaming(
    argv: Sequence[str],
    on_stdout_line: Callable[[str], None],
    timeout_seconds: float | None = None,
    stderr_lines: int = STDERR_LINES,
    limits: ChildLimits | None = None,
) -> RunOutcome:
    """Run ``argv`` under ``limits``; call ``on_stdout_line`` for each stdout line as it arrives.

    An exception from ``on_stdout_line`` (e.g. the output guard's) stops the child and propagates.
    """
    tail: deque[str] = deque(maxlen=stderr_lines)
    timed_out = threading.Event()
    out_of_memory = threading.Event()
    cpu_before = _children_cpu_seconds()
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="replace", bufsize=1, preexec_fn=_child_setup(limits),
    )

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip():
                tail.append(line.rstrip()[-500:])
                if OUT_OF_MEMORY_MARKER in line.lower():
                    out_of_memory.set()

    def on_deadline() -> None:
        timed_out.set()
        stop_process(proc)

    reader = threading.Thread(target=drain_stderr, name="ffmpeg-stderr", daemon=True)
    reader.start()
    watchdog = threading.Timer(timeout_seconds, on_deadline) if timeout_seconds else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_stdout_line(line)
        proc.wait()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        stop_process(proc)
        reader.join(timeout=TERMINATE_GRACE_SECONDS)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
    return RunOutcome(proc.returncode, list(tail), timed_out.is_set(), _children_cpu_seconds() - cpu_before,
                      out_of_memory.is_set(), _children_peak_memory_bytes())
