"""``POST /api/uploads``: trade an API key for a short-lived upload token a browser may hold.

Body (optional JSON): ``{"scope": ["upload", "read"]}``; without it the token may only upload.
Response (200, JSON): ``{"token": "...", "expires_at": <unix seconds>, "upload_url": "<abs URL of
/files/>", "tenant": "...", "scope": [...]}``. The token works only as ``Authorization: Bearer
<token>``, only within its scopes (:data:`vidup_ingest.gateway.auth.SCOPES`), only for that tenant,
and only until it expires. A browser renews it by asking again before ``expires_at``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from vidup_ingest.errors import TusError
from vidup_ingest.gateway.auth import Authenticator, parse_scopes, require_principal
from vidup_ingest.gateway.ratelimit import RateLimits
from vidup_ingest.tus.bodyreader import open_body

bp = Blueprint("api", __name__, url_prefix="/api")

UPLOAD_ENDPOINT = "/files/"
#: The most a token request's body may hold (a scope list takes a few dozen bytes).
MAX_BODY = 16 * 1024


@bp.route("/uploads", methods=["POST"])
def issue_upload_token() -> Response:
    principal = require_principal()
    if principal.kind != "key":
        raise TusError(403, "upload tokens can only be requested with an API key")
    limits: RateLimits = current_app.extensions["vidup_ratelimits"]
    limits.check_request(principal.tenant)
    body = _json_body() if request.content_length else None
    if request.content_length and not isinstance(body, dict):
        raise TusError(400, 'the body must be a JSON object such as {"scope": ["upload", "read"]}')
    scopes = parse_scopes((body or {}).get("scope"))
    auth: Authenticator = current_app.extensions["vidup_auth"]
    token, expires = auth.issue_token(principal.tenant, scopes)
    return jsonify(token=token, expires_at=expires, tenant=principal.tenant, scope=list(scopes),
                   upload_url=request.root_url.rstrip("/") + UPLOAD_ENDPOINT)


def _json_body() -> Any:
    """The JSON body (None when it is not JSON), read like an upload's body (``open_body``):
    within the ingest's read timeout and minimum rate, so a client that declares a body and never
    sends it is cut off instead of holding a thread forever; at most ``MAX_BODY`` bytes."""
    length = request.content_length or 0
    if length > MAX_BODY:
        raise TusError(413, f"the body may hold at most {MAX_BODY} bytes")
    if not request.is_json:
        return None
    reader = open_body(request.environ["wsgi.input"], current_app.extensions["vidup_config"])
    data = bytearray(length)
    view, got = memoryview(data), 0
    try:
        while got < length:
            n = reader.readinto(view[got:])
            if n == 0:
                break
            got += n
    except TimeoutError:
        raise TusError(408, "the body did not arrive in time", {"Connection": "close"}) from None
    except Exception:  # the client went away: gunicorn and the socket each raise their own
        raise TusError(400, "the body could not be read", {"Connection": "close"}) from None
    finally:
        reader.close()
    if got < length:
        raise TusError(400, "the body is shorter than its Content-Length", {"Connection": "close"})
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
