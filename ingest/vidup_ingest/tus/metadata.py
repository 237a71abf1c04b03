"""``Upload-Metadata`` parsing and the video options clients may pass through it.

The header is ``key base64value,key2,key3 base64value``: keys are non-empty ASCII without spaces
or commas and unique; values are standard base64. We keep the raw header to echo it exactly.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from vidup.resource import RENDITION_HEIGHTS
from vidup_ingest.errors import TusError
from vidup_ingest.tus.headers import strict_b64decode

_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # visible ASCII except ',' (0x2c); no spaces
MAX_METADATA_BYTES = 4096


def parse_metadata(raw: str | None) -> dict[str, bytes]:
    """Decode ``Upload-Metadata``; 400 for anything malformed. An empty header means no metadata."""
    if raw is None:
        return {}
    if len(raw) > MAX_METADATA_BYTES:
        raise TusError(400, f"Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes")
    text = raw.strip(" \t")
    if not text:
        return {}
    result: dict[str, bytes] = {}
    for pair in text.split(","):
        pair = pair.strip(" \t")
        parts = pair.split(" ")
        if len(parts) > 2 or not parts[0]:
            raise TusError(400, f"malformed Upload-Metadata pair {pair[:40]!r}")
        key = parts[0]
        if not _KEY.fullmatch(key):
            raise TusError(400, f"malformed Upload-Metadata key {key[:40]!r}")
        if key in result:
            raise TusError(400, f"duplicate Upload-Metadata key {key[:40]!r}")
        if len(parts) == 1:
            result[key] = b""
            continue
        value = strict_b64decode(parts[1])
        if value is None:
            raise TusError(400, f"Upload-Metadata value of {key[:40]!r} is not base64")
        result[key] = value
    return result


def encode_metadata(items: dict[str, bytes]) -> str:
    """The inverse of :func:`parse_metadata` (keys without value for empty values)."""
    return ",".join(
        f"{k} {base64.b64encode(v).decode()}" if v else k for k, v in items.items()
    )


@dataclass(frozen=True)
class VideoOptions:
    """What the VideoTranscode takes from metadata: the original filename and renditions."""

    filename: str = ""
    renditions: tuple[int, ...] = RENDITION_HEIGHTS


def parse_renditions(value: str) -> tuple[int, ...]:
    """``"1080,720"`` → (1080, 720): known heights only, no duplicates, at least one."""
    heights: list[int] = []
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) not in RENDITION_HEIGHTS:
            allowed = ",".join(str(h) for h in RENDITION_HEIGHTS)
            raise TusError(400, f"renditions must be a comma list of {allowed}; got {value[:40]!r}")
        if int(item) in heights:
            raise TusError(400, f"renditions lists {item} twice")
        heights.append(int(item))
    return tuple(heights)


def video_options(meta: dict[str, bytes]) -> VideoOptions:
    """Filename (``filename`` or ``name``, as tus-js-client and Uppy send) and ``renditions``."""
    filename = ""
    for key in ("filename", "name"):
        if key in meta:
            try:
                filename = meta[key].decode("utf-8")
            except UnicodeDecodeError:
                raise TusError(400, f"Upload-Metadata {key} is not UTF-8") from None
            # Keep the base name only: a path from the client's disk means nothing here.
            filename = filename.replace("\\", "/").rsplit("/", 1)[-1][:255]
            if any(ord(c) < 0x20 or ord(c) == 0x7f for c in filename):
                raise TusError(400, f"Upload-Metadata {key} contains control characters")
            break
    renditions = RENDITION_HEIGHTS
    if "renditions" in meta:
        try:
            text = meta["renditions"].decode("ascii")
        except UnicodeDecodeError:
            raise TusError(400, "renditions must be ASCII") from None
        renditions = parse_renditions(text)
    return VideoOptions(filename=filename, renditions=renditions)
