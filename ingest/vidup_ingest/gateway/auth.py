"""Who is calling: ``Authorization: Bearer <API key | upload token>`` → a tenant.

API keys (server-to-server) are looked up by SHA-256 digest in the keys file, re-read when it
changes (a rotated Kubernetes Secret). Upload tokens (browsers) are minted by ``POST /api/uploads``
with a key: ``vut1.<base64url payload>.<base64url HMAC-SHA256>``, the payload naming the tenant,
the scopes the token carries and its expiry. They let a browser upload without ever holding the key.
Scopes are least privilege: ``upload`` (the tus endpoint, the default) and ``read`` (GET on the
tenant's own videos, what the web app needs to list and follow them); a token never mints tokens.
:func:`require_principal` is what every blueprint (the status API too) calls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flask import current_app, g, request

from vidup.apikeys import hash_api_key, load_api_keys_file
from vidup_ingest.errors import TusError

TOKEN_PREFIX = "vut1"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="vidup"'}


#: What each token scope lets a browser do: (path prefix, methods); None means every method.
SCOPES: dict[str, tuple[str, frozenset[str] | None]] = {
    "upload": ("/files/", None),
    "read": ("/videos/", frozenset({"GET", "HEAD"})),
}
DEFAULT_SCOPES = ("upload",)


@dataclass(frozen=True)
class Principal:
    tenant: str
    #: "key" for an API key, "token" for a signed upload token.
    kind: str
    #: For tokens: the scopes it carries (keys of :data:`SCOPES`).
    scopes: tuple[str, ...] = ()


def token_allows(scopes: tuple[str, ...], method: str, path: str) -> bool:
    """Whether a token with ``scopes`` may make this request (pure, so the rule is unit-tested)."""
    for scope in scopes:
        prefix, methods = SCOPES.get(scope, ("", frozenset()))
        if prefix and (path + "/").startswith(prefix) and (methods is None or method in methods):
            return True
    return False


def parse_scopes(requested: object) -> tuple[str, ...]:
    """The scopes a ``POST /api/uploads`` body asks for: a list of known names (400 otherwise)."""
    if requested is None:
        return DEFAULT_SCOPES
    if not isinstance(requested, list) or not requested or not all(isinstance(x, str) for x in requested):
        raise TusError(400, f"scope must be a non-empty list of: {', '.join(SCOPES)}")
    unknown = sorted(set(requested) - set(SCOPES))
    if unknown:
        raise TusError(400, f"unknown scope {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return tuple(name for name in SCOPES if name in requested)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    def __init__(self, keys_file: Path | None, token_secret: str, token_ttl: int) -> None:
        self.keys_file = keys_file
        self.secret = token_secret.encode()
        self.token_ttl = token_ttl
        self._keys: dict[str, str] = {}
        self._keys_stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def _current_keys(self) -> dict[str, str]:
        if self.keys_file is None:
            return {}
        try:
            st = self.keys_file.stat()
        except OSError:
            return self._keys
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._keys_stamp:
            with self._lock:
                try:
                    self._keys = load_api_keys_file(self.keys_file)
                    self._keys_stamp = stamp
                except (OSError, ValueError, KeyError, TypeError):
                    pass  # a half-written file: keep the previous keys
        return self._keys

    def authenticate(self, authorization: str | None) -> Principal:
        """401 unless the header carries a known API key or a valid, unexpired upload token."""
        if not authorization:
            raise TusError(401, "missing Authorization: Bearer <API key or upload token>", _CHALLENGE)
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise TusError(401, "Authorization must be 'Bearer <API key or upload token>'", _CHALLENGE)
        if credential.startswith(TOKEN_PREFIX + "."):
            return self._verify_token(credential)
        tenant = self._current_keys().get(hash_api_key(credential))
        if tenant is None:
            raise TusError(401, "unknown API key", _CHALLENGE)
        return Principal(tenant=tenant, kind="key")

    def issue_token(self, tenant: str, scopes: tuple[str, ...] = DEFAULT_SCOPES,
                    now: float | None = None) -> tuple[str, int]:
        """A signed token for ``tenant`` carrying ``scopes`` until the returned expiry."""
        if not self.secret:
            raise TusError(503, "upload tokens are not configured (VIDUP_TOKEN_SECRET is empty)")
        expires = int((now if now is not None else time.time()) + self.token_ttl)
        payload = json.dumps({"t": tenant, "s": list(scopes), "e": expires, "n": secrets.token_hex(8)},
                             separators=(",", ":")).encode()
        body = f"{TOKEN_PREFIX}.{_b64(payload)}"
        return f"{body}.{_b64(self._sign(body))}", expires

    def _sign(self, body: str) -> bytes:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).digest()

    def _verify_token(self, token: str) -> Principal:
        if not self.secret:
            raise TusError(401, "upload tokens are not accepted here", _CHALLENGE)
        parts = token.split(".")
        if len(parts) != 3:
            raise TusError(401, "malformed upload token", _CHALLENGE)
        body = f"{parts[0]}.{parts[1]}"
        try:
            signature = _unb64(parts[2])
            payload = json.loads(_unb64(parts[1]))
            tenant, expires = str(payload["t"]), int(payload["e"])
            scopes = tuple(str(x) for x in payload["s"])
        except (ValueError, KeyError, TypeError):
            raise TusError(401, "malformed upload token", _CHALLENGE) from None
        if not hmac.compare_digest(signature, self._sign(body)):
            raise TusError(401, "invalid upload token signature", _CHALLENGE)
        if expires < time.time():
            raise TusError(401, "upload token expired", _CHALLENGE)
        return Principal(tenant=tenant, kind="token", scopes=scopes)


def require_principal() -> Principal:
    """The caller of the current request, or TusError(401/403). Cached on ``flask.g``.

    Tokens are bound to their scopes: using one anywhere else (say, to mint more tokens) is a 403.
    """
    cached = getattr(g, "vidup_principal", None)
    if cached is not None:
        return cached
    auth: Authenticator = current_app.extensions["vidup_auth"]
    principal = auth.authenticate(request.headers.get("Authorization"))
    if principal.kind == "token" and not token_allows(principal.scopes, request.method, request.path):
        raise TusError(403, f"this token's scopes ({', '.join(principal.scopes)}) do not allow "
                            f"{request.method} {request.path}")
    g.vidup_principal = principal
    return principal


def require_tenant() -> str:
    """The tenant of the current request (401/403 as :func:`require_principal`)."""
    return require_principal().tenant


def check_owner(owner_tenant: str) -> None:
    """403 when the caller is not the upload's tenant: tenants never see each other's uploads."""
    if require_tenant() != owner_tenant:
        raise TusError(403, "this upload belongs to another tenant")
