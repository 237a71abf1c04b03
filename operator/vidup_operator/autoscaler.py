"""The operator's worker autoscaler: the worker Deployment's replicas follow the transcode backlog.

For clusters without KEDA (the chart's ``worker.autoscaling.operator``). The leading operator
already reads the RQ queue; here it also sets ``spec.replicas`` of one Deployment through its
``scale`` subresource, which is all the extra RBAC it needs (``get``/``patch`` on
``deployments/scale`` for that one name).

The rule (:func:`decide`, pure):

- Every queued or running job wants a worker: ``wanted = clamp(queued + running, min, max)``.
- More wanted than there are: scale up to ``wanted`` at once (a queued video waits for nothing).
- Fewer wanted: scale down to ``wanted`` only once the backlog has wanted fewer than the current
  replicas for the whole quiet period (the clock restarts whenever it wants as many or more), so
  a gap between two uploads does not tear down a worker that the next one needs.
- Never below the running jobs (up to ``max``): ``wanted`` counts them, so a scale down leaves at
  least one worker per running job. Kubernetes picks which pods go, and it may pick a busy one:
  a worker told to stop finishes its job within VIDUP_WORKER_DRAIN_SECONDS or hands it back to
  the front of the queue with no attempt spent (``vidup_transcoder.worker``), so no video is lost
  or run twice either way.
- Below ``min`` (someone scaled by hand): up to ``min`` at once; above ``max``: down to ``max`` at
  once (the bounds are the operator's contract, the quiet period is for the backlog).

The loop (:class:`Autoscaler`) runs only inside Kopf, which runs only on the replica holding the
leader lease, so exactly one replica scales. A new leader starts its quiet clock afresh: it scales
up at once but down only after a full quiet period of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from redis.exceptions import RedisError
from rq.registry import StartedJobRegistry

from vidup_operator.config import AutoscaleConfig
from vidup_operator.jobs import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backlog:
    """Transcode jobs waiting in the RQ queue and jobs a live worker is running."""

    queued: int
    running: int


class Move(enum.Enum):
    UP = "up"
    DOWN = "down"
    HOLD = "hold"
    #: Fewer workers are wanted, but the quiet period has not passed yet.
    WAIT = "wait"


@dataclass(frozen=True)
class Scale:
    """What :func:`decide` chose: the replicas to have, the kind of move, and why (for the log)."""

    replicas: int
    move: Move
    reason: str


def wanted(backlog: Backlog, min_replicas: int, max_replicas: int) -> int:
    """One worker per queued or running job, within ``[min_replicas, max_replicas]``."""
    return max(min_replicas, min(max_replicas, backlog.queued + backlog.running))


def decide(
    backlog: Backlog, current: int, min_replicas: int, max_replicas: int, quiet_for: float, quiet_seconds: float,
) -> Scale:
    """The replicas the worker Deployment should have (the rule is in the module's docstring).

    ``quiet_for`` is how long, in seconds, the backlog has wanted fewer workers than ``current``
    without a break (0 if it wants as many or more right now).
    """
    want = wanted(backlog, min_replicas, max_replicas)
    jobs = f"{backlog.queued} queued + {backlog.running} running"
    if current < min_replicas:
        return Scale(want, Move.UP, f"{current} replicas are below the minimum {min_replicas}; {jobs} want {want}")
    if current > max_replicas:
        return Scale(max_replicas, Move.DOWN, f"{current} replicas are above the maximum {max_replicas}")
    if want > current:
        return Scale(want, Move.UP, f"{jobs} want {want} workers (max {max_replicas})")
    if want == current:
        return Scale(current, Move.HOLD, f"{jobs} want the {current} workers there are")
    if quiet_for < quiet_seconds:
        return Scale(current, Move.WAIT, f"{jobs} want {want} of {current} workers; scaling down after "
                                         f"{quiet_seconds - quiet_for:.0f}s more of quiet")
    return Scale(want, Move.DOWN, f"{jobs} have wanted fewer than {current} workers for {quiet_for:.0f}s "
                                  f"(quiet period {quiet_seconds:.0f}s); {want} remain")


def read_backlog(jobs: JobStore, now: datetime | None = None) -> Backlog:
    """Queued: the RQ queue's length. Running: distinct jobs with a live entry in the started
    registry (an entry whose heartbeat expired is a dead worker's, not work that wants a worker;
    the reconciler re-enqueues it, and then it counts as queued). Read-only: no RQ cleanup here."""
    now_ts = (now or datetime.now(UTC)).timestamp()
    registry = StartedJobRegistry(jobs.queue.name, connection=jobs.connection)
    entries: list[tuple[Any, float]] = list(jobs.connection.zrange(registry.key, 0, -1, withscores=True))  # type: ignore[arg-type]
    running = set()
    for member, score in entries:
        if score < 0 or score > now_ts:  # RQ stores a job without a timeout as -1 (or +inf)
            text = member.decode() if isinstance(member, bytes) else str(member)
            running.add(text.split(":", 1)[0])
    return Backlog(queued=int(jobs.queue.count), running=len(running))


class Autoscaler:
    """Reads the backlog and the Deployment's scale, decides, patches. Blocking: call :meth:`tick`
    from a thread (:meth:`run` does)."""

    def __init__(
        self, config: AutoscaleConfig, namespace: str, jobs: JobStore, apps: client.AppsV1Api,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.jobs = jobs
        self.apps = apps
        #: When the backlog last wanted at least the replicas there were (the quiet clock's start).
        self.busy_at = clock()
        self._last_logged: tuple[Move, int] | None = None
        self._last_error = ""

    def replicas(self) -> int:
        """``spec.replicas`` of the Deployment's scale subresource."""
        scale = self.apps.read_namespaced_deployment_scale(self.config.deployment, self.namespace)
        return int(scale.spec.replicas or 0)

    def set_replicas(self, current: int, target: int) -> bool:
        """Patch the scale from ``current`` to ``target``; a JSON patch whose ``test`` makes it a
        compare-and-set, so a concurrent change (a person, a helm upgrade) is never overwritten
        blindly: the next tick re-reads and decides again. Returns whether it was applied."""
        patch = [{"op": "test", "path": "/spec/replicas", "value": current},
                 {"op": "replace", "path": "/spec/replicas", "value": target}]
        try:
            self.apps.patch_namespaced_deployment_scale(self.config.deployment, self.namespace, patch)
        except ApiException as exc:
            if exc.status in (409, 422):
                log.info("autoscale: %s changed under us (%s); deciding again", self.config.deployment, exc.reason)
                return False
            raise
        return True

    def tick(self, now: float) -> Scale:
        """One look: read, decide, act, log. ``now`` is a monotonic time (tests pass their own)."""
        c = self.config
        backlog = read_backlog(self.jobs)
        current = self.replicas()
        if wanted(backlog, c.min_replicas, c.max_replicas) >= current:
            self.busy_at = now
        scale = decide(backlog, current, c.min_replicas, c.max_replicas, now - self.busy_at, c.quiet_seconds)
        if scale.replicas != current and self.set_replicas(current, scale.replicas):
            log.info("autoscale: %s %s %d -> %d: %s", c.deployment, scale.move.value, current, scale.replicas,
                     scale.reason)
            self.busy_at = now  # a new size: the quiet clock starts again from it
        elif scale.replicas == current and self._last_logged != (scale.move, current):
            log.info("autoscale: %s %s at %d: %s", c.deployment, scale.move.value, current, scale.reason)
        self._last_logged = (scale.move, scale.replicas)
        return scale

    async def run(self) -> None:
        """Tick every interval until cancelled. Failures (Redis away, the Deployment missing, RBAC
        not granted) are logged once each and retried: the autoscaler must never stop the operator."""
        log.info("autoscale: %s/%s between %d and %d replicas, quiet period %.0fs",
                 self.namespace, self.config.deployment, self.config.min_replicas, self.config.max_replicas,
                 self.config.quiet_seconds)
        while True:
            try:
                await asyncio.to_thread(self.tick, time.monotonic())
                self._last_error = ""
            except (ApiException, RedisError, OSError) as exc:
                error = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
                if error != self._last_error:
                    log.warning("autoscale: cannot scale %s: %s", self.config.deployment, error)
                self._last_error = error
            await asyncio.sleep(self.config.interval_seconds)


def start(runtime: Any) -> asyncio.Task[None] | None:
    """Start the loop for the operator's :class:`~vidup_operator.reconciler.Runtime` if
    VIDUP_AUTOSCALE_DEPLOYMENT names a Deployment (else None). Call it from Kopf's startup handler:
    the task is also cancelled when that handler's task ends (Kopf shutting down, or losing the
    lease), in case Kopf's cleanup handlers are skipped, so a standby never scales."""
    config: AutoscaleConfig = runtime.config.autoscale
    if not config.enabled:
        return None
    apps = client.AppsV1Api(runtime.kube.custom.api_client)
    scaler = Autoscaler(config, runtime.config.settings.namespace, runtime.jobs, apps)
    task = asyncio.create_task(scaler.run(), name="autoscaler")
    owner = asyncio.current_task()
    if owner is not None:
        owner.add_done_callback(lambda _: task.cancel())
    return task


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel the loop :func:`start` returned and wait for it to end."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
