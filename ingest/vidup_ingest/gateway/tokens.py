"""``POST /api/uploads``: trade an API key for a short-lived upload token a browser may hold.

Response (200, JSON): ``{"token": "...", "expires_at": <unix seconds>, "upload_url": "<abs URL of
/files/>", "tenant": "..."}``. The token works only as ``Authorization: Bearer <token>`` on the
upload endpoint, only for that tenant, and only until it expires.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from vidup_ingest.errors import TusError
from vidup_ingest.gateway.auth import Authenticator, require_principal
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
    auth: Authenticator = current_app.extensions["vidup_auth"]
    token, expires = auth.issue_token(principal.tenant, UPLOAD_ENDPOINT)
    return jsonify(token=token, expires_at=expires, tenant=principal.tenant,
                   upload_url=request.root_url.rstrip("/") + UPLOAD_ENDPOINT)
