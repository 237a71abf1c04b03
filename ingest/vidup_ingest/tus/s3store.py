"""The TUS upload store on an S3-compatible bucket: :class:`S3Storage` and :class:`S3Writer`.

The same two interfaces as :class:`~vidup_ingest.tus.storage.LocalStorage` (tusd's handler/store
split), so protocol code never knows the backend. Keys, all under ``VIDUP_S3_PREFIX``:

* ``uploads/<id>``: the finished upload as one object, made at completion; the worker reads it.
* ``uploads/<id>.info``: the :class:`UploadInfo` JSON (creation, completion, expiry). An upload
  exists once its info does; :meth:`S3Storage.ids` lists these. From creation it names the
  multipart upload its creation started (``extra[MPU_EXTRA]``, as tusd's info names its own).
* ``uploads/<id>.state``: the commit record of an unfinished upload (:class:`_State`): committed
  offset and expiry, the multipart upload, the parts it holds (number, ETag, size) and the
  *pending* objects that hold the committed bytes after the last part. Written by the first
  commit (until then the info says it all: offset 0, its multipart upload); retired at completion.
* ``uploads/<id>.pending.<random>``: committed bytes not yet in a part (S3 refuses parts under
  5 MiB except the last, and a part can neither be appended to nor read back).

**A commit is a state PUT.** Bytes stream into an in-memory buffer that goes up as the next part
of the upload's multipart upload whenever it reaches the part size. ``commit`` makes everything
received durable *in the store* before the offset counts: at least 5 MiB pending goes up as a part,
less as a new pending object holding only the bytes since the last commit (one PUT per commit
whatever the chunk size: tusd re-uploads its whole ``.part`` object on every PATCH); then the state
is written (the commit point), then objects it no longer names are deleted. An ingest SIGKILLed at
any moment loses nothing it acknowledged. The commit of an upload's last byte, once every byte is in
a part, writes no state: the protocol completes the upload at once under the same hold, and its
``CompleteMultipartUpload`` is the record (a state would be deleted a moment later). A crash before
it loses only bytes the client never heard counted; a crash after it, before the finished info, is
found by the resuming writer, whose first part meets the completed multipart upload
(:class:`~vidup_ingest.tus.storage.AlreadyWhole`). The parts a session uploads are only *recorded* by a
commit: a part nobody committed (a crash, a failed checksum, a lost lock) is never listed in
``CompleteMultipartUpload`` and its part number is simply uploaded again by the next session.
In mid-body a *checkpoint* (every ``VIDUP_INGEST_COMMIT_BYTES``) is a commit that waits for no
part in flight: with some, it records only the parts already stored, so a fast body's pipeline to
the store never drains before its end.
ETags come from our own record, never from ``ListParts``: stores (SeaweedFS) list every version of
a re-uploaded part number.

**What a PATCH reads.** Loading an unfinished upload costs two GETs (info and state). A process
remembers both for the uploads it last held (:class:`_Known`), under the token of that hold, and
trusts them only when the next hold's :class:`~vidup_ingest.tus.storage.Fence` shows that nobody
took the lock in between (every change to an upload is made under its lock); any write it did not
finish, any other change and any doubt forget them. A client sending PATCH after PATCH to one
replica then costs a part and a state PUT per PATCH, as its bytes need, and nothing else. An upload
is created under its lock too, so a PATCH right after its POST on the same process reads nothing,
and completion reuses the state the last commit wrote. The owner check before the lock reads the
info alone (``peek``), once per upload and process.

Pending objects are read back only when they become a part, never on resume, so each byte is
uploaded once and downloaded at most once. Their count per upload is capped (they are merged into
one when it is reached), which bounds the state's size against a client sending tiny PATCHes.

**Rolling back.** A PATCH that must not count (checksum mismatch, a body past the length) is rolled
back by ``save(original)`` + ``truncate(original)``. A checksummed body never commits before it
is verified, so its bytes were never recorded. A body that overflows may have committed on the
way; the state keeps the session's *base* (offset, part count and pending objects at
``open_writer``), whose pending objects survive until the next session, so ``truncate`` restores
it exactly.

**Completion.** The commit that receives an upload's last byte sends its tail as the last part
(S3 allows it to be small), so ``persist_data`` usually only turns the multipart upload into
``uploads/<id>`` with the recorded ETags (pending bytes, if any, become the last part, copied
server-side when they are one object); an upload that never reached one part
(under 5 MiB) is one PUT instead, with no multipart upload at all. It is idempotent: after a crash
between it and the info's save, the multipart upload is gone and the object is found with the
committed size (asked only then). Saving the completed info retires the state and the pending
objects it names in one request, once per process (the save after the handover deletes nothing).

**Durability.** Every acknowledged offset is already in the store, so the fsync policy
(``VIDUP_INGEST_FSYNC``) has no meaning here: it is the store's own durability that counts.

**Memory** per writing upload is one part (``VIDUP_INGEST_S3_PART_SIZE``, 8 MiB by default), grown
only as bytes arrive, plus the parts it has uploading: up to ``PARTS_IN_FLIGHT`` (2) while the next
fills, within a budget of ``IN_FLIGHT_BUDGET`` (8) parts per process, so many concurrent uploads
cost about one part each. Concatenation streams through one part. Nothing holds a whole upload.
Part buffers come from a pool of memory maps (:mod:`~vidup_ingest.tus.partmemory`) that keeps
what a burst of uploads had in use for 30 s after its last use, then gives it back.

Multipart uploads and pending objects a crash left before a state named them (seconds' windows)
are collected by the sweep once a day old (:meth:`S3Storage.collect_orphans`).
S3 errors leave here as :class:`OSError` (``EIO``), which the app answers with 503 + Retry-After.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from vidup.storage.layout import UPLOADS, upload_relpath
from vidup.storage.s3 import S3Blobs, error_code, not_found
from vidup_ingest.tus.headers import is_upload_id
from vidup_ingest.tus.partmemory import Body, PartBuffer
from vidup_ingest.tus.protocol import UploadInfo
from vidup_ingest.tus.storage import ORPHAN_AGE, AlreadyWhole, Fence

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

#: S3's smallest part (except the last): stores enforce it at CompleteMultipartUpload.
MIN_PART_SIZE = 5 << 20
#: S3's largest part, and the largest range one UploadPartCopy may copy.
MAX_PART_SIZE = 5 << 30
#: Part numbers run 1..10000.
MAX_PARTS = 10_000
#: Parts uploading while the next one fills: the network and the store work at once, as tusd's
#: concurrent part uploads do. Memory per writing upload is then up to PARTS_IN_FLIGHT + 1 parts.
PARTS_IN_FLIGHT = 2
#: Parts in flight per process, whatever the number of uploads: the memory pipelining may add is
#: bounded (8 parts, 64 MiB at the default size); past it a part goes up in place, as a lone
#: upload's would without pipelining, so many concurrent uploads cost one part each.
IN_FLIGHT_BUDGET = 8
_IN_FLIGHT_SLOTS = threading.BoundedSemaphore(IN_FLIGHT_BUDGET)
#: Shared by every upload of a process (threads start on first use, so after gunicorn's fork).
_PART_UPLOADS = ThreadPoolExecutor(max_workers=IN_FLIGHT_BUDGET, thread_name_prefix="s3-part")
DEFAULT_PART_SIZE = 8 << 20
#: Pending objects one upload may hold before they are merged into one.
MAX_PENDING = 32
#: Bytes per read when streaming an object back (pending objects, concatenation).
READ_CHUNK = 1 << 20
#: The info's record of the multipart upload an upload's creation started ("" for none). Its
#: presence says the upload was created here, so a missing state is the first one (nothing
#: committed yet), not a finished upload's or a concatenation's (their bytes are one object).
MPU_EXTRA = "s3_multipart_upload"

INFO_SUFFIX = ".info"
STATE_SUFFIX = ".state"
PENDING_INFIX = ".pending."

P = ParamSpec("P")
R = TypeVar("R")


def _s3_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """S3 failures as ``OSError`` (EIO): the app answers storage errors with 503 + Retry-After and
    the sweeper skips an upload on one, exactly as for the shared volume."""

    name = getattr(fn, "__name__", "request")

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _as_os_error(name):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _as_os_error(what: str) -> Iterator[None]:
    """S3 failures inside the block as ``OSError`` (EIO) naming ``what`` (see ``_s3_errors``)."""
    try:
        yield
    except ClientError as exc:
        raise OSError(errno.EIO, f"S3 {what}: {error_code(exc) or exc}") from exc
    except BotoCoreError as exc:
        raise OSError(errno.EIO, f"S3 {what}: {exc}") from exc


@dataclass(frozen=True)
class _Part:
    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class _Pending:
    key: str
    size: int


@dataclass(frozen=True)
class _Base:
    """Where a writer session started: what ``truncate`` restores after an overflowing PATCH."""

    offset: int
    parts: int
    pending: tuple[_Pending, ...]


@dataclass(frozen=True)
class _State:
    """The commit record of an unfinished upload (``uploads/<id>.state``).

    The committed bytes are, in order, the ``parts`` of the multipart upload ``mpu``, then the
    ``pending`` objects; ``offset`` is their total. ``stored``: whether the store holds a state
    object of the upload (this one or an older one), which its retirement must then delete.
    ``made``: the object was found whole (:class:`AlreadyWhole`); only its retirement is left.
    Neither flag is part of the record.
    """

    offset: int
    expires_at: float
    mpu: str | None = None
    parts: tuple[_Part, ...] = ()
    pending: tuple[_Pending, ...] = ()
    base: _Base | None = None
    stored: bool = field(default=False, compare=False)
    made: bool = field(default=False, compare=False)

    def needed_keys(self) -> set[str]:
        """Every pending object this state needs kept."""
        keys = {p.key for p in self.pending}
        if self.base is not None:
            keys.update(p.key for p in self.base.pending)
        return keys

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "offset": self.offset, "expires_at": self.expires_at, "mpu": self.mpu,
            "parts": [[p.number, p.etag, p.size] for p in self.parts],
            "pending": [[p.key, p.size] for p in self.pending],
        }
        if self.base is not None:
            doc["base"] = {"offset": self.base.offset, "parts": self.base.parts,
                           "pending": [[p.key, p.size] for p in self.base.pending]}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> _State:
        base = doc.get("base")
        return cls(
            offset=int(doc["offset"]), expires_at=float(doc["expires_at"]), mpu=doc.get("mpu") or None,
            parts=tuple(_Part(int(n), str(e), int(s)) for n, e, s in doc.get("parts", ())),
            pending=tuple(_Pending(str(k), int(s)) for k, s in doc.get("pending", ())),
            base=None if base is None else _Base(
                int(base["offset"]), int(base["parts"]),
                tuple(_Pending(str(k), int(s)) for k, s in base.get("pending", ()))),
            stored=True,
        )


class _Known:
    """What this process knows of unfinished uploads: per upload, the info and state as they were
    when a hold of its lock (named by its token) last read or wrote them; bounded, oldest dropped.

    Only uploads this process is serving gain from an entry, and a state lists every part (up to
    10,000), so the bound is kept near the connections a process serves, not the uploads it saw."""

    LIMIT = 512

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[str, UploadInfo, _State]] = OrderedDict()
        self._mutex = threading.Lock()

    def take(self, upload_id: str, fence: Fence) -> tuple[UploadInfo, _State] | None:
        """The upload as the previous hold left it, if that hold was this process's (the entry
        then belongs to the new hold); None otherwise."""
        with self._mutex:
            entry = self._entries.pop(upload_id, None)
            if entry is None or not fence.previous or entry[0] != fence.previous:
                return None
            self._entries[upload_id] = (fence.token, entry[1], entry[2])
            return entry[1], entry[2]

    def remember(self, upload_id: str, token: str, info: UploadInfo, state: _State) -> None:
        with self._mutex:
            self._entries.pop(upload_id, None)
            self._entries[upload_id] = (token, info, state)
            while len(self._entries) > self.LIMIT:
                self._entries.popitem(last=False)

    def update(self, upload_id: str, token: str | None, state: _State) -> None:
        """A hold wrote ``state``: keep it if the entry is that hold's, else forget the upload."""
        with self._mutex:
            entry = self._entries.get(upload_id)
            if entry is None:
                return
            if token is None or entry[0] != token:
                del self._entries[upload_id]
            else:
                self._entries[upload_id] = (token, entry[1], state)

    def held(self, upload_id: str, token: str) -> _State | None:
        """The state as the hold ``token`` last read or wrote it, if the entry is that hold's."""
        with self._mutex:
            entry = self._entries.get(upload_id)
            return entry[2] if entry is not None and entry[0] == token else None

    def forget(self, upload_id: str) -> None:
        with self._mutex:
            self._entries.pop(upload_id, None)


