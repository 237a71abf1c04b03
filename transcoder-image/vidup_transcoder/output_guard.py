"""Keep one job's output within its budget while FFmpeg writes it.

RLIMIT_FSIZE bounds each file, but an HLS package is hundreds of files, so a source that declares a
minute and decodes for a day would still fill the volume one ten-second segment at a time. The
guard adds up the staging directory as progress arrives (at most once a second: a directory walk is
cheap, but not free on network storage) and stops the encode with a permanent failure once the
package outgrows what its declared duration can explain. The same check runs once more on the
finished package.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from vidup_transcoder.errors import InvalidMediaError
from vidup_transcoder.rlimits import human_bytes

CHECK_INTERVAL_SECONDS = 1.0


def tree_bytes(root: Path) -> int:
    """Bytes of every regular file under ``root`` (files vanishing meanwhile count as empty)."""
    total = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


class OutputGuard:
    """Raises InvalidMediaError from :meth:`check` once ``root`` holds more than ``budget`` bytes."""

    def __init__(self, root: Path, budget: int | None, label: str, declared_seconds: float,
                 interval: float = CHECK_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.budget = budget
        self.label = label
        self.declared_seconds = declared_seconds
        self.interval = interval
        self.clock = clock
        self._next = 0.0

    def check(self, force: bool = False) -> None:
        """Measure now if the interval has passed (or ``force``); raise if over budget."""
        if self.budget is None:
            return
        now = self.clock()
        if not force and now < self._next:
            return
        self._next = now + self.interval
        used = tree_bytes(self.root)
        if used > self.budget:
            raise InvalidMediaError(
                f"{self.label} produced more than the {human_bytes(self.budget)} of output its declared "
                f"{self.declared_seconds:.1f} s allow (VIDUP_OUTPUT_BITRATE_FACTOR, VIDUP_OUTPUT_BASE_BYTES): "
                "it decodes to far more video than it declares"
            )
