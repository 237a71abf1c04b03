"""Per-tenant quotas, shared by every replica through Redis: unfinished uploads and stored bytes.

What counts, per tenant, is what the tenant holds on the upload storage (HLS outputs are not counted):

* **uploads**: unfinished uploads (partial ones included) until they finish, are terminated or
  expire. Over ``VIDUP_INGEST_QUOTA_UPLOADS`` a creation answers 429 (with Retry-After: a slot
  frees when the tenant finishes or terminates an upload, which the server cannot predict).
* **bytes**: an unfinished upload counts its declared Upload-Length from its creation on (what a
  client that was let in expects to be able to finish), a deferred-length one its offset (plus,
  while a PATCH runs, what that PATCH may still append); a finished source counts until it is
  terminated (tus DELETE). A final concatenation takes over its partials' bytes, so it never grows
  the total and is never refused. Growing past ``VIDUP_INGEST_QUOTA_BYTES`` answers 507, or 413
  when the one upload alone is larger than the quota (no retry can help then).

Refusals are plain text naming the limit ("quota exceeded: concurrent uploads (5 of 5)") with a
``Vidup-Quota: uploads|bytes`` header, and happen before anything is stored.

State: per tenant, a hash of entries ``<upload id> -> "<bytes>:<open>:<stamp>"`` (``-1`` bytes is a
release marker) and a hash of totals, changed together by one Lua script, so a check-and-charge is
atomic across replicas. Stamps are Redis TIME in ms. Storage stays the truth: bookkeeping after the
fact (completion, termination, expiry) never fails a request, and the expiry sweep reconciles every
upload it reads (see :class:`QuotaAudit`), so a crash between the storage and Redis, or a lost
Redis, costs at most a sweep interval, never quota forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import redis

from vidup_ingest.errors import TusError
from vidup_ingest.tus.protocol import PatchPlan, UploadInfo
from vidup_ingest.tus.storage import Storage

log = logging.getLogger(__name__)

QUOTA_HEADER = "Vidup-Quota"
#: A hint only: a slot frees when the tenant finishes, terminates or lets expire an upload.
RETRY_AFTER_SECONDS = 30

_LUA_HEAD = """
local function parse(v)
  if not v then return 0, 0, false end
  local b, o = string.match(v, '^(%-?%d+):(%d+):')
  b = tonumber(b)
  if b < 0 then return 0, 0, false end
  return b, tonumber(o), true
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""

# KEYS: totals, entries, tenants. ARGV: tenant, check (0 none, 1 bytes, 2 bytes and uploads), max
# uploads, max bytes, id, lo, hi, open (-1 releases), then ids to release (a concatenation's
# partials). Charges min(hi, room) >= lo.
# Returns {0, charged} or {1|2, used, limit} (uploads | bytes over the quota: nothing changed).
_APPLY = _LUA_HEAD + """
local used_b = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local used_u = tonumber(redis.call('HGET', KEYS[1], 'uploads') or '0')
local id, lo, hi, open = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local ob, oo = parse(redis.call('HGET', KEYS[2], id))
local charge = hi
if open >= 0 and ARGV[2] ~= '0' then
  local max_u, max_b = tonumber(ARGV[3]), tonumber(ARGV[4])
  if ARGV[2] == '2' and open == 1 and oo == 0 and max_u > 0 and used_u + 1 > max_u then
    return {1, used_u, max_u}
  end
  if max_b > 0 and hi > ob then
    local room = max_b - (used_b - ob)
    if lo > ob and lo > room then return {2, used_b, max_b} end
    charge = math.max(lo, math.min(hi, math.max(room, ob)))
  end
end
for i = 9, #ARGV do
  local pb, po, live = parse(redis.call('HGET', KEYS[2], ARGV[i]))
  used_b, used_u = used_b - pb, used_u - po
  if live then redis.call('HSET', KEYS[2], ARGV[i], '-1:0:' .. now) end
end
used_b, used_u = used_b - ob, used_u - oo
if open < 0 then
  redis.call('HSET', KEYS[2], id, '-1:0:' .. now)
else
  used_b, used_u = used_b + charge, used_u + open
  redis.call('HSET', KEYS[2], id, charge .. ':' .. open .. ':' .. now)
end
redis.call('HSET', KEYS[1], 'bytes', math.max(0, used_b), 'uploads', math.max(0, used_u))
redis.call('SADD', KEYS[3], ARGV[1])
return {0, charge}
"""

# The sweep's correction, KEYS: totals, entries, tenants. ARGV: scan start, id, bytes, open (-1: not
# stored), tenant.
# Entries written since the scan started are fresher than what the sweep read: left alone. An open
# entry never shrinks (a running PATCH of a deferred-length upload holds more than its offset).
_FIX = _LUA_HEAD + """
local v = redis.call('HGET', KEYS[2], ARGV[2])
if v and tonumber(string.match(v, ':(%d+)$')) >= tonumber(ARGV[1]) then return 0 end
local ob, oo, live = parse(v)
local b, o = tonumber(ARGV[3]), tonumber(ARGV[4])
if o < 0 then
  if not v then return 0 end
  redis.call('HDEL', KEYS[2], ARGV[2])
  b, o = 0, 0
else
  if live and o == 1 and oo == 1 then b = math.max(b, ob) end
  if live and b == ob and o == oo then return 0 end
  redis.call('HSET', KEYS[2], ARGV[2], b .. ':' .. o .. ':' .. now)
  redis.call('SADD', KEYS[3], ARGV[5])
end
redis.call('HINCRBY', KEYS[1], 'bytes', b - ob)
redis.call('HINCRBY', KEYS[1], 'uploads', o - oo)
return 1
"""

