"""A per-upload lock shared by every worker and replica through Redis, with takeover.

A tus client that lost its connection resumes with HEAD + PATCH while the server may still be
blocked reading the dead connection. Instead of answering 423 or waiting for a long timeout, the
newcomer asks the holder to stop: it sets ``stop`` key naming the holder's token; each process's
keeper thread (which refreshes a short TTL on every lock the process holds) sees it and calls the
holder's ``on_stop`` (which ends its read), the holder saves what it has and releases. If the holder
is dead (SIGKILL), the short TTL lets the newcomer in within ``ttl`` seconds.

A holder only writes while its lock is fresh: the keeper stops refreshing a lock that was lost and
tells the holder to stop too.

**Who held it before.** Taking the lock also swaps the upload's *last holder* record for the new
token, in the same script, and the holder learns the token it replaced
(:class:`~vidup_ingest.tus.storage.Fence`). Everything that changes an upload holds its lock, so a
process whose own token is still the last holder knows nobody touched the upload since it let go:
the S3 store then skips re-reading what it already knows (two GETs per PATCH).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from vidup_ingest.errors import TusError
from vidup_ingest.tus.storage import Fence

log = logging.getLogger(__name__)

#: How long the last-holder record outlives its lock: past it a returning holder re-reads the store.
LAST_HOLDER_TTL_MS = 3_600_000

#: SET the lock if free; then swap the last-holder record for the new token, returning the old one.
_ACQUIRE = """
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local previous = redis.call('get', KEYS[2]) or ''
redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[3])
return previous
"""
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass
class HeldLock:
    upload_id: str
    key: str
    token: str
    on_stop: Callable[[], None] | None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    lost: bool = False
    #: ``time.monotonic()`` just before the last SET/refresh of the key succeeded: until one TTL
    #: after it, nobody else can hold the lock.
    confirmed_at: float = 0.0
    #: The token of the holder before this one ("" if unknown: never held, or Redis forgot it).
    previous: str = ""

    @property
    def fence(self) -> Fence:
        return Fence(previous=self.previous, token=self.token)

    def request_stop(self) -> None:
        if self.stop_requested.is_set():
            return
        self.stop_requested.set()
        if self.on_stop is not None:
            try:
                self.on_stop()
            except Exception:  # the holder's stop hook must never kill the keeper
                log.exception("stop hook of upload %s failed", self.upload_id)


class LockManager:
    """Acquire/release per-upload locks; one keeper thread per process refreshes them."""

    def __init__(self, client: redis.Redis, prefix: str = "vidup:ingest", ttl: float = 1.5,
                 wait: float = 10.0) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl_ms = int(ttl * 1000)
        self.wait = wait
        self._held: dict[str, HeldLock] = {}
        self._mutex = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._keeper_pid = 0
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)

    def _key(self, upload_id: str) -> str:
        return f"{self.prefix}:lock:{upload_id}"

    def _last_key(self, upload_id: str) -> str:
        return f"{self.prefix}:last-holder:{upload_id}"

    def _stop_key(self, upload_id: str, token: str) -> str:
        return f"{self.prefix}:stop:{upload_id}:{token}"

    def acquire(self, upload_id: str, on_stop: Callable[[], None] | None = None,
                takeover: bool = True) -> HeldLock:
        """Take the lock, asking a current holder to stop when ``takeover``; 423 after ``wait``."""
        key = self._key(upload_id)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait
        asked: set[str] = set()
        while True:
            sent_at = time.monotonic()
            previous = self._acquire(keys=[key, self._last_key(upload_id)],
                                     args=[token, self.ttl_ms, LAST_HOLDER_TTL_MS])
            if previous is not None:
                previous = previous.decode() if isinstance(previous, bytes) else str(previous)
                held = HeldLock(upload_id, key, token, on_stop, confirmed_at=sent_at, previous=previous)
                self._register(held)
                return held
            raw = self.redis.get(key)
            holder = raw.decode() if isinstance(raw, bytes) else raw
            if takeover and holder is not None and holder not in asked:
                self.redis.set(self._stop_key(upload_id, holder), "1", px=max(10_000, self.ttl_ms * 4))
                asked.add(holder)
            if time.monotonic() > deadline:
                raise TusError(423, "the upload is busy with another request; retry shortly",
                               {"Retry-After": "1"})
            time.sleep(0.02)

    def release(self, held: HeldLock) -> None:
        with self._mutex:
            self._held.pop(held.token, None)
        try:
            self._release(keys=[held.key], args=[held.token])
        except redis.RedisError:
            log.warning("could not release lock of upload %s; it expires by itself", held.upload_id)

    def still_held(self, held: HeldLock) -> bool:
        """Whether the lock is ours now: checked before a commit so a superseded holder never writes.

        Within half a TTL of the last confirmation the key cannot have expired, so the answer is
        known without a round trip (most small PATCHes commit well within it).
        """
        if held.lost:
            return False
        if time.monotonic() - held.confirmed_at < self.ttl_ms / 1000 / 2:
            return True
        return bool(self.redis.get(held.key) == held.token.encode())

    def _register(self, held: HeldLock) -> None:
        with self._mutex:
            self._held[held.token] = held
            if self._keeper is None or not self._keeper.is_alive() or self._keeper_pid != os.getpid():
                self._keeper_pid = os.getpid()
                self._keeper = threading.Thread(target=self._keep, name="upload-lock-keeper", daemon=True)
                self._keeper.start()

    def _keep(self) -> None:
        interval = self.ttl_ms / 1000 / 5
        while True:
            time.sleep(interval)
            with self._mutex:
                held = list(self._held.values())
            if held:
                try:
                    self.refresh(held)
                except redis.RedisError:
                    log.exception("refreshing upload locks failed")

    def refresh(self, held: list[HeldLock]) -> None:
        """One keeper pass over ``held`` (a snapshot of the held locks): extend each lock's TTL
        and stop the holders whose lock was lost or who were asked to stop.

        A lock released after the snapshot (its request is over) is left alone: its refresh fails
        because it is gone, and stopping it would shut the read side of a keep-alive connection
        that already carries the client's next request.
        """
        sent_at = time.monotonic()
        pipe = self.redis.pipeline(transaction=False)
        for h in held:
            self._refresh(keys=[h.key], args=[h.token, self.ttl_ms], client=pipe)
            pipe.exists(self._stop_key(h.upload_id, h.token))
        results = pipe.execute()
        with self._mutex:  # release() unregisters under it: no stop after a release
            for i, h in enumerate(held):
                if h.token not in self._held:
                    continue
                refreshed, stop = results[2 * i], results[2 * i + 1]
                if refreshed:
                    h.confirmed_at = sent_at
                else:
                    h.lost = True
                if not refreshed or stop:
                    h.request_stop()