class _Retired:
    """The finished uploads whose state and pending objects this process deleted, so saving a
    finished info again (after the handover) does not list and delete them a second time;
    bounded, oldest dropped (another process, or this one later, just retires again)."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._mutex = threading.Lock()

    def add(self, upload_id: str) -> bool:
        """Whether ``upload_id`` is new here (then the caller retires it, or ``discard``s)."""
        with self._mutex:
            if upload_id in self._ids:
                return False
            self._ids[upload_id] = None
            while len(self._ids) > self.LIMIT:
                self._ids.popitem(last=False)
            return True

    def discard(self, upload_id: str) -> None:
        with self._mutex:
            self._ids.pop(upload_id, None)


def _no_such_upload(exc: ClientError) -> bool:
    """Whether S3 answered that the multipart upload is gone (aborted or completed)."""
    return error_code(exc) in ("NoSuchUpload", "404")


def _too_many_parts() -> OSError:
    return OSError(errno.EFBIG, f"the upload needs more than the store's {MAX_PARTS} parts")


class S3Storage:
    """Uploads as multipart uploads in a bucket (see the module docstring for the keys).

    ``part_size``: the size of the parts a writer uploads as bytes arrive (at least 5 MiB).
    ``max_size``: the largest upload (Tus-Max-Size); parts grow so that it fits in 10000.
    """

    def __init__(self, blobs: S3Blobs, part_size: int = DEFAULT_PART_SIZE, max_size: int = 20 << 30) -> None:
        self.blobs = blobs
        self.client: S3Client = blobs.client
        self.bucket = blobs.bucket
        self.max_size = max_size
        self.commit_part_size, self.part_size = self.part_sizes(None, part_size)
        #: Per thread, ``state``: the state the last ``load`` read (a PATCH loads its upload under
        #: the lock and opens its writer right after, so the writer need not GET it a second
        #: time); ``finished``: the state the last ``persist_data`` completed (the completed
        #: info's save right after retires what it names, without listing).
        self._recent = threading.local()
        self._known = _Known()
        self._retired = _Retired()

    def part_sizes(self, length: int | None, preferred: int | None = None) -> tuple[int, int]:
        """(smallest part a commit uploads, part size) for an upload of ``length`` bytes (None:
        deferred, so up to ``max_size``). Committed parts are at least the first (a commit
        uploads a smaller tail as a pending object), so the upload needs under MAX_PARTS parts.
        Sized by the upload's own length, as tusd does: a 1 GiB upload in 5 MiB PATCHes commits
        each PATCH as a part even when Tus-Max-Size is 64 GiB."""
        fit = -(-(self.max_size if length is None else length) // (MAX_PARTS - 100))
        commit = min(MAX_PART_SIZE, max(MIN_PART_SIZE, fit))
        return commit, min(MAX_PART_SIZE, max(preferred or self.part_size, commit))

    # -- keys ------------------------------------------------------------------------------------

    def relpath(self, upload_id: str) -> str:
        return upload_relpath(upload_id)

    def _data_key(self, upload_id: str) -> str:
        """The object key of the upload's data (a validated id cannot escape ``uploads/``)."""
        if not is_upload_id(upload_id):
            raise ValueError(f"bad upload id {upload_id!r}")
        return self.blobs.key(upload_relpath(upload_id))

    def _info_key(self, upload_id: str) -> str:
        return self._data_key(upload_id) + INFO_SUFFIX

    def _state_key(self, upload_id: str) -> str:
        return self._data_key(upload_id) + STATE_SUFFIX

    def _new_pending_key(self, upload_id: str) -> str:
        return self._data_key(upload_id) + PENDING_INFIX + secrets.token_hex(8)

    # -- small objects ---------------------------------------------------------------------------

    def _get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if not_found(exc):
                return None
            raise

    def _put(self, key: str, data: bytes | Body) -> None:
        body = data if isinstance(data, bytes) else data.stream()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def _delete_keys(self, keys: Iterator[str] | list[str] | set[str]) -> None:
        batch = sorted(keys)
        for start in range(0, len(batch), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in batch[start:start + 1000]], "Quiet": True})

    def _read_state(self, upload_id: str) -> _State | None:
        raw = self._get(self._state_key(upload_id))
        return None if raw is None else _State.from_json(json.loads(raw))

    def _write_state(self, upload_id: str, state: _State) -> None:
        self._put(self._state_key(upload_id), json.dumps(state.to_json(), separators=(",", ":")).encode())

    def _read_pending(self, pending: tuple[_Pending, ...]) -> bytes:
        """The pending objects' bytes, in order (less than a part in all)."""
        chunks: list[bytes] = []
        for p in pending:
            data = self._get(p.key)
            if data is None or len(data) != p.size:
                raise OSError(errno.EIO, f"pending object {p.key} is missing or has the wrong size")
            chunks.append(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _object_size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if not_found(exc):
                return None
            raise

    def _abort(self, key: str, mpu: str | None) -> None:
        """Abort ``mpu`` (if any) and every other multipart upload of ``key`` (one a crash left
        behind before its state was written)."""
        ids = {mpu} if mpu else set()
        with contextlib.suppress(ClientError):  # listing is a courtesy; the known one is enough
            listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            ids.update(u["UploadId"] for u in listed.get("Uploads", []) if u.get("Key") == key)
        for upload in ids:
            self._abort_one(key, upload)

    def _abort_one(self, key: str, upload: str) -> bool:
        """Abort one multipart upload; False if it was already gone."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
        except ClientError as exc:
            if not _no_such_upload(exc):
                raise
            return False
        return True

    def _side_keys(self, upload_id: str) -> list[str]:
        """The pending objects of an upload as listed (including any a crash orphaned)."""
        prefix = self._data_key(upload_id) + PENDING_INFIX
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    # -- Storage ---------------------------------------------------------------------------------

    @_s3_errors
    def create(self, info: UploadInfo, fence: Fence | None = None) -> None:
        """One PUT, the info, naming the multipart upload if the length is known to reach one
        part (an upload under 5 MiB needs none; a deferred one starts it with its first part):
        an upload exists once its info does, and its state comes with its first commit. Created
        under its lock (``fence``), it is remembered, so the first PATCH this process serves
        reads nothing back."""
        mpu = None
        if info.length is not None and info.length >= self.part_sizes(info.length)[0]:
            # It will have parts: its multipart upload starts with it, named by its info.
            mpu = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._data_key(info.id))["UploadId"]
        info = info.with_(extra={**info.extra, MPU_EXTRA: mpu or ""})
        self.save(info)
        if fence is not None:
            self._known.remember(info.id, fence.token, info,
                                 _State(offset=info.offset, expires_at=info.expires_at, mpu=mpu))

    @staticmethod
    def _first_state(info: UploadInfo) -> _State | None:
        """The state of an unfinished upload created here that no commit has recorded yet (None
        for any other upload): offset 0 and the multipart upload its info names."""
        if MPU_EXTRA not in info.extra or info.completed_at is not None or info.gone:
            return None
        return _State(offset=0, expires_at=info.expires_at, mpu=info.extra[MPU_EXTRA] or None)

    def _state_of(self, upload_id: str) -> _State | None:
        """The recorded state, else the first one its info implies (a GET more, only then)."""
        state = self._read_state(upload_id)
        if state is None:
            info = self.peek(upload_id)
            state = None if info is None else self._first_state(info)
        return state

    @_s3_errors
    def load(self, upload_id: str, fence: Fence | None = None) -> UploadInfo | None:
        """The info, with the committed offset and expiry of an unfinished upload's state; under
        the upload's lock (``fence``), from memory when this process held it last."""
        known = self._known.take(upload_id, fence) if fence is not None else None
        if known is not None:
            info, state = known
        else:
            read_info = self.peek(upload_id)
            if read_info is None:
                self._known.forget(upload_id)
                return None
            info = read_info
            if info.completed_at is not None or info.gone:
                self._known.forget(upload_id)
                return info
            read = self._read_state(upload_id) or self._first_state(info)
            self._recent.state = (upload_id, read)
            if read is None:
                self._known.forget(upload_id)
                return info
            state = read
            if fence is not None:
                self._known.remember(upload_id, fence.token, info, state)
        self._recent.state = (upload_id, state)
        return info.with_(offset=state.offset, expires_at=state.expires_at)

    @_s3_errors
    def peek(self, upload_id: str) -> UploadInfo | None:
        """The info alone (one GET; its offset is the one at creation until completion)."""
        raw = self._get(self._info_key(upload_id))
        return None if raw is None else UploadInfo.from_json(json.loads(raw))

    @_s3_errors
    def save(self, info: UploadInfo) -> None:
        """Write the info (one PUT is atomic). The info of a finished upload retires its state and
        pending objects: from then on the data object alone holds the bytes."""
        self._known.forget(info.id)
        payload = json.dumps(info.to_json(), separators=(",", ":")).encode()
        self._put(self._info_key(info.id), payload)
        if info.completed_at is not None and self._retired.add(info.id):
            try:
                self._retire(info.id)
            except BaseException:
                self._retired.discard(info.id)
                raise

    def _retire(self, upload_id: str) -> None:
        """Delete a finished upload's state and pending objects. Those named by the state this
        thread's ``persist_data`` just completed go in one request (the usual completion: no
        listing); otherwise they are listed. A pending object a crash orphaned before any state
        named it is then left to the sweep (``collect_orphans``), which finds it once the state
        is gone."""
        finished = getattr(self._recent, "finished", None)
        self._recent.finished = None
        if finished is not None and finished[0] == upload_id:
            state: _State = finished[1]
            keys = state.needed_keys() | ({self._state_key(upload_id)} if state.stored else set())
            if keys:  # an upload finished by its first commit has nothing to retire
                self._delete_keys(keys)
            return
        # Pending objects first: a state left alone by a crash still finds its bytes.
        self._delete_keys(self._side_keys(upload_id))
        self.client.delete_object(Bucket=self.bucket, Key=self._state_key(upload_id))

    @_s3_errors
    def persist_data(self, upload_id: str, fence: Fence | None = None) -> None:
        """Make ``uploads/<id>`` from the committed parts and pending bytes (before the upload is
        recorded as finished); the state is the one this hold (``fence``) committed, if known.
        Idempotent: when the multipart upload is gone, a finished object of the committed size
        is done (made before a crash, or before a failed save)."""
        token = fence.token if fence is not None else None
        state = self._take_unrecorded(upload_id, token or "")
        state = state or (self._known.held(upload_id, token) if token is not None else None)
        self._known.forget(upload_id)
        state = state or self._state_of(upload_id)
        self._recent.finished = None if state is None else (upload_id, state)  # for ``_retire``
        if state is None:
            return  # nothing pending: a concatenation's object, or an already retired state
        key = self._data_key(upload_id)
        if state.made:
            return
        if not state.parts:
            # Less than one part in all: one PUT of the pending bytes, no multipart upload.
            self._put(key, Body(self._read_pending(state.pending)))
            if state.mpu is not None:
                self._abort(key, state.mpu)
            return
        try:
            self._finish_multipart(key, state)
        except ClientError as exc:
            self._made(key, state, exc)

    def _keep_unrecorded(self, upload_id: str, token: str, state: _State) -> None:
        """Hand the state a hold committed without a PUT to that hold's ``persist_data``, on this
        thread (the protocol completes on the thread that committed). Not in ``_known`` alone:
        that memory is bounded, and ``persist_data`` falling back to the store's older state
        would make an object of fewer bytes than the upload's."""
        self._recent.unrecorded = (upload_id, token, state)

    def _take_unrecorded(self, upload_id: str, token: str) -> _State | None:
        kept = getattr(self._recent, "unrecorded", None)
        if kept is None or kept[0] != upload_id or kept[1] != token:
            return None
        self._recent.unrecorded = None
        return kept[2]

    def _finish_multipart(self, key: str, state: _State) -> None:
        """The pending bytes as the last part (copied server-side if they are one object), then
        CompleteMultipartUpload with the recorded parts."""
        parts = list(state.parts)
        tail = sum(p.size for p in state.pending)
        if tail:
            number = parts[-1].number + 1
            if number > MAX_PARTS:
                raise _too_many_parts()
            if len(state.pending) == 1:  # server-side: the bytes never come back through us
                got = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=key, UploadId=state.mpu or "", PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": state.pending[0].key})
                etag = str(got["CopyPartResult"].get("ETag", ""))
            else:
                body = Body(self._read_pending(state.pending)).stream()
                etag = str(self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=state.mpu or "",
                                                   PartNumber=number, Body=body)["ETag"])
            parts.append(_Part(number, etag, tail))
        self._complete(key, state.mpu or "", parts)

    def _made(self, key: str, state: _State, exc: ClientError) -> None:
        """The multipart upload is gone: fine if its object was made with the committed size."""
        if not _no_such_upload(exc) or self._object_size(key) != state.offset:
            raise exc

    def _complete(self, key: str, mpu: str, parts: list[_Part]) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=mpu,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]})

    @_s3_errors
    def open_writer(self, info: UploadInfo, fence: Fence | None = None) -> S3Writer:
        recent = getattr(self._recent, "state", None)
        self._recent.state = None  # used once: any later writer reads the store again
        fresh = recent is not None and recent[0] == info.id and recent[1] is not None
        state = recent[1] if fresh and recent is not None else self._state_of(info.id)
        if state is None:
            raise OSError(errno.ENOENT, f"upload {info.id} has no state (finished or discarded)")
        if state.offset != info.offset:
            raise OSError(errno.EIO, f"upload {info.id} committed {state.offset}, not {info.offset}")
        return S3Writer(self, info.id, state, info.length, fence.token if fence is not None else None)

    @_s3_errors
    def truncate(self, info: UploadInfo) -> None:
        """Forget commits past ``info.offset``: restore the session's base (see the module
        docstring). Bytes that were never committed need nothing."""
        self._known.forget(info.id)
        state = self._read_state(info.id)
        if state is None or state.offset <= info.offset:
            return
        base = state.base
        if base is None or base.offset != info.offset:
            log.warning("upload %s: cannot roll back from %d to %d; the committed bytes stay",
                        info.id, state.offset, info.offset)
            return
        restored = replace(state, offset=base.offset, expires_at=info.expires_at,
                           parts=state.parts[:base.parts], pending=base.pending)
        self._write_state(info.id, restored)
        self._delete_keys(state.needed_keys() - restored.needed_keys())

    @_s3_errors
    def concatenate(self, final: UploadInfo, parts: list[UploadInfo]) -> None:
        """The partial uploads' objects, in order, as the final's object, then its info.

        Parts of at least 5 MiB are copied inside the store (UploadPartCopy, in ranges of at most
        5 GiB); smaller ones cannot be parts of their own, so they stream through one buffer
        (ranged GETs, flat memory) together with as much of their neighbours as a part needs.
        """
        key = self._data_key(final.id)
        self._known.forget(final.id)
        self._abort(key, None)  # a concatenation a crash cut short
        sources = [(self._data_key(p.id), p.offset) for p in parts if p.offset > 0]
        out = _Assembler(self, key)
        try:
            for index, (source, size) in enumerate(sources):
                last = index == len(sources) - 1
                pos = 0
                while pos < size:
                    rem = size - pos
                    buffered = out.buffered
                    if 0 < buffered < MIN_PART_SIZE:
                        take = min(rem, MIN_PART_SIZE - buffered)  # top the buffer up to a part
                        out.download(source, pos, take)
                    elif rem >= MIN_PART_SIZE or (last and buffered == 0):
                        out.flush()  # the buffer (>= 5 MiB) is a part of its own before a copy
                        out.copy(source, pos, rem)
                        take = rem
                    else:
                        take = rem
                        out.download(source, pos, take)
                    pos += take
            out.finish()
        except BaseException:
            with contextlib.suppress(Exception):
                out.abort()
            raise
        self.save(final)

    @_s3_errors
    def delete(self, upload_id: str) -> None:
        """Info first, so a half-deleted upload is simply gone rather than corrupt; then the
        multipart upload, the data and every side object."""
        info_key = self._info_key(upload_id)
        self.client.delete_object(Bucket=self.bucket, Key=info_key)
        self._discard(upload_id)

    @_s3_errors
    def discard_data(self, upload_id: str) -> None:
        """Delete the bytes but keep the info (expiry tombstones)."""
        self._discard(upload_id)

    def _discard(self, upload_id: str) -> None:
        self._known.forget(upload_id)
        key = self._data_key(upload_id)
        state = self._state_of(upload_id)
        self._abort(key, state.mpu if state is not None else None)
        self._delete_keys([key, self._state_key(upload_id), *self._side_keys(upload_id)])

    @_s3_errors
    def ids(self) -> Iterator[str]:
        prefix = self.blobs.key(UPLOADS + "/")
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix):]
                if name.endswith(INFO_SUFFIX) and is_upload_id(name[: -len(INFO_SUFFIX)]):
                    found.append(name[: -len(INFO_SUFFIX)])
        return iter(found)

    @_s3_errors
    def collect_orphans(self, now: float) -> int:
        """Pending objects their upload's state does not list, and multipart uploads of
        ``uploads/`` its state does not name (a crash between a PUT and the state that records
        it, or during a retirement), once older than ORPHAN_AGE: no writer can still record them
        (a new state only ever names new pending objects). What a bucket lifecycle rule
        ``AbortIncompleteMultipartUpload`` would do, on stores without one."""
        cutoff = now - ORPHAN_AGE
        prefix = self.blobs.key(UPLOADS + "/")
        states: dict[str, _State | None] = {}

        def named(upload_id: str) -> _State | None:
            if upload_id not in states:
                states[upload_id] = self._state_of(upload_id)
            return states[upload_id]

        stale: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                upload_id, infix, _ = key[len(prefix):].partition(PENDING_INFIX)
                if infix and is_upload_id(upload_id) and item["LastModified"].timestamp() < cutoff:
                    state = named(upload_id)
                    if state is None or key not in state.needed_keys():
                        stale.append(key)
        self._delete_keys(stale)
        aborted = 0
        listing = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        for uploads in listing:
            for upload in uploads.get("Uploads", []):
                upload_id = upload["Key"][len(prefix):]
                if not is_upload_id(upload_id) or upload["Initiated"].timestamp() >= cutoff:
                    continue
                state = named(upload_id)
                if (state is None or state.mpu != upload["UploadId"]) \
                        and self._abort_one(upload["Key"], upload["UploadId"]):
                    aborted += 1
        if stale or aborted:
            log.info("collected %d orphaned pending objects and %d multipart uploads", len(stale), aborted)
        return len(stale) + aborted


