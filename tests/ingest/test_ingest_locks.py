"""The per-upload lock's keeper pass, against a real Redis, with the timing windows made exact."""

from __future__ import annotations

import uuid

import redis

from vidup_ingest.tus.locks import LockManager


def _manager(redis_url: str) -> LockManager:
    return LockManager(redis.Redis.from_url(redis_url), prefix=f"test-{uuid.uuid4().hex[:8]}", ttl=1.5, wait=1)


def test_a_lock_released_after_the_keepers_snapshot_is_not_stopped(redis_url: str) -> None:
    """The keeper snapshots the held locks, then the request releases its lock and its connection
    goes back to keep-alive: the failed refresh of that lock must not stop it (stopping shuts the
    connection's read side, which dropped the client's next request)."""
    locks = _manager(redis_url)
    stops: list[str] = []
    held = locks.acquire("a" * 32, on_stop=lambda: stops.append("stopped"))
    snapshot = [held]
    locks.release(held)
    locks.refresh(snapshot)
    assert stops == [] and not held.lost


def test_the_keeper_stops_a_holder_that_was_asked_to_or_lost_its_lock(redis_url: str) -> None:
    locks = _manager(redis_url)
    asked, lost = [], []
    first = locks.acquire("b" * 32, on_stop=lambda: asked.append(1))
    second = locks.acquire("c" * 32, on_stop=lambda: lost.append(1))
    locks.redis.set(locks._stop_key(first.upload_id, first.token), "1")  # a newcomer's request
    locks.redis.delete(second.key)  # expired while its holder was stalled
    locks.refresh([first, second])
    assert asked == [1] and not first.lost
    assert lost == [1] and second.lost
    locks.release(first)
    locks.release(second)


def test_each_holder_learns_who_held_the_lock_before_it(redis_url: str) -> None:
    """The fence a store trusts: the token of the hold before, swapped atomically with the lock,
    so a process sees its own token only if nobody (another replica, the sweeper) held it since."""
    here = _manager(redis_url)
    elsewhere = LockManager(redis.Redis.from_url(redis_url), prefix=here.prefix, ttl=1.5, wait=1)
    upload = "d" * 32
    first = here.acquire(upload)
    assert first.fence.previous == ""  # never held
    here.release(first)
    second = here.acquire(upload)
    assert second.fence.previous == first.token
    here.release(second)
    other = elsewhere.acquire(upload)
    assert other.fence.previous == second.token
    elsewhere.release(other)
    third = here.acquire(upload)
    assert third.fence.previous == other.token != second.token
    here.release(third)
    here.redis.flushall()  # Redis lost its data: nobody can vouch for anything
    fourth = here.acquire(upload)
    here.release(fourth)  # else the keeper refreshes it until the session's Redis is gone
    assert fourth.fence.previous == ""
