"""``python -m vidup_operator``: wait for the leader lease, run Kopf while holding it.

Standbys hold no watches and write nothing; when the leader dies its lease expires and one of them
starts Kopf, which lists every VideoTranscode and resumes each one from its status (level-triggered).
If the leader loses the lease (Redis unreachable long enough), it stops Kopf and becomes a standby.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import kopf
import redis

from vidup import logs
from vidup_operator import (
    handlers,  # noqa: F401  (registers the handlers with Kopf)
    metrics,
)
from vidup_operator.config import OperatorConfig
from vidup_operator.jobs import JobStore
from vidup_operator.kube import Kube, new_api_client
from vidup_operator.leader import LeaderLease, lease_key, new_identity
from vidup_operator.reconciler import Runtime
from vidup_operator.wakeups import Wakeups

log = logging.getLogger("vidup_operator")


async def _hold(lease: LeaderLease, interval: float, lost: asyncio.Event) -> None:
    """Renew the lease; on failure to renew (or a Redis outage longer than the TTL) raise ``lost``."""
    misses = 0
    while True:
        await asyncio.sleep(interval)
        try:
            held = await asyncio.to_thread(lease.renew)
        except redis.RedisError as exc:
            misses += 1
            log.warning("could not renew the leader lease (%s)", exc)
            held = misses * interval < lease.ttl_ms / 1000 * 0.8
        else:
            misses = 0
        if not held:
            log.warning("lost the leader lease; stopping and standing by")
            lost.set()
            return


async def _standby(lease: LeaderLease, interval: float, exiting: asyncio.Event) -> bool:
    """Wait until we hold the lease (True) or are asked to exit (False)."""
    while not exiting.is_set():
        try:
            if await asyncio.to_thread(lease.acquire):
                return True
        except redis.RedisError as exc:
            log.warning("Redis unavailable while waiting for the leader lease: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exiting.wait(), interval)
    return False


async def main(config: OperatorConfig) -> None:
    settings = config.settings
    connection = redis.Redis.from_url(settings.redis_url)
    lease = LeaderLease(
        connection, new_identity(), lease_key(settings.namespace, settings.queue), config.lease_seconds,
    )
    runtime = Runtime(
        config=config, jobs=JobStore(connection, settings.queue), kube=Kube(new_api_client()),
        wakeups=Wakeups(settings.redis_url),
    )
    metrics.serve_from_env(runtime.jobs)
    loop = asyncio.get_running_loop()
    exiting = asyncio.Event()
    interval = max(0.2, config.lease_seconds / 3)
    while True:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, exiting.set)
        log.info("standing by for the leader lease (%s)", lease.identity)
        if not await _standby(lease, interval, exiting):
            return
        log.info("leader: reconciling VideoTranscodes in namespace %s", settings.namespace)
        lost = asyncio.Event()
        holder = asyncio.create_task(_hold(lease, interval, lost))
        listener = asyncio.create_task(runtime.wakeups.run())
        try:
            await kopf.operator(
                standalone=True, namespaces=[settings.namespace], stop_flag=lost,
                memo=kopf.Memo(runtime=runtime),
            )
        finally:
            metrics.LEADER.set(0)
            metrics.RESOURCES.clear()  # a standby watches nothing; a new leader lists afresh
            for task in (holder, listener):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not lost.is_set():  # Kopf stopped on SIGTERM/SIGINT: a clean exit hands over at once
            with contextlib.suppress(redis.RedisError):
                lease.release()
            return


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vidup_operator", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    kopf.configure(debug=args.verbose, verbose=args.verbose)
    # Kopf's text lines name their object; in JSON mode ours replace them, the object as video_id.
    logs.configure("operator", "DEBUG" if args.verbose else None, keep_text_handlers=True)
    asyncio.run(main(OperatorConfig.from_env()))


if __name__ == "__main__":
    cli()
