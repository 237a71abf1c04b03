"""CORS for browser tus clients: preflights allow every tus request header, responses expose every
tus response header (Location and Upload-Expires included) so JavaScript can read them."""

from __future__ import annotations

from flask import Response, request

ALLOW_HEADERS = (
    "Authorization", "Content-Type", "Tus-Resumable", "Upload-Offset", "Upload-Length",
    "Upload-Defer-Length", "Upload-Metadata", "Upload-Concat", "Upload-Checksum", "X-Request-ID",
    "X-HTTP-Method-Override", "X-Requested-With",
)
EXPOSE_HEADERS = (
    "Location", "Upload-Offset", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata",
    "Upload-Concat", "Upload-Expires", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
    "Tus-Checksum-Algorithm", "Video-Location", "Retry-After", "X-Request-ID", "Vidup-Quota",
)
ALLOW_METHODS = ("POST", "GET", "HEAD", "PATCH", "DELETE", "OPTIONS")
MAX_AGE = "86400"


def is_preflight() -> bool:
    return (request.method == "OPTIONS" and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers)


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin in allowed


def preflight_response(allowed: tuple[str, ...]) -> Response:
    """204 for an allowed preflight (no credentials needed), 403 for an origin we do not serve."""
    origin = request.headers.get("Origin", "")
    if not origin_allowed(origin, allowed):
        return Response("origin not allowed\n", status=403, mimetype="text/plain")
    resp = Response(status=204)
    resp.headers["Access-Control-Allow-Methods"] = ", ".join(ALLOW_METHODS)
    resp.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOW_HEADERS)
    resp.headers["Access-Control-Max-Age"] = MAX_AGE
    return resp


def add_cors_headers(resp: Response, allowed: tuple[str, ...]) -> Response:
    origin = request.headers.get("Origin")
    if origin and origin_allowed(origin, allowed):
        # Echo the origin rather than "*": works whether or not the client sends credentials.
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSE_HEADERS)
        resp.vary.add("Origin")
    return resp
