"""``GET /`` serves the web app's page and ``GET /app/<file>`` its bundled assets.

The assets are built from ``ingest/webapp`` (npm, pinned by its lockfile) into ``static/`` next to
this module; nothing here is hand-copied. Hashed asset names never change content, so they are
cached for a year; the page itself is revalidated every time, so a new build is picked up at once.
The page gets a strict Content-Security-Policy: only its own scripts and styles, media from blob:
(Media Source Extensions), and no referrer, because HLS URLs carry playback tokens in their path.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from vidup_ingest.errors import TusError

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "index.html"

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "media-src 'self' blob:",
    "worker-src 'self' blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

blueprint = Blueprint("webapp", __name__)


def _secured(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@blueprint.route("/", methods=["GET", "HEAD"])
def index() -> Response:
    if not (STATIC_DIR / INDEX).is_file():
        raise TusError(404, "the web app is not built: run `make webapp` (npm) and restart the ingest")
    resp = send_from_directory(STATIC_DIR, INDEX, mimetype="text/html", max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return _secured(resp)


@blueprint.route("/app/<path:name>", methods=["GET", "HEAD"])
def asset(name: str) -> Response:
    if name == INDEX or not STATIC_DIR.is_dir():
        raise TusError(404, "no such file")
    resp = send_from_directory(STATIC_DIR, name)  # 404 for anything outside the directory
    resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return _secured(resp)
