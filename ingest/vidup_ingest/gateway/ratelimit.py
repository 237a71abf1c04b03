"""Per-tenant rate limits shared by all replicas, using the ``limits`` library on Redis.

Two budgets per tenant: every request, and upload creations (the expensive part). Exceeding one
answers 429 with Retry-After, the seconds until the window lets the next request in.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from vidup_ingest import metrics
from vidup_ingest.errors import TusError


class RateLimits:
    def __init__(self, redis_url: str, requests: str, creations: str, namespace: str = "vidup-ingest") -> None:
        self.storage = storage_from_string(redis_url, key_prefix=namespace)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.requests: RateLimitItem | None = parse(requests) if requests.strip() else None
        self.creations: RateLimitItem | None = parse(creations) if creations.strip() else None

    def _hit(self, item: RateLimitItem | None, scope: str, tenant: str) -> None:
        if item is None:
            return
        if self.limiter.hit(item, scope, tenant):
            return
        stats = self.limiter.get_window_stats(item, scope, tenant)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        metrics.RATE_LIMITED.labels(scope).inc()
        raise TusError(429, f"rate limit {item} for {scope} exceeded", {"Retry-After": str(retry_after)})

    def check_request(self, tenant: str) -> None:
        self._hit(self.requests, "requests", tenant)

    def check_creation(self, tenant: str) -> None:
        self._hit(self.creations, "creations", tenant)
