"""The status API, HLS serving and live progress, all read from VideoTranscode resources.

Routes (tenant-scoped with the upload API's auth, ``vidup_ingest.gateway.auth``: 401 without credentials,
403 for another tenant's video, 404 for an unknown one):

* ``GET /videos?limit=N&continue=T`` — the caller's videos, one page at a time (Kubernetes
  ``limit``/``continue`` on the tenant label); ``continue`` is null on the last page.
* ``GET /videos/<id>`` — the status document (:mod:`vidup_ingest.videos.status`).
* ``GET /videos/<id>/events`` — a WebSocket sending the status document on every change of the
  resource until it is COMPLETED or FAILED, then closing (1000). Without an ``Upgrade`` header
  the same URL answers Server-Sent Events (``data: <document>``) for clients without WebSockets.
  Browsers can't set headers on a WebSocket, so ``?token=`` works in place of the header: either
  the ``events_url`` of the status document (it carries the video's playback token) or anything
  valid as ``Authorization: Bearer``.
* ``GET /videos/<id>/hls/<playback token>/<file>`` — the HLS output (playlists, segments, the
  poster) with range requests and CORS. The token in the path (:mod:`vidup_ingest.videos.playback_tokens`)
  is the only credential, so a player needs no headers; the document's ``master_playlist_url`` is
  such a URL, absolute, built from the request (``X-Forwarded-Proto/Host/Prefix`` honoured).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from flask import Blueprint, Response, current_app, jsonify, request, send_file, stream_with_context
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.security import safe_join

from vidup import logs
from vidup.resource import is_valid_name
from vidup.settings import Settings, env_int
from vidup.storage import BlobNotFound, Blobs, FileBlobs, S3Blobs, open_blobs
from vidup.storage import layout as storage_layout
from vidup_ingest.errors import TusError
from vidup_ingest.gateway.auth import check_owner, require_tenant
from vidup_ingest.gateway.ratelimit import RateLimits
from vidup_ingest.videos import playback_tokens
from vidup_ingest.videos.status import TERMINAL_STATUSES, VideoUrls, list_document, status_document, tenant_of
from vidup_ingest.videos.store import VideoStore, WatchExpired

log = logging.getLogger(__name__)

blueprint = Blueprint("videos", __name__, url_prefix="/videos")

DEFAULT_PAGE = 50
MAX_PAGE = 500
#: Seconds one watch request stays open; between watches a gone client is noticed.
WATCH_SECONDS = 20
#: WebSocket pings keep proxies from closing an idle connection while a video waits in the queue.
PING_SECONDS = 25
#: Seconds a client has to answer the server's WebSocket close frame.
CLOSE_WAIT_SECONDS = 2

#: Players read these on cross-origin range requests; the app's CORS list is about tus headers.
HLS_EXPOSE_HEADERS = ("Content-Range", "Content-Length", "Accept-Ranges", "ETag")
HLS_ALLOW_HEADERS = ("Range", "If-None-Match", "If-Modified-Since")
#: Bytes read from the store per write to the client when an object is streamed.
STREAM_CHUNK_BYTES = 256 << 10


@blueprint.record_once
def _setup(state: BlueprintSetupState) -> None:
    app = state.app
    settings: Settings = app.extensions["vidup_settings"]
    app.extensions["vidup_videos"] = VideoStore(settings.namespace)
    app.extensions["vidup_playback_ttl"] = playback_tokens.ttl_from_env()
    # The HLS package's store; the app may have opened it already (the TUS store shares it).
    app.extensions.setdefault("vidup_blobs", open_blobs(settings))
    app.extensions["vidup_hls_redirect_seconds"] = max(0, env_int("VIDUP_HLS_REDIRECT_SECONDS", 0))
    # Flask runs app-wide after_request functions last-registered-first: put ours first in the
    # list so it runs after the app's CORS hook and extends (not replaces) what that one set.
    app.after_request_funcs.setdefault(None, []).insert(0, _hls_cors)


@blueprint.before_request
def _bind_video_id() -> None:
    """Log lines of a request about one video carry its id (a status poll, live progress, HLS)."""
    video_id = (request.view_args or {}).get("video_id")
    if video_id and is_valid_name(video_id):
        logs.bind(video_id=video_id)


def _hls_cors(resp: Response) -> Response:
    if not request.path.startswith("/videos/"):
        return resp
    if "Access-Control-Allow-Headers" in resp.headers:  # a preflight the app answered
        resp.headers["Access-Control-Allow-Headers"] = _merge(resp.headers["Access-Control-Allow-Headers"],
                                                              HLS_ALLOW_HEADERS)
    if "Access-Control-Allow-Origin" in resp.headers:
        resp.headers["Access-Control-Expose-Headers"] = _merge(
            resp.headers.get("Access-Control-Expose-Headers", ""), HLS_EXPOSE_HEADERS)
    return resp


def _merge(existing: str, extra: tuple[str, ...]) -> str:
    names = [h.strip() for h in existing.split(",") if h.strip()]
    lower = {n.lower() for n in names}
    return ", ".join(names + [h for h in extra if h.lower() not in lower])


# -- helpers -----------------------------------------------------------------------------------


def _store() -> VideoStore:
    return current_app.extensions["vidup_videos"]


def _settings() -> Settings:
    return current_app.extensions["vidup_settings"]


def _limits() -> RateLimits:
    return current_app.extensions["vidup_ratelimits"]


def _root() -> str:
    return request.root_url.rstrip("/")


def urls_for(obj: dict[str, Any]) -> VideoUrls:
    """Absolute links for one video, with a playback token when tokens are configured."""
    video_id = str((obj.get("metadata") or {}).get("name", ""))
    root = _root()
    self_url = f"{root}/videos/{video_id}"
    ws_root = "wss" + root[len("https"):] if root.startswith("https") else "ws" + root[len("http"):]
    secret = _settings().token_secret
    if not secret:
        return VideoUrls(self_url=self_url, events_url=f"{ws_root}/videos/{video_id}/events", hls_base="")
    token = playback_tokens.issue(secret, video_id, current_app.extensions["vidup_playback_ttl"])
    return VideoUrls(
        self_url=self_url,
        events_url=f"{ws_root}/videos/{video_id}/events?token={token}",
        hls_base=f"{self_url}/hls/{token}/",
    )


def _owned_video(video_id: str) -> dict[str, Any]:
    """The caller's resource: 401 without credentials, 404 if unknown, 403 if another tenant's."""
    tenant = require_tenant()
    _limits().check_request(tenant)
    if not is_valid_name(video_id):
        raise TusError(404, "no such video")
    obj = _store().get(video_id)
    if obj is None:
        raise TusError(404, "no such video")
    if tenant_of(obj) != tenant:
        check_owner(tenant_of(obj))
    return obj


def _events_video(video_id: str) -> dict[str, Any]:
    """Like :func:`_owned_video`, also accepting ``?token=`` (a playback token or a Bearer credential)."""
    token = request.args.get("token", "").strip()
    if token and not request.headers.get("Authorization"):
        if playback_tokens.looks_like_token(token):
            try:
                playback_tokens.verify(_settings().token_secret, video_id, token)
            except playback_tokens.PlaybackTokenError as exc:
                raise TusError(403, str(exc)) from None
            obj = _store().get(video_id)
            if obj is None:
                raise TusError(404, "no such video")
            _limits().check_request(tenant_of(obj))
            return obj
        # Same rules as the header, by construction: the auth helper reads this header.
        request.environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return _owned_video(video_id)


# -- status ------------------------------------------------------------------------------------


@blueprint.route("", methods=["GET"], strict_slashes=False)
def list_videos() -> Response:
    tenant = require_tenant()
    _limits().check_request(tenant)
    raw_limit = request.args.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise TusError(400, f"limit must be an integer from 1 to {MAX_PAGE}")
    items, next_token = _store().list_page(tenant, int(raw_limit), request.args.get("continue") or None)
    return jsonify(list_document(items, urls_for, next_token))


@blueprint.route("/<video_id>", methods=["GET"])
def get_video(video_id: str) -> Response:
    obj = _owned_video(video_id)
    resp = jsonify(status_document(obj, urls_for(obj)))
    resp.headers["Cache-Control"] = "no-store"
    return resp


# -- live progress -----------------------------------------------------------------------------


def updates(store: VideoStore, video_id: str, obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """``("status", document)`` whenever the resource's status changes (first: the current one),
    ``("idle", None)`` after each quiet watch period, ``("deleted", None)`` if it goes away.
    Ends after a COMPLETED or FAILED document."""
    last: Any = object()

    def changed(current: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal last
        status = current.get("status")
        if status == last:
            return None
        last = status
        return status_document(current, urls_for(current))

    doc = changed(obj)
    assert doc is not None
    yield "status", doc
    if doc["status"] in TERMINAL_STATUSES:
        return
    version = str(obj["metadata"]["resourceVersion"])
    while True:
        try:
            for kind, current in store.watch(video_id, version, WATCH_SECONDS):
                version = str((current.get("metadata") or {}).get("resourceVersion", version))
                if kind == "DELETED":
                    yield "deleted", None
                    return
                if kind not in ("ADDED", "MODIFIED"):
                    continue
                doc = changed(current)
                if doc is not None:
                    yield "status", doc
                    if doc["status"] in TERMINAL_STATUSES:
                        return
        except WatchExpired:
            fresh = store.get(video_id)
            if fresh is None:
                yield "deleted", None
                return
            version = str(fresh["metadata"]["resourceVersion"])
            doc = changed(fresh)
            if doc is not None:
                yield "status", doc
                if doc["status"] in TERMINAL_STATUSES:
                    return
            continue
        yield "idle", None


class _WebSocketDone(Response):
    """What a WebSocket view returns: the socket is already answered and closed, so the server
    must write nothing more (flask-sock's approach; gunicorn ends the connection on StopIteration)."""

    mode = "unknown"

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self.mode == "gunicorn":
            raise StopIteration()
        if self.mode == "werkzeug":
            return super().__call__(environ, start_response)
        return []


@blueprint.route("/<video_id>/events", methods=["GET"], websocket=True)
def events_websocket(video_id: str) -> Response:
    from simple_websocket import ConnectionClosed, Server  # type: ignore[import-untyped]
    from simple_websocket.errors import SimpleWebsocketError  # type: ignore[import-untyped]
    from wsproto.events import RejectConnection
    from wsproto.utilities import ProtocolError

    obj = _events_video(video_id)  # errors are plain HTTP answers, before the handshake
    store = _store()
    try:
        ws = Server(request.environ, ping_interval=PING_SECONDS)
    except (ProtocolError, SimpleWebsocketError, ValueError) as exc:
        # A handshake wsproto refuses (no key, another version, a malformed extension): nothing
        # was sent yet, so the answer is still plain HTTP, with the status wsproto suggests.
        hint = getattr(exc, "event_hint", None)
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        raise TusError(status, f"bad WebSocket handshake: {exc}",
                       {"Sec-WebSocket-Version": "13"} if status == 426 else {}) from None
    try:
        for kind, doc in updates(store, video_id, obj):
            if not ws.connected:
                break
            if kind == "status":
                ws.send(json.dumps(doc))
            elif kind == "deleted":
                ws.send(json.dumps({"id": video_id, "deleted": True}))
        ws.close(reason=1000, message="done")
    except (ConnectionClosed, OSError):  # the client went; its reader thread may have closed the socket
        pass
    except TusError as exc:
        log.warning("events for %s stopped: %s", video_id, exc.message)
        with contextlib.suppress(ConnectionClosed, OSError):  # the client may be gone too
            ws.close(reason=1011, message=exc.message[:100])
    _wait_closed(ws)
    done = _WebSocketDone()
    done.mode = ws.mode
    return done


def _wait_closed(ws: Any) -> None:
    """Return the connection to the server only once the socket is closed: simple_websocket's
    reader thread closes it when the closing handshake ends, and a server that went on to close (or
    poll) the same socket meanwhile would race it (its file descriptor gets reused). A client that
    does not answer the close frame within ``CLOSE_WAIT_SECONDS`` is cut off."""
    ws.thread.join(CLOSE_WAIT_SECONDS)
    if ws.thread.is_alive():
        with contextlib.suppress(OSError):
            ws.sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end and closes the socket
        ws.thread.join(CLOSE_WAIT_SECONDS)


@blueprint.route("/<video_id>/events", methods=["GET"])
def events_sse(video_id: str) -> Response:
    """Server-Sent Events fallback: the same documents as ``data:`` lines, ``: idle`` heartbeats."""
    obj = _events_video(video_id)
    store = _store()

    def stream() -> Iterator[str]:
        try:
            for kind, doc in updates(store, video_id, obj):
                if kind == "status":
                    yield f"event: status\ndata: {json.dumps(doc)}\n\n"
                elif kind == "deleted":
                    yield f"event: deleted\ndata: {json.dumps({'id': video_id, 'deleted': True})}\n\n"
                else:
                    yield ": idle\n\n"
        except TusError as exc:
            yield f"event: error\ndata: {json.dumps({'error': exc.message})}\n\n"

    resp = Response(stream_with_context(stream()), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


# -- HLS ---------------------------------------------------------------------------------------


@blueprint.route("/<video_id>/hls/<token>/<path:file>", methods=["GET", "HEAD"])
def hls_file(video_id: str, token: str, file: str) -> Response:
    if not is_valid_name(video_id):
        raise TusError(404, "no such video")
    try:
        playback_tokens.verify(_settings().token_secret, video_id, token)
    except playback_tokens.PlaybackTokenError as exc:
        raise TusError(403, str(exc)) from None
    content_type = storage_layout.CONTENT_TYPES.get(Path(file).suffix.lower())
    if content_type is None:
        raise TusError(404, "no such file")
    playlist = content_type == storage_layout.CONTENT_TYPES[".m3u8"]
    blobs = _blobs()
    if isinstance(blobs, FileBlobs):
        path = _output_file(blobs.root, video_id, file)
        try:
            resp = send_file(path, mimetype=content_type, conditional=True, etag=True,
                             max_age=None if playlist else 3600)
        except RequestedRangeNotSatisfiable as exc:
            # The app's error handler answers plain text; keep the header RFC 9110 asks for.
            raise TusError(416, "requested range not satisfiable",
                           {"Content-Range": f"bytes */{exc.length}"} if exc.length is not None else {}) from None
    else:
        key = _output_key(video_id, file)
        if not playlist and _redirect_seconds() and isinstance(blobs, S3Blobs):
            return _redirect_to_object(blobs, key)
        resp = _stream_object(blobs, key, content_type)
    resp.headers["Cache-Control"] = "no-cache" if playlist else "private, max-age=3600"
    return resp


def _blobs() -> Blobs:
    return current_app.extensions["vidup_blobs"]


def _redirect_seconds() -> int:
    return int(current_app.extensions["vidup_hls_redirect_seconds"])


def _output_file(storage_dir: Path, video_id: str, file: str) -> Path:
    """The file inside the video's output directory; 404 for anything outside it or missing."""
    try:
        root = storage_layout.resolve(storage_dir, storage_layout.output_relpath(video_id))
    except ValueError:
        raise TusError(404, "no such file") from None
    joined = safe_join(str(root), file) if "\x00" not in file else None
    if joined is None:
        raise TusError(404, "no such file")
    try:
        path = Path(joined).resolve()
        found = root in path.parents and path.is_file()
    except (OSError, ValueError):  # a name the filesystem can't even look up
        found = False
    if not found:
        raise TusError(404, "no such file")
    return path


def _output_key(video_id: str, file: str) -> str:
    """The object key of a file of the video's package; 404 for any name that is not a plain
    relative path (no empty, dot or hidden parts, no NUL or backslash): an object store has no
    ``..``, but a key must still never reach outside ``outputs/<id>/``."""
    parts = file.split("/")
    if "\x00" in file or "\\" in file or any(not part or part.startswith(".") for part in parts):
        raise TusError(404, "no such file")
    return f"{storage_layout.output_relpath(video_id)}/{file}"


def _stream_object(blobs: Blobs, key: str, content_type: str) -> Response:
    """An object streamed through the ingest with what ``send_file`` gives a file: one byte range
    (206, ``Content-Range``; 416 past the end), ``ETag`` with ``If-None-Match`` and
    ``If-Modified-Since`` (304), HEAD. Memory is one chunk per response, whatever the object's size.

    Why streaming rather than redirecting to the bucket: see README "Storage" (a player then needs no
    route to the store, which in a cluster is usually not reachable from browsers, and the bucket
    needs no CORS rules; it costs the ingest the bytes, measured there)."""
    ranges = request.range.ranges if request.range is not None and request.range.units == "bytes" else []
    single = ranges[0] if len(ranges) == 1 else None  # several ranges: the whole object (RFC 9110 allows)
    start, end = 0, None
    try:
        if single is not None:
            first, stop = single
            if first < 0:  # "bytes=-N": the last N bytes, which needs the size
                size = blobs.size(key)
                if size is None:
                    raise BlobNotFound(key)
                if size == 0:
                    raise ValueError("a suffix range of an empty object")
                start, end = max(size + first, 0), size - 1
            else:
                start, end = first, None if stop is None else stop - 1
        blob = blobs.open_range(key, start, end)
    except BlobNotFound:
        raise TusError(404, "no such file") from None
    except ValueError:
        size = blobs.size(key)
        if size is None:
            raise TusError(404, "no such file") from None
        raise TusError(416, "requested range not satisfiable", {"Content-Range": f"bytes */{size}"}) from None
    etag = blob.etag
    modified = int(blob.modified)
    not_modified = (
        request.if_none_match.contains_weak(etag) if request.if_none_match
        else request.if_modified_since is not None and modified <= int(request.if_modified_since.timestamp())
    )
    if not_modified or request.method == "HEAD":
        blob.body.close()
        resp = Response(status=304) if not_modified else Response(b"", mimetype=content_type)
        if not not_modified:
            resp.headers["Content-Length"] = str(blob.length)
    else:
        resp = Response(_chunks(blob.body), mimetype=content_type, direct_passthrough=True)
        resp.headers["Content-Length"] = str(blob.length)
        resp.call_on_close(blob.body.close)
    if single is not None and not not_modified:
        resp.status_code = 206
        resp.headers["Content-Range"] = f"bytes {blob.start}-{blob.start + blob.length - 1}/{blob.size}"
    resp.headers["Accept-Ranges"] = "bytes"
    resp.set_etag(etag)
    if modified:
        resp.last_modified = datetime.fromtimestamp(modified, tz=UTC)
    return resp


def _chunks(body: BinaryIO, size: int = STREAM_CHUNK_BYTES) -> Iterator[bytes]:
    while chunk := body.read(size):
        yield chunk


def _redirect_to_object(blobs: S3Blobs, key: str) -> Response:
    """``VIDUP_HLS_REDIRECT_SECONDS`` > 0: a segment or poster answers 302 to a presigned URL of
    the object that long-lived; for stores whose endpoint players can reach and whose bucket has
    CORS rules (README "Storage"). Playlists are always answered by the ingest, so the token in
    their URLs stays the only credential a player holds for longer than a segment."""
    # The object's own Content-Type (the worker sets it on upload) answers; a response-content-type
    # override would be one more signed parameter some stores' SigV2 checks get wrong (SeaweedFS).
    url = blobs.client.generate_presigned_url(
        "get_object", ExpiresIn=_redirect_seconds(), Params={"Bucket": blobs.bucket, "Key": blobs.key(key)})
    resp = Response(status=302)
    resp.headers["Location"] = url
    resp.headers["Cache-Control"] = "no-store"
    return resp
