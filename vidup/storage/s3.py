"""Blobs in an S3-compatible bucket (AWS, SeaweedFS, MinIO, Ceph RGW, ...), through boto3.

boto3 is the reference S3 client: SigV4 signing, retries with backoff, multipart and ranged reads,
the standard credential chain (AWS_* variables, a mounted profile, IRSA) are all there, well kept
and tested against every store people use, which a hand-written client would have to earn.

Keys are the storage layout's relative paths under an optional ``VIDUP_S3_PREFIX``. The client asks
for checksums only where S3 requires them (``when_required``): several self-hosted stores reject
the CRC trailers newer SDKs add by default, and TUS bodies carry their own checksums anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from vidup.settings import Settings
from vidup.storage.blobs import BlobNotFound, BlobRange

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Enough pooled connections for an ingest's threads and a worker's parallel segment uploads.
POOL_CONNECTIONS = 64
#: Objects at most this large go up in one PUT; larger ones as parallel multipart uploads.
_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def not_found(exc: ClientError) -> bool:
    """Whether an S3 error means the key (or the bucket) is not there."""
    return str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def make_client(settings: Settings, session: boto3.session.Session | None = None) -> S3Client:
    """A client for the configured endpoint; credentials from the standard AWS chain (or from
    ``session``)."""
    config = Config(
        region_name=settings.s3_region,
        s3={"addressing_style": "path" if settings.s3_path_style else "auto"},
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=POOL_CONNECTIONS,
        connect_timeout=5,
        read_timeout=60,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return (session or boto3.session.Session()).client("s3", endpoint_url=settings.s3_endpoint or None, config=config)


class S3Blobs:
    """The :class:`~vidup.storage.blobs.Blobs` interface over one bucket and prefix."""

    kind = "s3"

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        if not bucket:
            raise ValueError("VIDUP_STORAGE=s3 needs VIDUP_S3_BUCKET")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Blobs:
        return cls(make_client(settings), settings.s3_bucket, settings.s3_prefix)

    def key(self, key: str) -> str:
        """The object key of a layout key (the prefix joined on; never a leading "/")."""
        if key.startswith("/") or "\x00" in key or any(part in ("..", ".") for part in key.split("/")):
            raise ValueError(f"bad storage key {key!r}")
        return self.prefix + key

    def local_path(self, key: str) -> Path | None:
        return None

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.key(key))["ContentLength"])
        except ClientError as exc:
            if not_found(exc):
                return None
            raise

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(key))["Body"].read()
        except ClientError as exc:
            if not_found(exc):
                return None
            raise

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> BlobRange:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(key)}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            got = self.client.get_object(**args)
        except ClientError as exc:
            if not_found(exc):
                raise BlobNotFound(key) from None
            if error_code(exc) in ("InvalidRange", "416"):
                raise ValueError(f"range {start}-{end} is past the end of {key}") from None
            raise
        length = int(got["ContentLength"])
        size = length
        content_range = got.get("ContentRange")
        if content_range:  # "bytes a-b/size"
            size = int(content_range.rsplit("/", 1)[1])
        modified = got["LastModified"].timestamp() if got.get("LastModified") else 0.0
        etag = str(got.get("ETag", "")).strip('"')
        return BlobRange(cast(BinaryIO, got["Body"]), start, length, size, etag, modified)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data, **extra)  # type: ignore[arg-type]

    def upload_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(str(path), self.bucket, self.key(key), ExtraArgs=extra, Config=_TRANSFER)

    def download_file(self, key: str, path: Path) -> None:
        try:
            self.client.download_file(self.bucket, self.key(key), str(path), Config=_TRANSFER)
        except ClientError as exc:
            if not_found(exc):
                raise BlobNotFound(key) from None
            raise

    def delete(self, key: str) -> None:
        with contextlib.suppress(ClientError):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(key))

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        batch: list[str] = []
        for key, _ in self.keys(prefix):
            batch.append(self.key(key))
            if len(batch) == 1000:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, keys: list[str]) -> int:
        self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        return len(keys)

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix):], int(item["Size"])

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (the local stack's; a chart's is the user's)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not not_found(exc):
                raise
            self.client.create_bucket(Bucket=self.bucket)