class S3Writer:
    """Appends to one upload: bytes go up as parts of its multipart upload when a part is full,
    and every commit records them (see the module docstring).

    The bytes after the last part are, in order: ``_cold``, pending objects whose bytes are not in
    memory (those the session started with); ``_hot``, pending objects this session wrote, whose
    bytes are also ``_buf[:saved]``; and ``_buf[saved:]``, bytes not yet in the store. Cold bytes
    are read back only when they become part of a part.
    """

    def __init__(self, store: S3Storage, upload_id: str, state: _State, length: int | None = None,
                 token: str | None = None) -> None:
        self._store = store
        self._token = token  # the lock hold this session runs under, for the store's memory
        self._commit_part_size, self._part_size = store.part_sizes(length)
        self._length = length
        self._id = upload_id
        self._key = store._data_key(upload_id)
        self._committed = state
        self._mpu = state.mpu
        self._parts = list(state.parts)
        self._cold = state.pending
        self._cold_size = sum(p.size for p in state.pending)
        self._hot: tuple[_Pending, ...] = ()
        self._buf = PartBuffer(self._part_size - self._cold_size, self._part_size)
        self._saved = 0
        self._pos = state.offset
        self._base = _Base(state.offset, len(state.parts), state.pending)
        #: Parts on their way to the store, oldest first: (number, upload, its buffer, size).
        self._inflight: list[tuple[int, Future[Any], PartBuffer, int]] = []

    @property
    def _tail(self) -> int:
        """Bytes after the last part."""
        return self._cold_size + self._buf.fill

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        part = self._part_size
        with self._storing("upload part"):
            while view:
                take = min(part - self._tail, len(view))
                self._buf.append(view[:take])
                view = view[take:]
                self._pos += take
                if self._tail >= part:
                    self._upload_part()

    def window(self, count: int) -> memoryview:
        """Where up to ``count`` next bytes of the upload go (a body is read straight into the
        part): at most what the current part still holds; ``wrote`` counts them."""
        return self._buf.window(min(count, self._part_size - self._tail))

    def wrote(self, count: int) -> None:
        self._buf.advance(count)
        self._pos += count
        if self._tail >= self._part_size:
            with self._storing("upload part"):
                self._upload_part()

    def _upload_part(self) -> None:
        """Upload everything after the last part as the next part (not yet recorded)."""
        store = self._store
        if self._mpu is None:
            self._mpu = store.client.create_multipart_upload(Bucket=store.bucket, Key=self._key)["UploadId"]
            # Recorded at once, so an abandoned session's multipart upload is still aborted by
            # delete/discard (the rest of the committed state is unchanged).
            self._committed = self._record(replace(self._committed, mpu=self._mpu))
        last = self._inflight[-1][0] if self._inflight else self._parts[-1].number if self._parts else 0
        number = last + 1
        if number > MAX_PARTS:
            raise _too_many_parts()
        body = Body(store._read_pending(self._cold), self._buf.view())
        if _IN_FLIGHT_SLOTS.acquire(blocking=False):
            upload = _PART_UPLOADS.submit(store.client.upload_part, Bucket=store.bucket, Key=self._key,
                                          UploadId=self._mpu, PartNumber=number, Body=body.stream())
            self._inflight.append((number, upload, self._buf, len(body)))
            self._buf = PartBuffer(self._part_size)
            self._drop_tail()
            self._settle(PARTS_IN_FLIGHT)
        else:  # the process's budget of parts in flight is spent: this one goes up now, in place
            self._settle(0)  # parts are recorded in order
            got = store.client.upload_part(Bucket=store.bucket, Key=self._key, UploadId=self._mpu,
                                           PartNumber=number, Body=body.stream())
            self._parts.append(_Part(number, str(got["ETag"]), len(body)))
            self._drop_tail()

    def _settle(self, keep: int, wait: bool = True) -> None:
        """Wait for the oldest parts in flight until at most ``keep`` remain (``wait=False``: take
        only those already done, in order), recording each and freeing its buffer. A failed
        upload raises here, as if it had been synchronous."""
        while len(self._inflight) > keep and (wait or self._inflight[0][1].done()):
            number, upload, buf, size = self._inflight.pop(0)
            try:
                etag = str(upload.result()["ETag"])
            finally:
                _IN_FLIGHT_SLOTS.release()
                # Back to the pool, not kept: an upload that once pipelined must not hold extra
                # parts for the rest of its life (32 concurrent uploads would each keep three).
                buf.release()
            self._parts.append(_Part(number, etag, size))

    def _drop_tail(self) -> None:
        self._cold, self._cold_size, self._hot, self._saved = (), 0, (), 0
        self._buf.clear(self._part_size)

    def commit(self, offset: int, expires_at: float) -> None:
        """Make every byte written so far durable in the store, then record ``offset``."""
        if offset != self._pos:
            raise ValueError(f"commit of offset {offset}, but {self._pos} bytes are written")
        store = self._store
        # The last bytes of an upload with parts go up as its last part, which S3 allows to be
        # small: no pending object to copy at completion.
        last = offset == self._length and self._tail > 0 and bool(self._parts or self._inflight)
        with self._storing("commit"):
            self._settle(0)
            if self._tail >= self._commit_part_size or last:
                self._upload_part()
                self._settle(0)
            elif self._buf.fill > self._saved:
                key = store._new_pending_key(self._id)
                if len(self._cold) + len(self._hot) >= MAX_PENDING:  # merge, so the state stays small
                    merged = Body(store._read_pending(self._cold), self._buf.view())
                    store._put(key, merged)
                    size = self._tail
                    self._drop_tail()
                    self._cold, self._cold_size = (_Pending(key, size),), size
                    self._buf.clear(self._part_size - size)
                else:
                    store._put(key, Body(self._buf.view(self._saved)))
                    self._hot = (*self._hot, _Pending(key, self._buf.fill - self._saved))
                    self._saved = self._buf.fill
            state = _State(offset=offset, expires_at=expires_at, mpu=self._mpu, parts=tuple(self._parts),
                           pending=self._cold + self._hot, base=self._base, stored=self._committed.stored)
            if self._completes(state):
                self._committed = state
                self._store._keep_unrecorded(self._id, self._token or "", state)
                self._store._known.update(self._id, self._token, state)
                return
            self._advance(state)

    def _completes(self, state: _State) -> bool:
        """Whether ``state``, the commit of the upload's last byte, can go unrecorded: the protocol
        completes the upload at once under the same hold, and ``persist_data`` makes the object
        from this state (its CompleteMultipartUpload is the record). Only when every byte is in a
        part and no pending object became stale: a state PUT then bought nothing but its own
        deletion a moment later (2 of the 6 small requests of an upload sent in one PATCH).
        A crash before the finished info is saved leaves the older record; the resuming PATCH
        then finds the object whole (``_storing``)."""
        return (self._token is not None and state.offset == self._length and not state.pending
                and not self._committed.needed_keys() - state.needed_keys())

    def checkpoint(self, offset: int, expires_at: float) -> None:
        """A commit that never waits for a part in flight: with none in flight (a slow client's
        body), it is ``commit``; otherwise it records only the parts already stored.

        Why: a commit waits for every part in flight, and while they drain the store has less and
        less to do; in mid-body a fast client's upload stalled so at every commit (16 times per
        GiB at the default ``VIDUP_INGEST_COMMIT_BYTES``). The offset recorded is then the end of
        the stored parts, behind ``offset`` by the parts in flight and the one filling, never
        behind what was recorded before; pending objects all end before it (they precede the
        oldest part this session sent), so the state names none.
        """
        with self._storing("commit"):
            self._settle(0, wait=False)
            if not self._inflight:
                self.commit(offset, expires_at)
                return
            end = sum(p.size for p in self._parts)
            if end > self._committed.offset:
                self._advance(_State(offset=end, expires_at=expires_at, mpu=self._mpu, parts=tuple(self._parts),
                                     pending=(), base=self._base))

    def _advance(self, state: _State) -> None:
        """Record ``state`` (the commit point), then delete the pending objects it no longer needs."""
        state = self._record(state)
        stale = self._committed.needed_keys() - state.needed_keys()
        self._committed = state
        if stale:
            self._store._delete_keys(stale)

    def _record(self, state: _State) -> _State:
        """PUT the state, and keep the store's memory of the upload in step (forgotten if the
        PUT's outcome is unknown); returns it as stored."""
        try:
            self._store._write_state(self._id, state)
        except BaseException:
            self._store._known.forget(self._id)
            raise
        state = replace(state, stored=True)
        self._store._known.update(self._id, self._token, state)
        return state

    @contextlib.contextmanager
    def _storing(self, what: str) -> Iterator[None]:
        """S3 failures as ``OSError`` (see ``_as_os_error``), except the one a completion cut short
        by a crash leaves: the multipart upload is gone and the object is there, whole. The
        writer then hands ``persist_data`` a state of the whole length (whose completion finds
        the object made) and raises :class:`AlreadyWhole`; the client's bytes are the same
        bytes, so they need not be taken again."""
        try:
            with _as_os_error(what):
                yield
        except OSError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ClientError) and _no_such_upload(cause) and self._length is not None):
                raise
            with _as_os_error(what):
                whole = self._store._object_size(self._key) == self._length
            if not whole:
                raise
            state = replace(self._committed, offset=self._length, made=True)
            self._committed = state
            self._store._keep_unrecorded(self._id, self._token or "", state)
            log.warning("upload %s: its object was already whole (a completion cut short); finishing it",
                        self._id)
            raise AlreadyWhole(self._id) from exc

    def close(self) -> None:
        """Drop what was not committed (its parts, if any, are overwritten by the next session),
        once no upload still reads a buffer."""
        for _, upload, buf, _ in self._inflight:
            with contextlib.suppress(Exception):
                upload.result()
            _IN_FLIGHT_SLOTS.release()
            buf.release()
        self._inflight = []
        self._buf.release()


