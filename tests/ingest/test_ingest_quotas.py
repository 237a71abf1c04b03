"""Per-tenant quotas (unfinished uploads, stored bytes) against real ingest replicas and Redis.

The usage read back from Redis is the product's own bookkeeping (``QuotaBook.usage``); every
refusal is also checked to leave the storage and that usage untouched.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests
from ingest_support import OCTET, Ingest, IngestFactory

from vidup.apikeys import new_api_key
from vidup_ingest.gateway.quotas import QuotaBook

TENANTS = ("uploads", "other", "race", "bytes", "deferred", "concat")


QUOTA_KEYS = "vidup:ingest:quota:"


def book(ing: Ingest, alias: str) -> QuotaBook | None:
    """The ingest's quota bookkeeping holding a tenant, as the app named it (its namespace belongs
    to the store: a volume or a bucket and prefix), found by the tenant's totals in Redis; tenant
    names are unique per fixture. None while Redis holds nothing for the tenant."""
    client = redis.Redis.from_url(ing.env["VIDUP_REDIS_URL"])
    suffix = f":totals:{ing.tenant(alias)}"
    found = {k.decode()[: -len(suffix)] for k in client.scan_iter(match=f"{QUOTA_KEYS}*{suffix}", count=1000)}
    assert len(found) <= 1, found
    return QuotaBook(client, namespace=found.pop()) if found else None


def usage(ing: Ingest, alias: str) -> tuple[int, int]:
    """(stored bytes, unfinished uploads) of a tenant."""
    quotas = book(ing, alias)
    return (0, 0) if quotas is None else quotas.usage(ing.tenant(alias))


def listing(ing: Ingest) -> list[str]:
    return sorted(ing.upload_keys())


def post(ing: Ingest, alias: str, length: int | None, body: bytes | None = None, **extra: str) -> requests.Response:
    h = ing.headers(alias, **extra)
    if length is not None:
        h["Upload-Length"] = str(length)
    if body is not None:
        h["Content-Type"] = OCTET
    return requests.post(f"{ing.url}/files/", headers=h, data=body, timeout=30)


def delete(ing: Ingest, url: str, alias: str) -> None:
    assert requests.delete(url, headers=ing.headers(alias), timeout=30).status_code == 204


def refused(ing: Ingest, alias: str, send: Callable[[], requests.Response], status: int, quota: str,
            text: str | None = None) -> requests.Response:
    """``send()`` is refused naming the quota, and neither the storage nor the usage changed."""
    files, used = listing(ing), usage(ing, alias)
    r = send()
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Vidup-Quota"] == quota and r.text.startswith("quota exceeded: ")
    if text is not None:
        assert r.text == text + "\n"
    assert listing(ing) == files and usage(ing, alias) == used
    return r


def eventually(check: Callable[[], Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pair(start_ingest: IngestFactory) -> Iterator[tuple[Ingest, Ingest]]:
    """Two replicas on one storage: 3 unfinished uploads and 1000 bytes per tenant."""
    keys = {alias: new_api_key() for alias in TENANTS}
    keys["_prefix"] = f"q{uuid.uuid4().hex[:8]}-"
    env = {"VIDUP_INGEST_QUOTA_UPLOADS": "3", "VIDUP_INGEST_QUOTA_BYTES": "1000",
           "VIDUP_INGEST_CLEANUP_INTERVAL": "0.5"}  # the reconciling sweep runs all along
    a = start_ingest(keys=keys, **env)
    yield a, start_ingest(storage=a.storage, keys=keys, **env)


def test_concurrent_uploads_quota_is_shared_by_replicas(pair: tuple[Ingest, Ingest]) -> None:
    a, b = pair
    first, second, _third = a.create(10, "uploads"), b.create(10, "uploads"), a.create(10, "uploads")
    assert usage(a, "uploads") == (30, 3)
    for ing in pair:
        r = refused(ing, "uploads", lambda ing=ing: post(ing, "uploads", 10), 429, "uploads",
                    "quota exceeded: concurrent uploads (3 of 3)")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert b.create(10, "other") and usage(a, "other") == (10, 1)  # another tenant is not affected

    assert b.patch(first, 0, b"x" * 10, "uploads").status_code == 204  # finishing frees a slot
    a.create(10, "uploads")
    refused(b, "uploads", lambda: post(b, "uploads", 10), 429, "uploads")
    delete(a, second, "uploads")  # so does terminating
    assert usage(a, "uploads") == (30, 2)  # the finished source still holds its 10 bytes
    b.create(10, "uploads")
    refused(a, "uploads", lambda: post(a, "uploads", 10), 429, "uploads")


def test_racing_creations_on_two_replicas_get_exactly_the_quota(pair: tuple[Ingest, Ingest]) -> None:
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: post(pair[i % 2], "race", 10).status_code, range(12)))
    assert Counter(answers) == {201: 3, 429: 9}
    assert usage(pair[0], "race") == (30, 3)


def test_stored_bytes_quota(pair: tuple[Ingest, Ingest]) -> None:
    a, b = pair
    big = a.create(600, "bytes")  # an unfinished upload holds its declared length
    refused(b, "bytes", lambda: post(b, "bytes", 500), 507, "bytes",
            "quota exceeded: stored bytes (600 of 1000 in use)")
    refused(a, "bytes", lambda: post(a, "bytes", 500, b"x" * 500), 507, "bytes")  # creation-with-upload
    refused(a, "bytes", lambda: post(a, "bytes", 1001), 413, "bytes",
            "quota exceeded: stored bytes (this upload alone needs 1001, the quota is 1000)")

    assert b.patch(big, 0, b"x" * 600, "bytes").status_code == 204
    assert usage(a, "bytes") == (600, 0)  # a finished source keeps counting
    refused(b, "bytes", lambda: post(b, "bytes", 500), 507, "bytes")
    b.create(400, "bytes")  # exactly up to the quota
    refused(a, "bytes", lambda: post(a, "bytes", 1), 507, "bytes", "quota exceeded: stored bytes (1000 of 1000 in use)")
    delete(a, big, "bytes")  # until it is terminated
    assert usage(b, "bytes") == (400, 1)
    a.create(600, "bytes")


def test_a_deferred_length_upload_cannot_patch_past_the_quota(pair: tuple[Ingest, Ingest]) -> None:
    a, b = pair
    url, _other = a.create(None, "deferred", Upload_Defer_Length="1"), b.create(100, "deferred")
    assert a.patch(url, 0, b"x" * 800, "deferred").status_code == 204
    assert usage(a, "deferred") == (900, 2)
    refused(b, "deferred", lambda: b.patch(url, 800, b"x" * 150, "deferred"), 507, "bytes",
            "quota exceeded: stored bytes (900 of 1000 in use)")
    refused(a, "deferred", lambda: a.patch(url, 800, iter([b"x" * 100] * 2), "deferred"), 507, "bytes",
            "quota exceeded: stored bytes (900 of 1000 in use)")  # chunked: no Content-Length
    # Past the quota by itself: no retry can help.
    refused(b, "deferred", lambda: b.patch(url, 800, b"x" * 300, "deferred"), 413, "bytes")
    refused(b, "deferred", lambda: b.patch(url, 800, b"", "deferred", Upload_Length="1001"), 413, "bytes")
    assert a.head(url, "deferred").headers["Upload-Offset"] == "800"
    assert b.patch(url, 800, b"x" * 100, "deferred", Upload_Length="900").status_code == 204
    assert usage(a, "deferred") == (1000, 1)
    refused(a, "deferred", lambda: post(a, "deferred", None, b"x", Upload_Defer_Length="1"), 507, "bytes")


def test_concatenation_takes_over_its_partials_bytes(pair: tuple[Ingest, Ingest]) -> None:
    a, b = pair
    parts = [a.create(500, "concat", Upload_Concat="partial"), b.create(500, "concat", Upload_Concat="partial")]
    assert usage(a, "concat") == (1000, 2)
    for part, ing in zip(parts, pair, strict=True):
        assert ing.patch(part, 0, b"x" * 500, "concat").status_code == 204
    # At the quota, the final is still made: it holds the same bytes as its partials did.
    r = post(b, "concat", None, Upload_Concat="final;" + " ".join(parts))
    assert r.status_code == 201, r.text
    assert usage(a, "concat") == (1000, 0)
    refused(a, "concat", lambda: post(a, "concat", 1), 507, "bytes")
    delete(a, r.headers["Location"], "concat")
    assert usage(a, "concat") == (0, 0)


def test_expiry_frees_quota(start_ingest: IngestFactory) -> None:
    ing = start_ingest(VIDUP_INGEST_QUOTA_UPLOADS="1", VIDUP_INGEST_QUOTA_BYTES="100",
                       VIDUP_UPLOAD_EXPIRY_SECONDS="2", VIDUP_INGEST_CLEANUP_INTERVAL="0.5")
    url = ing.create(100)
    refused(ing, "acme", lambda: post(ing, "acme", 1), 429, "uploads")
    eventually(lambda: usage(ing, "acme") == (0, 0))
    assert ing.head(url).status_code == 410
    ing.create(100)


def test_a_crash_between_storage_and_redis_is_reconciled(start_ingest: IngestFactory) -> None:
    ing = start_ingest(VIDUP_INGEST_QUOTA_UPLOADS="1", VIDUP_INGEST_CLEANUP_INTERVAL="0.5")
    url = ing.create(None, Upload_Defer_Length="1")
    assert ing.patch(url, 0, iter([b"x" * 5] * 2)).status_code == 204  # no byte quota: chunked is free
    assert usage(ing, "acme") == (10, 1)
    # The storage lost the upload but Redis never heard (a crash after the delete): the sweep
    # drops the entry once it is older than its grace.
    assert ing.keys_of(url)
    ing.forget(url)
    eventually(lambda: usage(ing, "acme") == (0, 0))
    ing.create(20)
    # Redis lost the bookkeeping (flushed, a new Redis): the sweep counts what is stored again.
    quotas = book(ing, "acme")
    assert quotas is not None and quotas.redis is not None
    quotas.redis.delete(*quotas.keys(ing.tenant("acme")))
    eventually(lambda: usage(ing, "acme") == (20, 1))
    refused(ing, "acme", lambda: post(ing, "acme", 1), 429, "uploads")
