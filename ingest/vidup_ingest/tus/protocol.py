"""The state of one upload and the tus rules about it, as pure functions of that state.

Routes call these to decide what a request may do; the storage only persists ``UploadInfo``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from vidup_ingest.errors import TusError
from vidup_ingest.tus.headers import CHECKSUM_DIGEST_SIZES, TUS_VERSION

#: Exactly what this server implements, in the order of the spec.
TUS_EXTENSIONS: tuple[str, ...] = (
    "creation", "creation-with-upload", "creation-defer-length", "termination",
    "concatenation", "checksum", "expiration",
)
CHECKSUM_ALGORITHMS: tuple[str, ...] = tuple(CHECKSUM_DIGEST_SIZES)


@dataclass(frozen=True)
class UploadInfo:
    """Everything we know about an upload; persisted next to its data (the ``.info`` sidecar).

    ``offset`` is the committed offset: bytes that are durably stored and, when a checksum was
    sent, verified. Data beyond it in the file is an interrupted write and is cut off on resume.
    """

    id: str
    tenant: str
    length: int | None
    offset: int = 0
    metadata: str = ""  # the Upload-Metadata header exactly as sent, echoed by HEAD
    filename: str = ""
    renditions: tuple[int, ...] = ()
    created_at: float = 0.0
    expires_at: float = 0.0
    concat: str = ""  # "", "partial" or "final"
    partial_urls: tuple[str, ...] = ()
    completed_at: float | None = None
    handed_over: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset == self.length

    @property
    def is_partial(self) -> bool:
        return self.concat == "partial"

    @property
    def is_final(self) -> bool:
        return self.concat == "final"

    @property
    def gone(self) -> bool:
        """A tombstone: the upload expired and its data was deleted."""
        return "gone" in self.extra

    def expired(self, now: float) -> bool:
        """Unfinished uploads expire; finished ones never do."""
        return not self.complete and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["renditions"] = list(self.renditions)
        doc["partial_urls"] = list(self.partial_urls)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> UploadInfo:
        doc = dict(doc)
        doc["renditions"] = tuple(doc.get("renditions") or ())
        doc["partial_urls"] = tuple(doc.get("partial_urls") or ())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})

    def with_(self, **changes: Any) -> UploadInfo:
        return replace(self, **changes)


def check_creation_length(length: int | None, defer: bool, is_final: bool, max_size: int) -> None:
    """Creation rules: exactly one of Upload-Length / Upload-Defer-Length (none for a final
    concatenation), and no more than Tus-Max-Size (413)."""
    if is_final:
        if length is not None or defer:
            raise TusError(400, "a final concatenation must not carry Upload-Length or Upload-Defer-Length")
        return
    if length is None and not defer:
        raise TusError(400, "Upload-Length or Upload-Defer-Length: 1 is required")
    if length is not None and defer:
        raise TusError(400, "Upload-Length and Upload-Defer-Length are mutually exclusive")
    if length is not None and length > max_size:
        raise TusError(413, f"Upload-Length exceeds Tus-Max-Size {max_size}")


@dataclass(frozen=True)
class PatchPlan:
    """What a valid PATCH may write: the offset it starts at, the length it (now) declares and the
    most bytes it may append."""

    start: int
    length: int | None
    max_bytes: int


def plan_patch(info: UploadInfo, *, offset: int, new_length: int | None, content_length: int | None,
               max_size: int, now: float) -> PatchPlan:
    """Every PATCH rule in one place, in the order a client needs to hear about problems."""
    if info.expired(now):
        raise TusError(410, "upload expired")
    if info.is_final:
        raise TusError(403, "a final concatenation cannot be patched")
    length = info.length
    if new_length is not None:
        if info.length is not None and new_length != info.length:
            raise TusError(400, "Upload-Length is already set and cannot change")
        if new_length > max_size:
            raise TusError(413, f"Upload-Length exceeds Tus-Max-Size {max_size}")
        if new_length < info.offset:
            raise TusError(400, "Upload-Length is smaller than the current offset")
        length = new_length
    if offset != info.offset:
        raise TusError(409, f"Upload-Offset {offset} does not match the current offset {info.offset}",
                       {"Upload-Offset": str(info.offset)})
    limit = (length if length is not None else max_size) - info.offset
    if content_length is not None and content_length > limit:
        what = "the upload's length" if length is not None else "Tus-Max-Size"
        raise TusError(413, f"the body would go past {what}")
    return PatchPlan(start=info.offset, length=length, max_bytes=limit)


def tus_capabilities(max_size: int) -> dict[str, str]:
    """The OPTIONS answer."""
    return {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(TUS_EXTENSIONS),
        "Tus-Max-Size": str(max_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


def concat_final_id(tenant: str, partial_ids: list[str]) -> str:
    """The id of the final upload made of ``partial_ids``: derived, not random, so a retried final
    creation finds the upload the first attempt made instead of creating a second one."""
    import hashlib

    return hashlib.sha256(("final\n" + tenant + "\n" + "\n".join(partial_ids)).encode()).hexdigest()[:32]
