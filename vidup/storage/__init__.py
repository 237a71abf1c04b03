"""Where uploads and HLS packages live: one interface, two backends (``VIDUP_STORAGE``).

* ``file`` (default): a shared POSIX volume at ``VIDUP_STORAGE_DIR`` (one node, or ReadWriteMany).
* ``s3``: a bucket of any S3-compatible store (``VIDUP_S3_*`` plus the standard AWS variables),
  so a multi-node cluster needs no shared filesystem.

:mod:`~vidup.storage.layout` names the keys, :mod:`~vidup.storage.blobs` is the interface the
ingest, operator and worker share; :func:`open_blobs` picks the backend from the settings.
"""

from __future__ import annotations

from vidup.settings import Settings
from vidup.storage.blobs import BlobNotFound, BlobRange, Blobs, FileBlobs
from vidup.storage.s3 import S3Blobs

__all__ = ["BlobNotFound", "BlobRange", "Blobs", "FileBlobs", "S3Blobs", "open_blobs"]


def open_blobs(settings: Settings) -> Blobs:
    """The configured store."""
    if settings.storage == "s3":
        return S3Blobs.from_settings(settings)
    return FileBlobs(settings.storage_dir)