# Drop an entry the sweep found stale, if nobody changed it since. KEYS: totals, entries.
_PRUNE = _LUA_HEAD + """
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v ~= ARGV[2] then return 0 end
local ob, oo = parse(v)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'bytes', -ob)
redis.call('HINCRBY', KEYS[1], 'uploads', -oo)
return 1
"""

# Totals recomputed from the entries (belt and braces), or the tenant forgotten when it has none.
_RETOTAL = _LUA_HEAD + """
local b, u = 0, 0
local vals = redis.call('HVALS', KEYS[2])
for _, v in ipairs(vals) do
  local vb, vo = parse(v)
  b, u = b + vb, u + vo
end
if #vals == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'bytes', b, 'uploads', u)
end
return {b, u}
"""


def charge_of(info: UploadInfo | None) -> tuple[int, int]:
    """(bytes, open) an upload holds per the rules above; (0, -1) when it holds nothing."""
    if info is None or info.gone:
        return 0, -1
    size = info.length if info.length is not None else info.offset
    return size, 0 if info.complete else 1


def _refusal(kind: str, used: int, limit: int, needed: int = 0) -> TusError:
    headers = {QUOTA_HEADER: kind}
    if kind == "uploads":
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return TusError(429, f"quota exceeded: concurrent uploads ({used} of {limit})", headers)
    if needed > limit:
        return TusError(413, f"quota exceeded: stored bytes (this upload alone needs {needed}, "
                             f"the quota is {limit})", headers)
    return TusError(507, f"quota exceeded: stored bytes ({used} of {limit} in use)", headers)


class QuotaBook:
    """Check-and-charge, track and release uploads against their tenant's quotas.

    With both limits 0 it is off: no Redis calls at all (turning it on later is safe: the first
    sweep counts what is on storage).
    """

    def __init__(self, client: redis.Redis | None, max_uploads: int = 0, max_bytes: int = 0,
                 namespace: str = "vidup:ingest:quota") -> None:
        self.redis = client
        self.max_uploads = max(0, max_uploads)
        self.max_bytes = max(0, max_bytes)
        self.namespace = namespace
        self.enabled = client is not None and bool(self.max_uploads or self.max_bytes)
        if client is not None:
            self._apply = client.register_script(_APPLY)
            self._fix = client.register_script(_FIX)
            self._prune = client.register_script(_PRUNE)
            self._retotal = client.register_script(_RETOTAL)

    @property
    def tenants_key(self) -> str:
        """The set of tenants that have entries (what the sweep walks)."""
        return f"{self.namespace}:tenants"

    def keys(self, tenant: str) -> list[str]:
        """The tenant's totals hash, its entries hash, and :attr:`tenants_key`."""
        return [f"{self.namespace}:totals:{tenant}", f"{self.namespace}:uploads:{tenant}", self.tenants_key]

    def usage(self, tenant: str) -> tuple[int, int]:
        """(bytes, unfinished uploads) the tenant holds now."""
        assert self.redis is not None
        raw = self.redis.hmget(self.keys(tenant)[0], ["bytes", "uploads"])
        return int(raw[0] or 0), int(raw[1] or 0)

    def _call(self, info: UploadInfo, lo: int, hi: int, open_: int, check: int,
              consumed: tuple[str, ...] = ()) -> int:
        """Run the Lua script; ``check``: 0 none, 1 bytes, 2 bytes and (for a new upload) uploads."""
        if check and self.max_bytes and lo > self.max_bytes:
            raise _refusal("bytes", 0, self.max_bytes, lo)
        args: list[str | int] = [info.tenant, check, self.max_uploads, self.max_bytes,
                                 info.id, lo, hi, open_, *consumed]
        result: Any = self._apply(keys=self.keys(info.tenant), args=args)
        if int(result[0]) != 0:
            raise _refusal("uploads" if int(result[0]) == 1 else "bytes", int(result[1]), int(result[2]))
        return int(result[1])

    @contextlib.contextmanager
    def reserving(self, info: UploadInfo, body_length: int | None) -> Iterator[None]:
        """Around a creation's first write: charge the new upload (429/507/413, nothing stored),
        and take the charge back if the storage then fails."""
        if not self.enabled:
            yield
            return
        size, open_ = charge_of(info)
        if info.length is None and body_length is not None:
            size = body_length  # creation-with-upload of a deferred-length upload
        self._call(info, size, size, open_, check=2)
        try:
            yield
        except BaseException:
            self.release(info)
            raise

    @contextlib.contextmanager
    def patching(self, info: UploadInfo, plan: PatchPlan, content_length: int | None,
                 reload: Callable[[], UploadInfo | None]) -> Iterator[PatchPlan]:
        """Around a PATCH of a deferred-length upload (the only kind a PATCH can grow): charge what
        it may append before reading a byte (a chunked body gets at most the room left), answer
        507 instead of 413 when the body outgrows that room, then settle on what was stored."""
        if not self.enabled or info.length is not None:
            yield plan
            return
        if plan.length is not None:
            lo = hi = plan.length
        elif content_length is not None:
            lo = hi = info.offset + content_length
        else:  # chunked: may take the room left (with no byte quota, nothing to hold)
            lo, hi = info.offset, info.offset + (plan.max_bytes if self.max_bytes else 0)
        charged = self._call(info, lo, hi, 1, check=1)
        capped = plan.length is None and charged < hi
        outgrown = False
        try:
            yield dataclasses.replace(plan, max_bytes=min(plan.max_bytes, charged - info.offset)) \
                if self.max_bytes and plan.length is None else plan
        except TusError as exc:
            if exc.status != 413 or not capped:
                raise
            outgrown = True  # the body was discarded: say which limit, once the charge is settled
        finally:
            try:
                settled = reload()
            except (OSError, ValueError):
                settled = None  # the sweep settles it
            self.track(settled)
        if outgrown:
            raise _refusal("bytes", self.usage(info.tenant)[0], self.max_bytes)

    def track(self, info: UploadInfo | None, consumed: tuple[str, ...] = ()) -> None:
        """Record what ``info`` holds now (finished, settled), releasing ``consumed`` uploads.
        Never raises: the storage already changed, and the sweep repairs a missed update."""
        if not self.enabled or info is None:
            return
        size, open_ = charge_of(info)
        try:
            self._call(info, size, size, open_, check=0, consumed=consumed)
        except redis.RedisError as exc:
            log.warning("quota of upload %s not updated (the sweep will): %s", info.id, exc)

    def release(self, info: UploadInfo) -> None:
        """The upload's bytes left the storage (terminated, expired). Never raises, like track."""
        if not self.enabled:
            return
        try:
            self._call(info, 0, 0, -1, check=0)
        except redis.RedisError as exc:
            log.warning("quota of upload %s not released (the sweep will): %s", info.id, exc)

    def audit(self, grace: float) -> QuotaAudit:
        """A reconciliation for one sweep pass, started now (before the storage is read)."""
        return QuotaAudit(self, grace)


