"""The tus endpoint (``/files/``): Flask routes that only translate HTTP to ``Uploads`` calls.

Response headers, for clients:

* ``Location`` (201): the upload URL, absolute, built from X-Forwarded-Proto/Host/Prefix.
* ``Video-Location``: on the response that completes an upload (and on HEAD of a finished one),
  the URL of ``GET /videos/<id>`` where the video's transcode can be followed.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from flask import Blueprint, Response, current_app, request

from vidup import logs
from vidup_ingest.errors import TusError
from vidup_ingest.gateway.auth import require_tenant
from vidup_ingest.gateway.ratelimit import RateLimits
from vidup_ingest.tus.headers import (
    TUS_VERSION,
    http_date,
    is_offset_stream,
    is_upload_id,
    parse_checksum,
    parse_concat,
    parse_content_length,
    parse_defer_length,
    parse_upload_length,
    parse_upload_offset,
    tus_resumable_ok,
)
from vidup_ingest.tus.protocol import UploadInfo, tus_capabilities
from vidup_ingest.tus.uploads import Body, Uploads

bp = Blueprint("tus", __name__, url_prefix="/files")


def _uploads() -> Uploads:
    return current_app.extensions["vidup_uploads"]


def _limits() -> RateLimits:
    return current_app.extensions["vidup_ratelimits"]


def upload_url(upload_id: str) -> str:
    return f"{request.root_url.rstrip('/')}/files/{upload_id}"


def video_url(upload_id: str) -> str:
    return f"{request.root_url.rstrip('/')}/videos/{upload_id}"


@bp.before_request
def _bind_upload_id() -> None:
    """Log lines of a request about one upload carry its id as ``video_id`` (the upload id is the
    video's); first, so a refused request's lines carry it too."""
    upload_id = (request.view_args or {}).get("upload_id")
    if upload_id and is_upload_id(upload_id):
        logs.bind(video_id=upload_id)


@bp.before_request
def _tus_gate() -> Response | None:
    """412 for a missing/unsupported Tus-Resumable, then auth and rate limits.

    OPTIONS is exempt from Tus-Resumable (the spec's rule), not from auth: only a CORS preflight,
    answered before any blueprint runs, goes without credentials. Probes use ``/healthz``.
    """
    if request.method != "OPTIONS" and not tus_resumable_ok(request.headers.get("Tus-Resumable")):
        raise TusError(412, f"Tus-Resumable: {TUS_VERSION} is required", {"Tus-Version": TUS_VERSION})
    tenant = require_tenant()
    _limits().check_request(tenant)
    return None


def _body_headers() -> tuple[int | None, bool]:
    """(Content-Length, whether a body is present at all)."""
    length = parse_content_length(request.headers.get("Content-Length"))
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return (None if chunked else length), bool(chunked or (length or 0) > 0)


def _interrupt_hook() -> Any:
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return None

    def interrupt() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)

    return interrupt


def _status_headers(info: UploadInfo, resp: Response) -> None:
    resp.headers["Upload-Offset"] = str(info.offset)
    if not info.complete:
        resp.headers["Upload-Expires"] = http_date(info.expires_at)
    elif not info.is_partial:
        resp.headers["Video-Location"] = video_url(info.id)


def _check_id(upload_id: str) -> None:
    if not is_upload_id(upload_id):
        raise TusError(404, "no such upload")


@bp.route("/", methods=["OPTIONS"], strict_slashes=False)
@bp.route("/<upload_id>", methods=["OPTIONS"])
def options(upload_id: str | None = None) -> Response:
    resp = Response(status=204)
    resp.headers.update(tus_capabilities(_uploads().max_size))
    return resp


@bp.route("/", methods=["POST"], strict_slashes=False)
def create() -> Response:
    uploads = _uploads()
    tenant = require_tenant()
    length = parse_upload_length(request.headers.get("Upload-Length"))
    defer = parse_defer_length(request.headers.get("Upload-Defer-Length"))
    concat = parse_concat(request.headers.get("Upload-Concat"))
    content_length, has_body = _body_headers()
    body = None
    if has_body:
        if not is_offset_stream(request.headers.get("Content-Type")):
            raise TusError(415, "a creation body needs Content-Type: application/offset+octet-stream")
        body = Body(request.environ["wsgi.input"], content_length,
                    parse_checksum(request.headers.get("Upload-Checksum")), _interrupt_hook())
    _limits().check_creation(tenant)
    info, outcome, _created = uploads.create(
        tenant, length=length, defer=defer, metadata_raw=request.headers.get("Upload-Metadata"),
        concat=concat, body=body, upload_url=upload_url,
    )
    logs.bind(video_id=info.id)
    resp = Response(status=201)
    resp.headers["Location"] = upload_url(info.id)
    if body is not None or info.complete:
        _status_headers(info, resp)
    elif not info.complete:
        resp.headers["Upload-Expires"] = http_date(info.expires_at)
    if outcome is not None and outcome.ending != "eof":
        resp.headers["Connection"] = "close"
    return resp


@bp.route("/<upload_id>", methods=["HEAD", "GET"])
def head(upload_id: str) -> Response:
    _check_id(upload_id)
    if request.method == "GET":
        raise TusError(405, "upload data is not served; use HEAD", {"Allow": "HEAD, PATCH, DELETE, OPTIONS"})
    info = _uploads().head(upload_id, require_tenant())
    resp = Response(status=200)
    resp.headers["Cache-Control"] = "no-store"
    _status_headers(info, resp)
    if info.length is not None:
        resp.headers["Upload-Length"] = str(info.length)
    else:
        resp.headers["Upload-Defer-Length"] = "1"
    if info.metadata:
        resp.headers["Upload-Metadata"] = info.metadata
    if info.is_partial:
        resp.headers["Upload-Concat"] = "partial"
    elif info.is_final:
        resp.headers["Upload-Concat"] = "final;" + " ".join(info.partial_urls)
    return resp


@bp.route("/<upload_id>", methods=["PATCH"])
def patch(upload_id: str) -> Response:
    _check_id(upload_id)
    if not is_offset_stream(request.headers.get("Content-Type")):
        raise TusError(415, "PATCH needs Content-Type: application/offset+octet-stream")
    offset = parse_upload_offset(request.headers.get("Upload-Offset"))
    new_length = parse_upload_length(request.headers.get("Upload-Length"))
    content_length, _ = _body_headers()
    body = Body(request.environ["wsgi.input"], content_length,
                parse_checksum(request.headers.get("Upload-Checksum")), _interrupt_hook())
    outcome = _uploads().patch(upload_id, require_tenant(), offset=offset, new_length=new_length, body=body)
    if outcome.ending == "stopped":
        raise TusError(409, "a newer request took this upload over; what arrived was kept",
                       {"Upload-Offset": str(outcome.info.offset), "Connection": "close"})
    resp = Response(status=204)
    _status_headers(outcome.info, resp)
    if outcome.ending != "eof":
        resp.headers["Connection"] = "close"
    return resp


@bp.route("/<upload_id>", methods=["DELETE"])
def terminate(upload_id: str) -> Response:
    _check_id(upload_id)
    _uploads().terminate(upload_id, require_tenant())
    return Response(status=204)
