"""The chaos loop: SIGKILL a component at random, leave it down a moment, start it again.

What a node or container crash does to a pod: the whole process group dies at once, with no
chance to clean up, release locks or hand work back. Victims come from a shuffled bag of kinds
(ingest replica, worker, operator), so a short run still hits every kind and a long run hits them
evenly. Redis is restarted separately, once (without persistence, so it comes back empty: the
queue, progress, locks, leases and worker registrations are gone), because the product promises
that losing Redis loses no video.

Restarts go through the :class:`~vidup.localstack.stack.Stack`, the code `vidup up` runs. An ingest
replica and the operator come back as the same process definition (an ingest on the same port,
as a Service would route to a new pod). A killed worker is replaced by a new worker with a new
name, as a Deployment replaces a pod.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from vidup.localstack.processes import ManagedProcess
from vidup.localstack.stack import Stack

KINDS = ("ingest", "worker", "operator")


@dataclass
class ChaosLog:
    """What the loop did, for the figures and for reading a failure."""

    kills: Counter[str] = field(default_factory=Counter)
    redis_restarts: int = 0
    #: Components that exited without being killed (restarted as a kubelet would), with their logs.
    crashes: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    error: str = ""

    def note(self, started: float, text: str) -> None:
        self.timeline.append(f"{time.monotonic() - started:7.1f}s {text}")


def sigkill(process: ManagedProcess) -> None:
    """SIGKILL the process's whole group (a crashed pod) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.popen is not None:
        process.popen.wait(timeout=30)


class Chaos(threading.Thread):
    """Kills and restarts components of ``stack`` every ``interval`` seconds (a random pick in the
    range) until :meth:`finish`; restarts Redis once when ``redis_due()`` first says so."""

    def __init__(self, stack: Stack, rng: random.Random, interval: tuple[float, float],
                 redis_due: Callable[[], bool], redis_restarts: int = 1) -> None:
        super().__init__(name="soak-chaos", daemon=True)
        self.stack = stack
        self.rng = rng
        self.interval = interval
        self.redis_due = redis_due
        self.redis_left = redis_restarts
        self.log = ChaosLog()
        self.stopping = threading.Event()
        self.started_at = time.monotonic()
        self._bag: list[str] = []
        self._next_worker = 100  # fresh worker names, past the stack's own worker-0, worker-1, ...

    def finish(self) -> ChaosLog:
        """Stop after the current kill-and-restart (so every component runs again) and report."""
        self.stopping.set()
        self.join()
        try:
            self.revive()
        except Exception:
            self.log.error = self.log.error or traceback.format_exc()
        return self.log

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.rng.uniform(*self.interval)):
                self.revive()
                if self.redis_left > 0 and self.redis_due():
                    self.restart_redis()
                    self.redis_left -= 1
                    continue
                if not self._bag:
                    self._bag = list(KINDS)
                    self.rng.shuffle(self._bag)
                self.kill_one(self._bag.pop())
        except Exception:
            self.log.error = traceback.format_exc()
            self.log.note(self.started_at, f"chaos loop failed: {self.log.error.splitlines()[-1]}")

    def revive(self) -> None:
        """Restart whatever exited on its own, as the kubelet restarts a crashed container, and
        record it: no component may die of the chaos it did not suffer itself."""
        for process in [p for p in self.stack.processes if p.popen is not None and not p.running()]:
            code = process.popen.returncode if process.popen is not None else None
            self.log.crashes.append(f"{process.name} exited by itself (code {code}); its log ends:\n"
                                    f"{process.log_tail(25)}")
            self.log.note(self.started_at, f"{process.name} had exited by itself (code {code}): restarting it")
            self._replace(process)
        redis = self.stack.redis
        if redis is not None and redis.process is not None and not redis.process.running():
            self.log.crashes.append(f"redis exited by itself; its log ends:\n{redis.process.log_tail(25)}")
            redis.start()

    def _replace(self, process: ManagedProcess) -> None:
        """A new worker (new name, as a new pod) for a worker; the same definition otherwise."""
        if process.name.startswith("worker-"):
            self.stack.processes.remove(process)  # reaped: never signal its pid again
            fresh = self.stack.start_worker(self._next_worker)
            self._next_worker += 1
            self.log.note(self.started_at, f"started {fresh.name} (pid {fresh.pid})")
        else:
            fresh = self.stack.restart(process)
            self.log.note(self.started_at, f"restarted {fresh.name} (pid {fresh.pid})")

    def _down_time(self) -> None:
        time.sleep(self.rng.uniform(0.2, 2.0))

    def kill_one(self, kind: str) -> None:
        """SIGKILL a running component of ``kind`` picked at random, leave it down a moment, replace it."""
        victims = [p for p in self.stack.processes if p.name.startswith(f"{kind}-") and p.running()]
        if not victims:
            return
        victim = self.rng.choice(victims)
        sigkill(victim)
        self.log.kills[kind] += 1
        self.log.note(self.started_at, f"SIGKILL {victim.name} (pid {victim.pid})")
        self._down_time()
        self._replace(victim)

    def restart_redis(self) -> None:
        """SIGKILL Redis and start it again, empty, on the same port."""
        redis = self.stack.redis
        assert redis is not None and redis.process is not None
        sigkill(redis.process)
        self.log.note(self.started_at, f"SIGKILL redis (pid {redis.process.pid}); it comes back empty")
        self._down_time()
        redis.start()  # same port: every component reconnects to the same URL
        self.log.redis_restarts += 1
        self.log.note(self.started_at, f"restarted redis (pid {redis.process.pid})")
