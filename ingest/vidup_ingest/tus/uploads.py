"""Upload operations (create, head, patch, terminate, concatenate) over storage, locks and the
handover. Framework-free: routes parse the request into arguments and turn the results into
responses, so these read like the protocol."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vidup_ingest import metrics
from vidup_ingest.config import IngestConfig
from vidup_ingest.errors import TusError
from vidup_ingest.gateway.quotas import QuotaBook
from vidup_ingest.tus.bodyreader import open_body
from vidup_ingest.tus.handover import Handover
from vidup_ingest.tus.headers import Checksum, Concat, upload_id_from_url
from vidup_ingest.tus.locks import HeldLock, LockManager
from vidup_ingest.tus.metadata import parse_metadata, video_options
from vidup_ingest.tus.protocol import PatchPlan, UploadInfo, check_creation_length, concat_final_id, plan_patch
from vidup_ingest.tus.storage import AlreadyWhole, Fence, Storage
from vidup_ingest.tus.transfer import receive

log = logging.getLogger(__name__)

_OWNER_CACHE_SIZE = 10_000


@dataclass
class Body:
    """A request body to append: the stream, its declared length and a hook that interrupts a
    blocked read (shuts the socket's read side) when another request takes the upload over."""

    stream: Any
    content_length: int | None
    checksum: Checksum | None
    interrupt: Callable[[], None] | None = None


@dataclass
class PatchOutcome:
    info: UploadInfo
    #: why the body ended early, if it did ("stopped" = taken over, "disconnected", "whole" = the
    #: store already held every byte: a completion a crash cut short, finished now)
    ending: str = "eof"


class Uploads:
    def __init__(self, storage: Storage, locks: LockManager, handover: Handover, config: IngestConfig,
                 max_size: int, expiry_seconds: int, quotas: QuotaBook | None = None) -> None:
        self.storage = storage
        self.locks = locks
        self.handover = handover
        self.config = config
        self.max_size = max_size
        self.expiry = expiry_seconds
        self.quotas = quotas or QuotaBook(None)
        #: upload id -> tenant (immutable once created), so the check before a lock costs no read
        self._owners: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, upload_id: str, on_stop: Callable[[], None] | None = None) -> Iterator[HeldLock]:
        held = self.locks.acquire(upload_id, on_stop)
        try:
            yield held
        finally:
            self.locks.release(held)

    def get(self, upload_id: str, tenant: str, fence: Fence | None = None) -> UploadInfo:
        """The upload if it exists and belongs to ``tenant`` (404 / 403 / 410 otherwise); under
        its lock, pass the lock's ``fence`` so the store may skip re-reading what it knows."""
        info = self.storage.load(upload_id, fence)
        if info is None:
            raise TusError(404, "no such upload")
        if info.tenant != tenant:
            raise TusError(403, "this upload belongs to another tenant")
        if info.gone or info.expired(time.time()):
            if not info.gone:
                self.expire(info)
            raise TusError(410, "upload expired")
        return info

    def check_owner(self, upload_id: str, tenant: str) -> None:
        """404/403 before taking the lock, so a stranger can never make an upload's holder
        stop. The full checks are repeated under the lock; this one reads only the info, once per
        upload and process (owners never change)."""
        owner = self._owners.get(upload_id)
        if owner is None:
            info = self.storage.peek(upload_id)  # the info alone: the offset is read under the lock
            if info is None:
                raise TusError(404, "no such upload")
            owner = self._remember_owner(info)
        if owner != tenant:
            raise TusError(403, "this upload belongs to another tenant")

    def _remember_owner(self, info: UploadInfo) -> str:
        if len(self._owners) >= _OWNER_CACHE_SIZE:
            self._owners.clear()
        self._owners[info.id] = info.tenant
        return info.tenant

    def expire(self, info: UploadInfo) -> None:
        """Delete an expired upload's data but keep a tombstone, so clients hear 410, not 404."""
        self.storage.discard_data(info.id)
        self.storage.save(info.with_(extra={**info.extra, "gone": time.time()}))
        self.quotas.release(info)
        metrics.UPLOADS_EXPIRED.inc()

    def _complete(self, info: UploadInfo, consumed: tuple[str, ...] = (), fence: Fence | None = None) -> UploadInfo:
        """Record completion and hand a non-partial upload to Kubernetes (``consumed``: the
        partial uploads a final concatenation takes the bytes of, for the quotas; ``fence``: the
        upload's lock, when held)."""
        if info.completed_at is None:
            self.storage.persist_data(info.id, fence)  # on the disk before anything counts it as finished
            metrics.UPLOADS_FINISHED.inc()
        info = info.with_(completed_at=info.completed_at or time.time())
        changed = True  # the info differs from the one the store holds
        if not info.is_partial and not info.handed_over:
            self.storage.save(info)  # completed before the handover, so a crash here is retried
            # A failed handover (the API down, or no cluster) leaves the info as just saved.
            changed = self.handover.create(info, self.storage.relpath(info.id))
            if changed:
                info = info.with_(handed_over=True)
        if changed:
            self.storage.save(info)
        self.quotas.track(info, consumed)
        return info

    def retry_handover(self, info: UploadInfo, fence: Fence | None = None) -> UploadInfo:
        if info.complete and not info.is_partial and not info.handed_over:
            return self._complete(info, fence=fence)
        return info

    # -- creation ------------------------------------------------------------------------------

    def create(self, tenant: str, *, length: int | None, defer: bool, metadata_raw: str | None,
               concat: Concat | None, body: Body | None, upload_url: Callable[[str], str],
               ) -> tuple[UploadInfo, PatchOutcome | None, bool]:
        """POST: a new upload (maybe with its first bytes), or a final concatenation.

        Returns (info, outcome of the creation-with-upload body, created-now).
        """
        meta = parse_metadata(metadata_raw)
        options = video_options(meta)
        is_final = concat is not None and concat.final
        check_creation_length(length, defer, is_final, self.max_size)
        now = time.time()
        if concat is not None and concat.final:
            if body is not None:
                raise TusError(400, "a final concatenation has no body")
            info, created = self._create_final(tenant, concat, metadata_raw or "", options, upload_url, now)
            return info, None, created
        info = UploadInfo(
            id=uuid.uuid4().hex, tenant=tenant, length=length, offset=0, metadata=metadata_raw or "",
            filename=options.filename, renditions=options.renditions, created_at=now,
            expires_at=now + self.expiry, concat="partial" if concat is not None else "",
        )
        if body is not None and body.content_length is not None and length is not None \
                and body.content_length > length:
            raise TusError(413, "the body is longer than Upload-Length")
        if body is not None and body.content_length is not None and body.content_length > self.max_size:
            raise TusError(413, "the body exceeds Tus-Max-Size")
        # Created under its lock, so the store may keep what it wrote for this process's PATCH.
        with self.locked(info.id) as held:
            with self.quotas.reserving(info, body.content_length if body is not None else None):
                self.storage.create(info, held.fence)
            self._remember_owner(info)
            metrics.UPLOADS_CREATED.inc()
            if body is None and info.complete:  # zero-length upload: complete at creation
                info = self._complete(info, fence=held.fence)
        if body is None:
            return info, None, True
        try:
            outcome = self.patch(info.id, tenant, offset=0, new_length=None, body=body)
        except TusError as exc:
            # The upload exists even though its first chunk was refused: tell the client where.
            exc.headers.setdefault("Location", upload_url(info.id))
            exc.headers.setdefault("Upload-Offset", "0")
            raise
        return outcome.info, outcome, True

    def _create_final(self, tenant: str, concat: Concat, metadata_raw: str, options: Any,
                      upload_url: Callable[[str], str], now: float) -> tuple[UploadInfo, bool]:
        ids = [upload_id_from_url(u, "/files/") for u in concat.urls]
        if len(set(ids)) != len(ids):
            raise TusError(400, "Upload-Concat lists a partial upload twice")
        final_id = concat_final_id(tenant, ids)
        existing = self.storage.load(final_id)
        if existing is not None:
            return self.retry_handover(existing), False  # a retried creation: same upload, no duplicate
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.locked(final_id))
            existing = self.storage.load(final_id)
            if existing is not None:
                return self.retry_handover(existing), False
            parts: list[UploadInfo] = []
            for pid in ids:
                part = self.get(pid, tenant)
                if not part.is_partial:
                    raise TusError(400, f"upload {pid} is not a partial upload")
                parts.append(part)
            for pid in sorted(set(ids)):
                stack.enter_context(self.locked(pid))
            parts = [self.get(pid, tenant) for pid in ids]  # re-read under the locks
            for part in parts:
                if not part.complete:
                    raise TusError(400, f"partial upload {part.id} is not finished")
            total = sum(p.offset for p in parts)
            if total > self.max_size:
                raise TusError(413, f"the concatenation exceeds Tus-Max-Size {self.max_size}")
            final = UploadInfo(
                id=final_id, tenant=tenant, length=total, offset=total, metadata=metadata_raw,
                filename=options.filename, renditions=options.renditions, created_at=now,
                expires_at=now + self.expiry, concat="final",
                partial_urls=tuple(upload_url(pid) for pid in ids),
            )
            self.storage.concatenate(final, parts)
            metrics.UPLOADS_CREATED.inc()
            final = self._complete(final, consumed=tuple(ids))
            for pid in ids:  # consumed: the final holds the bytes now
                self.storage.delete(pid)
            return final, True

    # -- head / patch / delete -----------------------------------------------------------------

    def head(self, upload_id: str, tenant: str) -> UploadInfo:
        self.check_owner(upload_id, tenant)
        with self.locked(upload_id) as held:  # a resuming client's HEAD stops a stale PATCH first
            info = self.get(upload_id, tenant, held.fence)
            return self.retry_handover(info, held.fence)

    def patch(self, upload_id: str, tenant: str, *, offset: int, new_length: int | None,
              body: Body) -> PatchOutcome:
        self.check_owner(upload_id, tenant)
        stop = threading.Event()

        def on_stop() -> None:
            stop.set()
            if body.interrupt is not None:
                body.interrupt()

        with self.locked(upload_id, on_stop) as held:
            info = self.get(upload_id, tenant, held.fence)
            plan = plan_patch(info, offset=offset, new_length=new_length,
                              content_length=body.content_length, max_size=self.max_size, now=time.time())
            with self.quotas.patching(info, plan, body.content_length,
                                      lambda: self.storage.load(upload_id)) as plan:
                return self._append(info, plan, body, held, stop)

    def _append(self, info: UploadInfo, plan: PatchPlan, body: Body, held: HeldLock,
                stop: threading.Event) -> PatchOutcome:
        original = info
        writer = self.storage.open_writer(info, held.fence)
        current = [info.with_(length=plan.length)]
        if plan.length != info.length:  # a deferred length declared now: the info holds lengths
            self.storage.save(current[0])

        def checkpoint(received: int) -> None:
            if not self.locks.still_held(held):
                raise _LockLost()
            writer.checkpoint(plan.start + received, time.time() + self.expiry)

        def commit(received: int) -> None:
            if not self.locks.still_held(held):
                raise _LockLost()
            current[0] = current[0].with_(offset=plan.start + received, expires_at=time.time() + self.expiry)
            writer.commit(current[0].offset, current[0].expires_at)

        reader = open_body(body.stream, self.config)
        metrics.UPLOADS_IN_PROGRESS.inc()
        ending = "eof"
        try:
            result = receive(reader, writer, max_bytes=plan.max_bytes, read_size=self.config.read_size,
                             commit_bytes=self.config.commit_bytes, checksum=body.checksum, stop=stop,
                             checkpoint=checkpoint)
            ending = result.ending
            if result.ending == "overflow":
                self._roll_back(original, writer)
                raise TusError(413, "the body goes past the upload's length")
            if result.checksum_ok is False:
                self._roll_back(original, writer)
                if result.ending == "eof":
                    raise TusError(460, "checksum mismatch; the chunk was discarded")
                return PatchOutcome(original, result.ending)
            commit(result.received)
            metrics.RECEIVED_BYTES.inc(result.received)
        except _LockLost:
            return PatchOutcome(original, "stopped")
        except AlreadyWhole:
            # A completion a crash cut short: the bytes are all stored, the rest of the body is
            # not needed, and the upload is finished below (the connection then closes).
            current[0] = current[0].with_(offset=current[0].length or 0)
            ending = "whole"
        finally:
            metrics.UPLOADS_IN_PROGRESS.dec()
            reader.close()
            writer.close()
        info = current[0]
        if info.complete:
            info = self._complete(info, fence=held.fence)
        return PatchOutcome(info, ending)

    def _roll_back(self, original: UploadInfo, writer: Any) -> None:
        """Forget a body that must not count: restore the info and cut the data back."""
        writer.close()
        self.storage.save(original)
        self.storage.truncate(original)

    def terminate(self, upload_id: str, tenant: str) -> None:
        self.check_owner(upload_id, tenant)
        with self.locked(upload_id):
            info = self.get(upload_id, tenant)
            if info.complete and not info.is_partial:
                if not self.config.terminate_finished:
                    raise TusError(403, "finished uploads are immutable here (VIDUP_INGEST_TERMINATE_FINISHED=0)")
                # The resource goes first: if the API is away the upload stays, whole, for a retry.
                if not self.handover.delete(upload_id):
                    raise TusError(503, "could not delete the upload's video; retry shortly", {"Retry-After": "5"})
            self.storage.delete(upload_id)
            self.quotas.release(info)
            metrics.UPLOADS_TERMINATED.inc()


class _LockLost(Exception):
    """Another request owns the upload now: this one must not commit anything."""
