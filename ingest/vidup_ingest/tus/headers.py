"""Pure parsers for tus request headers. Each returns a typed value or raises :class:`TusError`
with the precise status the protocol asks for, so routes never parse strings themselves."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit

from vidup_ingest.errors import TusError

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
#: The largest length we accept in any numeric header: fits a signed 64-bit integer like tusd.
MAX_INT = 2**63 - 1
#: Digest sizes of the checksum algorithms we verify (Tus-Checksum-Algorithm).
CHECKSUM_DIGEST_SIZES: dict[str, int] = {"sha1": 20, "md5": 16, "sha256": 32}

_DIGITS = re.compile(r"[0-9]{1,19}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def parse_int_header(name: str, raw: str | None, *, required: bool = True) -> int | None:
    """A non-negative decimal integer header: only ASCII digits, no sign, no spaces, at most 2**63-1."""
    if raw is None:
        if required:
            raise TusError(400, f"missing {name} header")
        return None
    value = raw.strip(" \t")
    if not _DIGITS.fullmatch(value):
        raise TusError(400, f"{name} must be a non-negative decimal integer, got {raw[:40]!r}")
    number = int(value)
    if number > MAX_INT:
        raise TusError(400, f"{name} is too large")
    return number


def parse_upload_length(raw: str | None) -> int | None:
    return parse_int_header("Upload-Length", raw, required=False)


def parse_upload_offset(raw: str | None) -> int:
    value = parse_int_header("Upload-Offset", raw)
    assert value is not None
    return value


def parse_content_length(raw: str | None) -> int | None:
    return parse_int_header("Content-Length", raw, required=False)


def parse_defer_length(raw: str | None) -> bool:
    """``Upload-Defer-Length`` may only be ``1``."""
    if raw is None:
        return False
    if raw.strip(" \t") != "1":
        raise TusError(400, "Upload-Defer-Length must be 1")
    return True


def tus_resumable_ok(raw: str | None) -> bool:
    """Whether a request speaks the only protocol version we implement."""
    return raw is not None and raw.strip(" \t") == TUS_VERSION


def is_offset_stream(content_type: str | None) -> bool:
    """``Content-Type: application/offset+octet-stream``, case-insensitive, parameters ignored."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip(" \t").lower() == OFFSET_CONTENT_TYPE


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes


def parse_checksum(raw: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``: 400 for an unknown algorithm or a malformed
    digest (the spec's "unsupported algorithm" answer); the digest size must match the algorithm."""
    if raw is None:
        return None
    parts = raw.strip(" \t").split(" ")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise TusError(400, "Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm, encoded = parts[0].lower(), parts[1]
    if algorithm not in CHECKSUM_DIGEST_SIZES:
        raise TusError(400, f"unsupported checksum algorithm {parts[0][:20]!r}; "
                            f"supported: {','.join(CHECKSUM_DIGEST_SIZES)}")
    digest = strict_b64decode(encoded)
    if digest is None or len(digest) != CHECKSUM_DIGEST_SIZES[algorithm]:
        raise TusError(400, f"Upload-Checksum digest is not a base64 {algorithm} digest")
    return Checksum(algorithm, digest)


def strict_b64decode(value: str) -> bytes | None:
    """Standard base64 with padding, nothing else (no whitespace, no URL-safe alphabet)."""
    if len(value) % 4 or not _B64.fullmatch(value):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class Concat:
    """A parsed ``Upload-Concat``: ``partial``, or ``final`` with the partial uploads' URLs."""

    final: bool
    urls: tuple[str, ...] = ()


def parse_concat(raw: str | None) -> Concat | None:
    if raw is None:
        return None
    value = raw.strip(" \t")
    if value == "partial":
        return Concat(final=False)
    if value.startswith("final;"):
        urls = tuple(u for u in value[len("final;"):].split(" ") if u)
        if not urls:
            raise TusError(400, "Upload-Concat final needs at least one partial upload URL")
        return Concat(final=True, urls=urls)
    raise TusError(400, "Upload-Concat must be 'partial' or 'final;<url> <url> ...'")


def upload_id_from_url(url: str, endpoint_path: str) -> str:
    """The upload id from an absolute or relative upload URL under ``endpoint_path`` (e.g. /files/).

    Only the path counts: behind an ingress the host a client used may differ from ours.
    """
    try:
        path = urlsplit(url).path
    except ValueError:
        raise TusError(400, f"not an upload URL: {url[:80]!r}") from None
    # Accept URLs that carry a prefix in front of our endpoint (an ingress path prefix).
    marker = endpoint_path.rstrip("/") + "/"
    idx = path.rfind(marker)
    if idx < 0:
        raise TusError(400, f"not an upload URL: {url[:80]!r}")
    upload_id = path[idx + len(marker):]
    if not is_upload_id(upload_id):
        raise TusError(400, f"not an upload URL: {url[:80]!r}")
    return upload_id


_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def is_upload_id(value: str) -> bool:
    """Upload ids are 32 lowercase hex digits: valid DNS labels, so they name the VideoTranscode."""
    return bool(_UPLOAD_ID.fullmatch(value))


def http_date(timestamp: float) -> str:
    """RFC 7231 IMF-fixdate, the format of Upload-Expires."""
    return formatdate(timestamp, usegmt=True)
