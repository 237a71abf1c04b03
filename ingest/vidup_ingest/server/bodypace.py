"""How long reading a request body may take: an idle limit and a minimum rate.

A client that trickles its body (a byte a second) keeps the thread serving it blocked for as long
as it likes: a per-read idle timeout (nginx's ``client_body_timeout``) never fires, because a byte
always arrives in time. Like Apache's mod_reqtimeout (``body=20,MinRate=500``), the body must also
average ``min_rate`` bytes a second over each ``window``; a slower client is cut. Cutting is safe
here: what arrived is committed and a tus client resumes from ``Upload-Offset``.

Windows follow each other (each is judged on its own bytes) rather than averaging the whole body,
so a fast start buys no credit for a trickle later.
"""

from __future__ import annotations

import math
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

from vidup_ingest.config import IngestConfig


class TooSlow(TimeoutError):
    """The body fell under the minimum rate (or sent nothing for the idle limit)."""


@dataclass(frozen=True)
class BodyPace:
    #: Seconds without a single byte before the client counts as gone (None: no limit).
    idle: float | None = None
    #: Bytes a second the body must average over each window (0: no floor).
    min_rate: float = 0.0
    #: Seconds over which the rate is judged.
    window: float = 20.0

    @classmethod
    def from_config(cls, config: IngestConfig) -> BodyPace:
        return cls(idle=config.read_timeout or None, min_rate=config.body_min_rate, window=config.body_rate_window)

    def start(self, clock: Callable[[], float] = time.monotonic) -> PaceKeeper:
        return PaceKeeper(self, clock)


class PaceKeeper:
    """One body's pace: counts what arrives, says how long the next wait may last."""

    def __init__(self, pace: BodyPace, clock: Callable[[], float]) -> None:
        self.pace = pace
        self._clock = clock
        now = clock()
        self._last_byte = now
        self._window_start = now
        self._window_bytes = 0

    def received(self, n: int) -> None:
        if n > 0:
            self._window_bytes += n
            self._last_byte = self._clock()

    def wait_budget(self) -> float | None:
        """Seconds the next wait for bytes may last (None: no limit). Raises ``TooSlow`` once a
        limit is crossed; a window that ended at the required rate starts the next one."""
        pace, now = self.pace, self._clock()
        budget: float | None = None
        if pace.idle is not None:
            budget = self._last_byte + pace.idle - now
            if budget <= 0:
                raise TooSlow(f"the client sent nothing for {pace.idle:g} s")
        if pace.min_rate > 0:
            elapsed = now - self._window_start
            if elapsed >= pace.window:
                if self._window_bytes < pace.min_rate * elapsed:
                    raise TooSlow(f"the client sent {self._window_bytes} bytes in {elapsed:.0f} s, "
                                  f"under {pace.min_rate:g} bytes/s")
                self._window_start, self._window_bytes, elapsed = now, 0, 0.0
            left = pace.window - elapsed
            budget = left if budget is None else min(budget, left)
        return budget

    def wait_readable(self, fd: int) -> None:
        """Block until ``fd`` has bytes (or EOF), within the limits; ``TooSlow`` when one is crossed."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            budget = self.wait_budget()
            if poller.poll(None if budget is None else max(1, math.ceil(budget * 1000))):
                return
