"""Turn FFmpeg's ``-progress`` key=value stream into a bounded number of 0-100 updates.

FFmpeg writes a block of ``key=value`` lines roughly twice a second, ending each block with
``progress=continue`` (or ``progress=end``). Only the output timestamp matters: divided by the probed
duration it is the fraction done. Updates are emitted only when the whole percentage grows and at
most every ``min_interval`` seconds, so a fast encode does not flood Redis and the operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def parse_out_time(key: str, value: str) -> float | None:
    """Seconds from one progress line, or None if the line carries no (known) time.

    ``out_time_ms`` is, despite its name, microseconds in every FFmpeg since 2.x (a long-standing
    naming bug kept for compatibility), exactly like ``out_time_us``.
    """
    value = value.strip()
    if key in ("out_time_us", "out_time_ms"):
        try:
            return max(0.0, int(value) / 1_000_000)
        except ValueError:
            return None
    if key == "out_time":
        try:
            sign = -1.0 if value.startswith("-") else 1.0
            hours, minutes, seconds = value.lstrip("-").split(":")
            return max(0.0, sign * (int(hours) * 3600 + int(minutes) * 60 + float(seconds)))
        except ValueError:
            return None
    return None


@dataclass
class ProgressParser:
    """Feed lines in order; :meth:`feed` returns a percentage when one should be published."""

    duration_seconds: float
    min_interval: float = 0.25
    seconds_done: float = 0.0
    finished: bool = False
    last_emitted: int = -1
    _last_emit_at: float = field(default=-math.inf, repr=False)

    def percent(self) -> int:
        """Whole percent done; 100 only once FFmpeg says ``progress=end``."""
        if self.finished:
            return 100
        if self.duration_seconds <= 0:
            return 0
        return max(0, min(99, int(self.seconds_done / self.duration_seconds * 100)))

    def feed(self, line: str, now: float) -> int | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        seconds = parse_out_time(key, value)
        if seconds is not None:
            self.seconds_done = max(self.seconds_done, seconds)
            return None
        if key != "progress":
            return None
        if value.strip() == "end":
            self.finished = True
        current = self.percent()
        if current <= self.last_emitted:
            return None
        if current < 100 and now - self._last_emit_at < self.min_interval:
            return None
        self.last_emitted = current
        self._last_emit_at = now
        return current