class QuotaAudit:
    """Reconcile Redis with the storage during an expiry sweep, without locks.

    The sweep reports every upload it read (:meth:`saw`); :meth:`finish` corrects the entries
    that disagree, unless they were written after the pass started (then their writer saw a
    newer storage state than the sweep did), and drops entries of uploads that are not on the
    storage once they are older than ``grace`` (a creation charges just before it stores, so
    a fresh entry may not be on the storage yet). Then every tenant's totals are recomputed.
    """

    def __init__(self, book: QuotaBook, grace: float) -> None:
        self.book = book
        self.grace_ms = int(grace * 1000)
        self.seen: dict[str, tuple[str, int, int]] = {}
        self.started_ms = 0
        if book.enabled and book.redis is not None:
            seconds, micros = book.redis.time()
            self.started_ms = int(seconds) * 1000 + int(micros) // 1000

    def saw(self, info: UploadInfo) -> None:
        if self.started_ms:
            self.seen[info.id] = (info.tenant, *charge_of(info))

    def finish(self, storage: Storage) -> None:
        if not self.started_ms:
            return
        book = self.book
        assert book.redis is not None
        try:
            seen = list(self.seen.items())
            for start in range(0, len(seen), 500):
                pipe = book.redis.pipeline(transaction=False)
                for upload_id, (tenant, size, open_) in seen[start:start + 500]:
                    book._fix(keys=book.keys(tenant), args=[self.started_ms, upload_id, size, open_, tenant],
                              client=pipe)
                pipe.execute()
            for raw in book.redis.smembers(book.tenants_key):
                self._finish_tenant(raw.decode() if isinstance(raw, bytes) else str(raw), storage)
        except redis.RedisError as exc:
            log.warning("quota reconciliation skipped: %s", exc)

    def _finish_tenant(self, tenant: str, storage: Storage) -> None:
        book = self.book
        keys = book.keys(tenant)
        assert book.redis is not None
        for raw_id, raw_value in book.redis.hscan_iter(keys[1]):
            upload_id, value = raw_id.decode(), raw_value.decode()
            stamp = int(value.rsplit(":", 1)[1])
            if upload_id in self.seen or stamp >= self.started_ms - self.grace_ms:
                continue
            if not value.startswith("-1:"):
                try:
                    if charge_of(storage.load(upload_id))[1] >= 0:
                        continue  # stored after all (created during the pass): next pass counts it
                except (OSError, ValueError):
                    continue
            book._prune(keys=keys[:2], args=[upload_id, value])
        book._retotal(keys=keys, args=[tenant])
