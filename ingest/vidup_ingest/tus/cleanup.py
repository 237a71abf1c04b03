"""The periodic sweep: delete expired unfinished uploads (never a finished one), retry
handovers that failed because the Kubernetes API was away, and collect what crashes left in the
store that no record names (``Storage.collect_orphans``, at most hourly per process).

Every worker process runs a sweeper thread, but a Redis key taken with SET NX EX for one interval
makes a single process across all replicas do the work each interval.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from vidup_ingest.errors import TusError
from vidup_ingest.tus.protocol import UploadInfo
from vidup_ingest.tus.uploads import Uploads

log = logging.getLogger(__name__)


#: How long an expired upload's tombstone answers 410 before it is forgotten (then 404).
TOMBSTONE_SECONDS = 7 * 24 * 3600

#: How often a process that wins a sweep also collects orphans: they count only once a day old
#: (ORPHAN_AGE), and collecting lists the whole store.
ORPHANS_EVERY = 3600.0


def should_delete(info: UploadInfo, now: float) -> bool:
    """Expired and unfinished: finished uploads belong to their VideoTranscode and stay."""
    return not info.gone and info.expired(now)


def should_forget(info: UploadInfo, now: float) -> bool:
    return info.gone and float(info.extra["gone"]) + TOMBSTONE_SECONDS < now


def sweep(uploads: Uploads, now: float | None = None, quota_grace: float = 60.0) -> tuple[int, int]:
    """One pass over all uploads; returns (deleted, handed over). It also reconciles the quotas
    with what it read (see gateway/quotas.py: entries younger than ``quota_grace`` are spared)."""
    now = time.time() if now is None else now
    deleted = handed = 0
    audit = uploads.quotas.audit(quota_grace)
    for upload_id in list(uploads.storage.ids()):
        try:
            info = uploads.storage.load(upload_id)
            if info is None:
                continue
            audit.saw(info)
            if should_delete(info, now):
                held = uploads.locks.acquire(upload_id, takeover=False)
                try:
                    info = uploads.storage.load(upload_id)
                    if info is not None and should_delete(info, now):
                        uploads.expire(info)
                        deleted += 1
                finally:
                    uploads.locks.release(held)
            elif should_forget(info, now):
                uploads.storage.delete(upload_id)
            elif info.complete and not info.is_partial and not info.handed_over:
                with uploads.locked(upload_id):
                    fresh = uploads.storage.load(upload_id)
                    if fresh is not None and uploads.retry_handover(fresh).handed_over:
                        handed += 1
        except (TusError, OSError, ValueError, redis.RedisError) as exc:
            log.warning("sweep skipped upload %s: %s", upload_id, exc)
    audit.finish(uploads.storage)
    return deleted, handed


class Sweeper:
    def __init__(self, uploads: Uploads, client: redis.Redis, interval: float,
                 key: str = "vidup:ingest:sweep") -> None:
        self.uploads = uploads
        self.redis = client
        self.interval = interval
        self.key = key
        self._thread: threading.Thread | None = None
        self._orphans_due = 0.0

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="upload-sweeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                if self.redis.set(self.key, "1", nx=True, px=max(1, int(self.interval * 1000))):
                    deleted, handed = sweep(self.uploads, quota_grace=max(2.0, 4 * self.interval))
                    if deleted or handed:
                        log.info("sweep: deleted %d expired uploads, handed over %d", deleted, handed)
                    now = time.time()
                    if now >= self._orphans_due:
                        self._orphans_due = now + ORPHANS_EVERY
                        self.uploads.storage.collect_orphans(now)
            except Exception:  # the sweeper must outlive any one bad pass
                log.exception("upload sweep failed")
            time.sleep(self.interval)
