"""Signed, expiring playback tokens carried in the HLS URL path.

Why a token in the *path*: HLS players fetch every playlist and segment themselves; they cannot
add an ``Authorization`` header to each request, and relative URIs inside a playlist drop the
query string. ``/videos/<id>/hls/<token>/master.m3u8`` keeps the token in every relative URI.

Why not the ingest's upload tokens (``vidup_ingest.gateway.auth``): those carry a random nonce and a JSON
payload. A playback URL should be short and *stable* for a while — the same URL for every status
poll lets players and caches reuse segments and keeps status documents comparable — so the
expiry is rounded up to a window and the token is ``<expiry>.<HMAC>``. It uses the same
``VIDUP_TOKEN_SECRET``, with a derived key so a playback signature can never pass as an upload
token's signature (or the other way round). A token names one video: the signed message is the
video id and the expiry, and only the video's tenant is ever given one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time

from vidup.settings import env_int

#: VIDUP_PLAYBACK_TOKEN_TTL_SECONDS: the least time a playback URL stays valid (default 6 hours,
#: long enough to watch a long video with pauses).
DEFAULT_TTL_SECONDS = 6 * 3600
#: Expiries are rounded up to this window, so URLs issued within it are identical.
WINDOW_SECONDS = 900

_TOKEN_RE = re.compile(r"^(\d{1,12})\.([A-Za-z0-9_-]{43})$")
_KEY_LABEL = b"vidup playback token v1"


class PlaybackTokenError(ValueError):
    """The token is malformed, forged, for another video, or expired (the message says which)."""


def ttl_from_env() -> int:
    return env_int("VIDUP_PLAYBACK_TOKEN_TTL_SECONDS", DEFAULT_TTL_SECONDS)


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _signature(secret: str, video_id: str, expires: int) -> str:
    mac = hmac.new(_key(secret), f"{video_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def issue(secret: str, video_id: str, ttl_seconds: int = DEFAULT_TTL_SECONDS, now: float | None = None) -> str:
    """A token for ``video_id`` valid for at least ``ttl_seconds`` (at most one window more)."""
    if not secret:
        raise ValueError("playback tokens need VIDUP_TOKEN_SECRET")
    current = time.time() if now is None else now
    expires = math.ceil((current + ttl_seconds) / WINDOW_SECONDS) * WINDOW_SECONDS
    return f"{expires}.{_signature(secret, video_id, expires)}"


def verify(secret: str, video_id: str, token: str, now: float | None = None) -> int:
    """The token's expiry (unix seconds) if it is valid for ``video_id`` now; else PlaybackTokenError."""
    if not secret:
        raise PlaybackTokenError("playback tokens are not configured")
    match = _TOKEN_RE.match(token)
    if not match:
        raise PlaybackTokenError("malformed playback token")
    expires = int(match.group(1))
    if not hmac.compare_digest(match.group(2), _signature(secret, video_id, expires)):
        raise PlaybackTokenError("invalid playback token")
    if expires < (time.time() if now is None else now):
        raise PlaybackTokenError("playback token expired; fetch the video's status for a fresh URL")
    return expires


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has a playback token's shape (to tell it from an API key in ``?token=``)."""
    return bool(_TOKEN_RE.match(text))
