"""Ingest-only knobs, read from ``VIDUP_INGEST_*`` variables (shared knobs live in vidup.settings).

=================================== ======== ==============================================
VIDUP_INGEST_WORKERS                2        gunicorn worker processes
VIDUP_INGEST_THREADS                256      threads per worker: requests served at once (a
                                             thread is taken once a request's head is in and
                                             held until its body is read and answered; one
                                             asleep in recv costs little memory)
VIDUP_INGEST_MAX_CONNECTIONS        1000     open connections per worker (heads being read,
                                             requests, kept-alive); over it a new connection
                                             is answered 503 + Retry-After at once
VIDUP_INGEST_HEADER_TIMEOUT         20       seconds a connection has to send a whole request
                                             head (read by the event loop, no thread) before
                                             408 and close; 0: gunicorn's own gthread (a
                                             thread per connection from its first byte, no
                                             deadline). See server/worker.py
VIDUP_INGEST_READ_SIZE              1048576  bytes read from the request body per step
VIDUP_INGEST_COMMIT_BYTES           67108864 checkpoint (record the offset) at least this
                                             often in mid-body; on S3 a checkpoint records the
                                             parts stored so far and waits for none
VIDUP_INGEST_FSYNC                  complete when bytes reach the disk (see storage.py):
                                             "complete": every commit survives a process
                                             crash; a finished upload is fdatasynced before
                                             its VideoTranscode is created, so it survives a
                                             node crash too. "always": fdatasync before every
                                             offset is acknowledged. "never": page cache only
                                             (tusd's policy). Meaningless with
                                             VIDUP_STORAGE=s3: every commit is a PUT, durable
                                             in the store before the offset is acknowledged
VIDUP_INGEST_S3_PART_SIZE           8388608  VIDUP_STORAGE=s3: bytes per multipart part; a
                                             writing upload holds up to three in memory (at
                                             least 5 MiB, S3's minimum; grown so the upload
                                             fits in 10000 parts). See tus/s3store.py
VIDUP_INGEST_READ_TIMEOUT           60       seconds a body read may stall before the client
                                             counts as gone (what arrived is kept)
VIDUP_INGEST_BODY_MIN_RATE          1024     bytes/s a request body must average over each
                                             rate window, or the client is cut (what arrived
                                             is kept; tus resumes); 0: no floor. See
                                             server/bodypace.py
VIDUP_INGEST_BODY_RATE_WINDOW       20       seconds over which that rate is judged
VIDUP_INGEST_LOCK_TTL               1.5      seconds a dead holder keeps an upload locked
VIDUP_INGEST_LOCK_WAIT              10       seconds a request waits for a lock before 423
VIDUP_INGEST_CLEANUP_INTERVAL       60       seconds between expiry sweeps (0 disables)
VIDUP_INGEST_CORS_ORIGINS           *        comma list of allowed Origins, or *
VIDUP_INGEST_PROXY_HOPS             1        trusted proxies for X-Forwarded-Proto/Host/Prefix
VIDUP_INGEST_SOCKET_READS           1        0 reads bodies through gunicorn's read() instead of
                                             recv_into on the socket (see bodyreader.py)
VIDUP_INGEST_TERMINATE_FINISHED     1        1: DELETE of a finished upload (tus termination)
                                             removes its bytes and deletes its VideoTranscode
                                             (the operator's finalizer cancels the work and
                                             removes the outputs); 0: finished uploads are
                                             immutable, DELETE answers 403
VIDUP_INGEST_QUOTA_UPLOADS          0        unfinished uploads a tenant may hold at once; a
                                             creation over it answers 429 (0: no limit; the
                                             chart sets 1000). See gateway/quotas.py
VIDUP_INGEST_QUOTA_BYTES            0        bytes a tenant may hold on the upload storage
                                             (unfinished uploads at their declared length,
                                             finished sources until terminated); over it 507,
                                             413 when one upload alone is larger (0: no limit)
VIDUP_INGEST_LOG_LEVEL              info     gunicorn log level
=================================== ======== ==============================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from vidup.settings import env_float, env_int

FsyncPolicy = Literal["always", "complete", "never"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "complete", "never")
#: S3 refuses smaller parts (except an upload's last).
S3_MIN_PART_SIZE = 5 << 20


@dataclass(frozen=True)
class IngestConfig:
    workers: int = 2
    threads: int = 256
    max_connections: int = 1000
    header_timeout: float = 20.0
    read_size: int = 1 << 20
    commit_bytes: int = 64 << 20
    fsync: FsyncPolicy = "complete"
    read_timeout: float = 60.0
    body_min_rate: float = 1024.0
    body_rate_window: float = 20.0
    lock_ttl: float = 1.5
    lock_wait: float = 10.0
    cleanup_interval: float = 60.0
    cors_origins: tuple[str, ...] = ("*",)
    proxy_hops: int = 1
    terminate_finished: bool = True
    quota_uploads: int = 0
    quota_bytes: int = 0
    s3_part_size: int = 8 << 20

    @classmethod
    def from_env(cls) -> IngestConfig:
        d = cls()
        fsync = os.environ.get("VIDUP_INGEST_FSYNC", "").strip().lower() or d.fsync
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"VIDUP_INGEST_FSYNC must be one of {', '.join(FSYNC_POLICIES)}")
        part_size = env_int("VIDUP_INGEST_S3_PART_SIZE", d.s3_part_size)
        if part_size < S3_MIN_PART_SIZE:
            raise ValueError(f"VIDUP_INGEST_S3_PART_SIZE must be at least {S3_MIN_PART_SIZE} (S3's minimum part)")
        origins = os.environ.get("VIDUP_INGEST_CORS_ORIGINS", "*")
        return cls(
            workers=env_int("VIDUP_INGEST_WORKERS", d.workers),
            threads=env_int("VIDUP_INGEST_THREADS", d.threads),
            max_connections=env_int("VIDUP_INGEST_MAX_CONNECTIONS", d.max_connections),
            header_timeout=env_float("VIDUP_INGEST_HEADER_TIMEOUT", d.header_timeout),
            read_size=env_int("VIDUP_INGEST_READ_SIZE", d.read_size),
            commit_bytes=env_int("VIDUP_INGEST_COMMIT_BYTES", d.commit_bytes),
            fsync=fsync,
            read_timeout=env_float("VIDUP_INGEST_READ_TIMEOUT", d.read_timeout),
            body_min_rate=env_float("VIDUP_INGEST_BODY_MIN_RATE", d.body_min_rate),
            body_rate_window=env_float("VIDUP_INGEST_BODY_RATE_WINDOW", d.body_rate_window),
            lock_ttl=env_float("VIDUP_INGEST_LOCK_TTL", d.lock_ttl),
            lock_wait=env_float("VIDUP_INGEST_LOCK_WAIT", d.lock_wait),
            cleanup_interval=env_float("VIDUP_INGEST_CLEANUP_INTERVAL", d.cleanup_interval),
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            proxy_hops=env_int("VIDUP_INGEST_PROXY_HOPS", d.proxy_hops),
            terminate_finished=env_int("VIDUP_INGEST_TERMINATE_FINISHED", int(d.terminate_finished)) != 0,
            quota_uploads=env_int("VIDUP_INGEST_QUOTA_UPLOADS", d.quota_uploads),
            quota_bytes=env_int("VIDUP_INGEST_QUOTA_BYTES", d.quota_bytes),
            s3_part_size=part_size,
        )
