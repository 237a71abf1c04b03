"""Wake a resource's reconcile loop the moment its worker announces progress.

One pattern subscription for the whole operator (not one connection per video): each message on
``progress_channel(job_id)`` sets that job's :class:`asyncio.Event`. The loops still poll, so a lost
message (or a Redis restart) only costs a poll interval, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from vidup.chunking import parent_job_id
from vidup.transcode_jobs import progress_channel

log = logging.getLogger(__name__)

_PREFIX = progress_channel("")


class Wakeups:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._events: dict[str, asyncio.Event] = {}

    def event_for(self, job_id: str) -> asyncio.Event:
        return self._events.setdefault(job_id, asyncio.Event())

    def drop(self, job_id: str) -> None:
        self._events.pop(job_id, None)

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until ``job_id`` has news; returns whether it had."""
        event = self.event_for(job_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        woke = event.is_set()
        event.clear()
        return woke

    async def run(self) -> None:
        """Listen forever (reconnecting with backoff); cancel the task to stop."""
        backoff = 0.5
        while True:
            connection = aioredis.Redis.from_url(self.redis_url)
            try:
                async with connection.pubsub() as pubsub:
                    await pubsub.psubscribe(progress_channel("*"))
                    backoff = 0.5
                    async for message in pubsub.listen():
                        if message.get("type") != "pmessage":
                            continue
                        channel = message["channel"]
                        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                        # a piece's progress wakes its video's loop (vidup.chunking job ids)
                        event = self._events.get(parent_job_id(channel.removeprefix(_PREFIX)))
                        if event is not None:
                            event.set()
            except (RedisError, OSError) as exc:
                log.warning("progress subscription lost (%s); reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await connection.aclose()
