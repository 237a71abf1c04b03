"""Settings shared by every component, read from environment variables with documented defaults.

Every component (ingest, operator, worker) is configured the same way, so the local stack, the
Helm chart and the tests all pass the same ``VIDUP_*`` variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from vidup import chunking


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    """An integer variable; unset or blank means ``default`` (every component reads knobs this way)."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip()
    return raw.lower() in ("1", "true", "yes", "on") if raw else default


STORAGE_KINDS = ("file", "s3")


def _storage_kind(raw: str) -> str:
    kind = raw.strip().lower() or "file"
    if kind not in STORAGE_KINDS:
        raise ValueError(f"VIDUP_STORAGE must be one of {', '.join(STORAGE_KINDS)}, not {raw!r}")
    return kind


@dataclass(frozen=True)
class Settings:
    """One place for every knob; see README "Configuration" for the table of variables."""

    #: VIDUP_REDIS_URL: queues, progress, locks and rate limits.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: VIDUP_STORAGE: where uploads and outputs live: "file" (the shared volume at
    #: VIDUP_STORAGE_DIR) or "s3" (a bucket of any S3-compatible store; see vidup.storage).
    storage: str = "file"
    #: VIDUP_STORAGE_DIR: the shared volume holding uploads/ and outputs/ (storage "file"); with
    #: "s3" a scratch directory for nothing that must outlive a process.
    storage_dir: Path = Path("/var/lib/vidup")
    #: VIDUP_S3_ENDPOINT: the S3 API's URL ("" = AWS itself). Credentials come from the standard
    #: AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...), never from VIDUP_*.
    s3_endpoint: str = ""
    #: VIDUP_S3_REGION: the bucket's region.
    s3_region: str = "us-east-1"
    #: VIDUP_S3_BUCKET: the bucket holding uploads/ and outputs/ (storage "s3").
    s3_bucket: str = ""
    #: VIDUP_S3_PREFIX: a key prefix inside the bucket, e.g. "vidup/" to share a bucket.
    s3_prefix: str = ""
    #: VIDUP_S3_PATH_STYLE: path-style URLs (endpoint/bucket/key), which most self-hosted stores need.
    s3_path_style: bool = True
    #: VIDUP_NAMESPACE: where VideoTranscode resources are created and watched.
    namespace: str = "default"
    #: VIDUP_QUEUE: the RQ queue transcode jobs go to.
    queue: str = "transcode"
    #: VIDUP_MAX_UPLOAD_SIZE: the largest upload accepted, in bytes (Tus-Max-Size).
    max_upload_size: int = 20 * 1024**3
    #: VIDUP_UPLOAD_EXPIRY_SECONDS: unfinished uploads expire after this long without progress.
    upload_expiry_seconds: int = 24 * 3600
    #: VIDUP_API_KEYS_FILE: JSON file of hashed API keys per tenant (see vidup.apikeys).
    api_keys_file: Path | None = None
    #: VIDUP_TOKEN_SECRET: HMAC secret that signs short-lived browser upload tokens.
    token_secret: str = ""
    #: VIDUP_TOKEN_TTL_SECONDS: lifetime of a browser upload token.
    token_ttl_seconds: int = 3600
    #: VIDUP_RATE_LIMIT_REQUESTS: requests per tenant (a ``limits`` string such as "600/minute").
    rate_limit_requests: str = "1200/minute"
    #: VIDUP_RATE_LIMIT_CREATIONS: upload creations per tenant.
    rate_limit_creations: str = "120/minute"
    #: VIDUP_MAX_ATTEMPTS: transcode attempts before a video is Failed.
    max_attempts: int = 3
    #: VIDUP_RETRY_BASE_SECONDS: first retry delay; each later one doubles.
    retry_base_seconds: float = 2.0
    #: VIDUP_RETRY_MAX_SECONDS: the longest retry delay.
    retry_max_seconds: float = 300.0
    #: VIDUP_KEEP_OUTPUTS: keep HLS outputs when a VideoTranscode is deleted.
    keep_outputs: bool = False
    #: VIDUP_CHUNK_SECONDS: a long video is encoded in chunks of about this many seconds (a whole
    #: number of segments), one job each, in parallel on many workers; 0 never chunks.
    chunk_seconds: int = chunking.DEFAULT_CHUNK_SECONDS
    #: VIDUP_CHUNK_MIN_CHUNKS: a video is chunked only when it is at least this many chunks long.
    chunk_min_chunks: int = 3

    @classmethod
    def from_env(cls) -> Settings:
        keys = os.environ.get("VIDUP_API_KEYS_FILE")
        d = cls()
        return cls(
            redis_url=_env("VIDUP_REDIS_URL", d.redis_url),
            storage=_storage_kind(_env("VIDUP_STORAGE", d.storage)),
            storage_dir=Path(_env("VIDUP_STORAGE_DIR", str(d.storage_dir))),
            s3_endpoint=_env("VIDUP_S3_ENDPOINT", d.s3_endpoint),
            s3_region=_env("VIDUP_S3_REGION", d.s3_region),
            s3_bucket=_env("VIDUP_S3_BUCKET", d.s3_bucket),
            s3_prefix=_env("VIDUP_S3_PREFIX", d.s3_prefix),
            s3_path_style=env_bool("VIDUP_S3_PATH_STYLE", d.s3_path_style),
            namespace=_env("VIDUP_NAMESPACE", d.namespace),
            queue=_env("VIDUP_QUEUE", d.queue),
            max_upload_size=env_int("VIDUP_MAX_UPLOAD_SIZE", d.max_upload_size),
            upload_expiry_seconds=env_int("VIDUP_UPLOAD_EXPIRY_SECONDS", d.upload_expiry_seconds),
            api_keys_file=Path(keys) if keys else None,
            token_secret=_env("VIDUP_TOKEN_SECRET", d.token_secret),
            token_ttl_seconds=env_int("VIDUP_TOKEN_TTL_SECONDS", d.token_ttl_seconds),
            rate_limit_requests=_env("VIDUP_RATE_LIMIT_REQUESTS", d.rate_limit_requests),
            rate_limit_creations=_env("VIDUP_RATE_LIMIT_CREATIONS", d.rate_limit_creations),
            max_attempts=env_int("VIDUP_MAX_ATTEMPTS", d.max_attempts),
            retry_base_seconds=env_float("VIDUP_RETRY_BASE_SECONDS", d.retry_base_seconds),
            retry_max_seconds=env_float("VIDUP_RETRY_MAX_SECONDS", d.retry_max_seconds),
            keep_outputs=env_bool("VIDUP_KEEP_OUTPUTS", d.keep_outputs),
            chunk_seconds=env_int("VIDUP_CHUNK_SECONDS", d.chunk_seconds),
            chunk_min_chunks=env_int("VIDUP_CHUNK_MIN_CHUNKS", d.chunk_min_chunks),
        )

    def to_env(self) -> dict[str, str]:
        """The inverse of :meth:`from_env`, used to hand settings to child processes."""
        names = {
            "redis_url": "VIDUP_REDIS_URL", "storage": "VIDUP_STORAGE", "storage_dir": "VIDUP_STORAGE_DIR",
            "s3_endpoint": "VIDUP_S3_ENDPOINT", "s3_region": "VIDUP_S3_REGION", "s3_bucket": "VIDUP_S3_BUCKET",
            "s3_prefix": "VIDUP_S3_PREFIX", "s3_path_style": "VIDUP_S3_PATH_STYLE",
            "namespace": "VIDUP_NAMESPACE", "queue": "VIDUP_QUEUE",
            "max_upload_size": "VIDUP_MAX_UPLOAD_SIZE",
            "upload_expiry_seconds": "VIDUP_UPLOAD_EXPIRY_SECONDS",
            "api_keys_file": "VIDUP_API_KEYS_FILE", "token_secret": "VIDUP_TOKEN_SECRET",
            "token_ttl_seconds": "VIDUP_TOKEN_TTL_SECONDS",
            "rate_limit_requests": "VIDUP_RATE_LIMIT_REQUESTS",
            "rate_limit_creations": "VIDUP_RATE_LIMIT_CREATIONS",
            "max_attempts": "VIDUP_MAX_ATTEMPTS", "retry_base_seconds": "VIDUP_RETRY_BASE_SECONDS",
            "retry_max_seconds": "VIDUP_RETRY_MAX_SECONDS", "keep_outputs": "VIDUP_KEEP_OUTPUTS",
            "chunk_seconds": "VIDUP_CHUNK_SECONDS", "chunk_min_chunks": "VIDUP_CHUNK_MIN_CHUNKS",
        }
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env[names[f.name]] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return env
