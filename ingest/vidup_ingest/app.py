"""The Flask app factory: wires storage, locks, auth, rate limits and the handover into
``app.extensions`` and registers the blueprints.

One sub-package per concern, each with its own blueprint: ``tus`` (the upload protocol),
``gateway`` (auth, CORS, rate limits, browser tokens), ``videos`` (status API, live progress, HLS)
and ``webapp`` (the browser page). Blueprints use ``vidup_ingest.gateway.auth.require_tenant`` /
``check_owner`` for the same 401/403 rules, and
``current_app.extensions["vidup_ratelimits"].check_request(tenant)`` for the same limits.
Raise :class:`vidup_ingest.errors.TusError` for any client error; it becomes a plain-text answer.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import time
import uuid
from typing import Any

import redis
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from vidup import logs
from vidup.settings import Settings
from vidup.storage import S3Blobs, open_blobs
from vidup_ingest import metrics
from vidup_ingest.config import IngestConfig
from vidup_ingest.errors import TusError
from vidup_ingest.gateway import cors, tokens
from vidup_ingest.gateway.auth import Authenticator
from vidup_ingest.gateway.quotas import QuotaBook
from vidup_ingest.gateway.ratelimit import RateLimits
from vidup_ingest.tus import routes as tus_routes
from vidup_ingest.tus.cleanup import Sweeper
from vidup_ingest.tus.handover import Handover
from vidup_ingest.tus.headers import TUS_VERSION
from vidup_ingest.tus.locks import LockManager
from vidup_ingest.tus.s3store import S3Storage
from vidup_ingest.tus.storage import LocalStorage, Storage
from vidup_ingest.tus.uploads import Uploads
from vidup_ingest.videos import routes as videos_routes
from vidup_ingest.webapp import routes as webapp_routes

log = logging.getLogger(__name__)


class MethodOverride:
    """Honour ``X-HTTP-Method-Override`` whatever the real method is (clients behind proxies that
    only pass GET/POST send PATCH/DELETE/HEAD this way)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        override = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", "").strip().upper()
        if not override:
            return self.app(environ, start_response)
        wire_method, environ["REQUEST_METHOD"] = environ.get("REQUEST_METHOD", ""), override
        if override != "HEAD" or wire_method == "HEAD":
            return self.app(environ, start_response)

        def bodyless(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # The app answers HEAD, so no body follows, but the server frames the answer by the
            # method on the wire: announce the empty body actually sent, not the length a GET's
            # body would have (the client would wait for bytes that never come).
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", "0")]
            return start_response(status, headers, exc_info)

        return self.app(environ, bodyless)


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    resp = Response(message.rstrip("\n") + "\n", status=status, mimetype="text/plain")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _has_unread_body() -> bool:
    te = request.headers.get("Transfer-Encoding", "").lower()
    cl = request.headers.get("Content-Length", "0").strip()
    return "chunked" in te or (cl.isdigit() and int(cl) > 0)


def create_app(settings: Settings | None = None, config: IngestConfig | None = None,
               start_background: bool = True) -> Flask:
    settings = settings or Settings.from_env()
    config = config or IngestConfig.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = None  # bodies are streamed; sizes are checked by the protocol

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=30)
    storage: Storage
    # One store client for the upload store and the HLS routes (a pooled boto3 client on S3).
    blobs = app.extensions["vidup_blobs"] = open_blobs(settings)
    if isinstance(blobs, S3Blobs):
        storage = S3Storage(blobs, part_size=config.s3_part_size, max_size=settings.max_upload_size)
        where = f"s3:{settings.s3_endpoint}/{settings.s3_bucket}/{settings.s3_prefix}"
    else:
        storage = LocalStorage(settings.storage_dir, fsync=config.fsync)
        where = str(settings.storage_dir.resolve())
    locks = LockManager(client, ttl=config.lock_ttl, wait=config.lock_wait)
    # Keys that belong to the upload store name it (the shared volume, or the endpoint, bucket and
    # prefix), so unrelated stacks on one Redis stay apart (replicas share the same settings).
    volume = hashlib.sha256(where.encode()).hexdigest()[:16]
    quotas = QuotaBook(client, config.quota_uploads, config.quota_bytes, namespace=f"vidup:ingest:quota:{volume}")
    uploads = Uploads(storage, locks, Handover(settings.namespace), config,
                      max_size=settings.max_upload_size, expiry_seconds=settings.upload_expiry_seconds,
                      quotas=quotas)
    app.extensions["vidup_settings"] = settings
    app.extensions["vidup_config"] = config
    app.extensions["vidup_redis"] = client
    app.extensions["vidup_uploads"] = uploads
    app.extensions["vidup_auth"] = Authenticator(settings.api_keys_file, settings.token_secret,
                                                 settings.token_ttl_seconds)
    app.extensions["vidup_ratelimits"] = RateLimits(settings.redis_url, settings.rate_limit_requests,
                                                    settings.rate_limit_creations)

    @app.before_request
    def _start_clock() -> None:
        g.vidup_request_started = time.perf_counter()  # first, so a preflight answer is timed too

    @app.before_request
    def _bind_request_id() -> None:
        # Before the preflight hook, so every answer carries an id and every log line of the request.
        given = request.headers.get("X-Request-ID", "")
        g.vidup_request_id = given if 0 < len(given) <= 200 and given.isprintable() else uuid.uuid4().hex
        logs.start(request_id=g.vidup_request_id)

    @app.before_request
    def _preflight() -> Response | None:
        if cors.is_preflight():
            return cors.preflight_response(config.cors_origins)
        return None

    @app.after_request
    def _common_headers(resp: Response) -> Response:
        resp.headers["Tus-Resumable"] = TUS_VERSION
        if resp.status_code in (201, 204) or request.method == "HEAD":
            resp.headers.pop("Content-Type", None)  # no body, no type
        request_id = g.get("vidup_request_id")
        if request_id:
            resp.headers["X-Request-ID"] = request_id
        if resp.status_code >= 400 and _has_unread_body():
            # We did not read the body: don't let gunicorn drain gigabytes before the next request.
            resp.headers["Connection"] = "close"
        resp = cors.add_cors_headers(resp, config.cors_origins)
        started = g.get("vidup_request_started")
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else None
            metrics.REQUEST_DURATION.labels(metrics.route_label(rule), request.method, str(resp.status_code)).observe(
                time.perf_counter() - started)
        return resp

    @app.errorhandler(TusError)
    def _tus_error(exc: TusError) -> Response:
        return _plain(exc.status, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        resp = _plain(exc.code or 400, exc.description or exc.name)
        if exc.code == 405:
            allow = exc.get_headers().__iter__()
            for k, v in allow:
                if k.lower() == "allow":
                    resp.headers["Allow"] = v
        return resp

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError) -> Response:
        log.error("redis unavailable: %s", exc)
        return _plain(503, "the upload service's coordination store is unavailable; retry shortly",
                      {"Retry-After": "5"})

    @app.errorhandler(OSError)
    def _storage_error(exc: OSError) -> Response:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("storage full: %s", exc)
            return _plain(507, "storage is full; retry later", {"Retry-After": "60"})
        log.exception("storage error")
        return _plain(503, "storage is unavailable; retry shortly", {"Retry-After": "5"})

    @app.route("/healthz", methods=["GET"])
    def healthz() -> Response:
        return _plain(200, "ok")

    app.register_blueprint(tus_routes.bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(videos_routes.blueprint)
    app.register_blueprint(webapp_routes.blueprint)

    if start_background:
        # One sweeper per shared volume, so unrelated stacks on one Redis do not starve each other.
        Sweeper(uploads, client, config.cleanup_interval, key=f"vidup:ingest:sweep:{volume}").start()

    wsgi: Any = ProxyFix(app.wsgi_app, x_for=config.proxy_hops, x_proto=config.proxy_hops,
                         x_host=config.proxy_hops, x_prefix=config.proxy_hops)
    app.wsgi_app = MethodOverride(wsgi)  # type: ignore[method-assign]
    return app