class _Assembler:
    """Builds one object from byte ranges of others: copies inside the store where a range can be
    a part of its own, streams through one part-sized buffer where it cannot."""

    def __init__(self, store: S3Storage, key: str) -> None:
        self.store = store
        self.key = key
        self.mpu: str | None = None
        self.parts: list[_Part] = []
        self.buf = PartBuffer(store.part_size)

    @property
    def buffered(self) -> int:
        return self.buf.fill

    def _start(self) -> str:
        if self.mpu is None:
            self.mpu = self.store.client.create_multipart_upload(Bucket=self.store.bucket, Key=self.key)["UploadId"]
        return self.mpu

    def _next_number(self) -> int:
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise _too_many_parts()
        return number

    def flush(self) -> None:
        """Upload the buffer as the next part."""
        if not self.buf.fill:
            return
        mpu, number = self._start(), self._next_number()
        got = self.store.client.upload_part(Bucket=self.store.bucket, Key=self.key, UploadId=mpu,
                                            PartNumber=number, Body=Body(self.buf.view()).stream())
        self.parts.append(_Part(number, str(got["ETag"]), self.buf.fill))
        self.buf.clear(self.store.part_size)

    def download(self, source: str, start: int, count: int) -> None:
        """Stream ``count`` bytes of ``source`` from ``start`` into the buffer, a part at a time."""
        got = self.store.client.get_object(Bucket=self.store.bucket, Key=source,
                                           Range=f"bytes={start}-{start + count - 1}")
        body = got["Body"]
        remaining = count
        try:
            while remaining:
                chunk = body.read(min(READ_CHUNK, remaining, self.store.part_size - self.buf.fill))
                if not chunk:
                    raise OSError(errno.EIO, f"{source} is shorter than its upload's offset")
                self.buf.append(chunk)
                remaining -= len(chunk)
                if self.buf.fill >= self.store.part_size:
                    self.flush()
        finally:
            body.close()

    def copy(self, source: str, start: int, count: int) -> None:
        """Copy ``count`` bytes of ``source`` from ``start`` as parts, server-side (ranges of
        equal size, at most 5 GiB each, so none is under 5 MiB unless ``count`` is)."""
        mpu = self._start()
        pieces = -(-count // MAX_PART_SIZE)
        step = -(-count // pieces)
        pos = start
        end = start + count
        while pos < end:
            size = min(step, end - pos)
            number = self._next_number()
            got = self.store.client.upload_part_copy(
                Bucket=self.store.bucket, Key=self.key, UploadId=mpu, PartNumber=number,
                CopySource={"Bucket": self.store.bucket, "Key": source},
                CopySourceRange=f"bytes={pos}-{pos + size - 1}")
            self.parts.append(_Part(number, str(got["CopyPartResult"].get("ETag", "")), size))
            pos += size

    def finish(self) -> None:
        """The last part (any size) and the completion; a whole that never needed a part is one
        PUT."""
        if self.mpu is None:
            self.store._put(self.key, Body(self.buf.view()))
            self.buf.release()
            return
        self.flush()
        self.buf.release()
        self.store._complete(self.key, self.mpu, self.parts)

    def abort(self) -> None:
        self.buf.release()
        if self.mpu is not None:
            self.store._abort(self.key, self.mpu)
