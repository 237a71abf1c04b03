"""One active operator among replicas: a lease in Redis, renewed while held.

The chart grants only get/list/watch/patch on VideoTranscodes and create on Events, which is not
enough for Kopf peering (its own CRDs) or a coordination.k8s.io Lease. Redis is already shared by
every replica, so the lease lives there: a key holding the leader's identity with a TTL. Only the
holder runs Kopf; standbys poll and take over within one TTL when the holder dies.

Safety does not rest on the lease alone: job ids are deterministic and enqueued atomically-unique,
so even two leaders for a moment (a Redis flush removes the key) would never run a video twice.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

from vidup_operator import metrics


def lease_key(namespace: str, queue: str) -> str:
    """One leader per watched namespace and queue: separate installs sharing a Redis don't collide."""
    return f"vidup:operator:leader:{namespace}:{queue}"

_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not holder then
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def new_identity() -> str:
    """Unique per process, readable in ``redis-cli GET`` (which pod holds the lease)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class LeaderLease:
    """A Redis lease: :meth:`acquire` to become leader, :meth:`renew` well within ``ttl_seconds``."""

    def __init__(
        self, connection: redis.Redis, identity: str, key: str, ttl_seconds: float = 10.0,
    ) -> None:
        self.connection = connection
        self.identity = identity
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.key = key
        self._renew = connection.register_script(_RENEW)
        self._release = connection.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lease if free (or already ours)."""
        return self.renew()

    def renew(self) -> bool:
        """Extend the lease if we hold it, or re-take it if it vanished (Redis lost its data)."""
        held = bool(self._renew(keys=[self.key], args=[self.identity, self.ttl_ms]))
        metrics.LEADER.set(1 if held else 0)
        return held

    def release(self) -> None:
        """Give the lease up (on a clean shutdown) so a standby need not wait for the TTL."""
        metrics.LEADER.set(0)
        self._release(keys=[self.key], args=[self.identity])

    def holder(self) -> str | None:
        raw = self.connection.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw
