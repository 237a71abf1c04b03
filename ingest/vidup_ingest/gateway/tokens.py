"""``POST /api/uploads``: trade an API key for a short-lived upload token a browser may hold.

Body (optional JSON): ``{"scope": ["upload", "read"]}``; without it the token may only upload.
Response (200, JSON): ``{"token": "...", "expires_at": <unix seconds>, "upload_url": "<abs URL of
/files/>", "tenant": "...", "scope": [...]}``. The token works only as ``Authorization: Bearer
<token>``, only within its scopes (:data:`vidup_ingest.gateway.auth.SCOPES`), only for that tenant,
and only until it expires. A browser renews it by asking again before ``expires_at``.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from vidup_ingest.errors import TusError
from vidup_ingest.gateway.auth import Authenticator, parse_scopes, require_principal
from vidup_ingest.gateway.ratelimit import RateLimits

bp = Blueprint("api", __name__, url_prefix="/api")

UPLOAD_ENDPOINT = "/files/"


@bp.route("/uploads", methods=["POST"])
def issue_upload_token() -> Response:
    principal = require_principal()
    if principal.kind != "key":
        raise TusError(403, "upload tokens can only be requested with an API key")
    limits: RateLimits = current_app.extensions["vidup_ratelimits"]
    limits.check_request(principal.tenant)
    body = request.get_json(silent=True) if request.content_length else None
    if request.content_length and not isinstance(body, dict):
        raise TusError(400, 'the body must be a JSON object such as {"scope": ["upload", "read"]}')
    scopes = parse_scopes((body or {}).get("scope"))
    auth: Authenticator = current_app.extensions["vidup_auth"]
    token, expires = auth.issue_token(principal.tenant, scopes)
    return jsonify(token=token, expires_at=expires, tenant=principal.tenant, scope=list(scopes),
                   upload_url=request.root_url.rstrip("/") + UPLOAD_ENDPOINT)
