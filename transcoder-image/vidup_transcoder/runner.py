"""Run FFmpeg as a child without ever holding its output in memory.

stdout carries ``-progress`` lines, handed one by one to a callback; stderr is drained by a thread
into a bounded deque so a chatty or failing FFmpeg cannot grow the worker, yet its last lines are
there for the failure message. A watchdog enforces the deadline from inside the job, and however the
caller leaves (error, timeout, cancellation), FFmpeg is terminated before this returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

STDERR_LINES = 20
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
) -> RunOutcome:
    """Run ``argv``; call ``on_stdout_line`` for each stdout line as it arrives."""
    tail: deque[str] = deque(maxlen=stderr_lines)
    timed_out = threading.Event()
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="replace", bufsize=1,
        preexec_fn=die_with_parent if _LIBC is not None else None,
    )

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip():
                tail.append(line.rstrip()[-500:])

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
    return RunOutcome(proc.returncode, list(tail), timed_out.is_set())
