"""Removing a video's HLS package (and any half-written staging copies) from storage.

On the shared volume (``VIDUP_STORAGE=file``) the package is a directory with hidden siblings an
interrupted attempt may have left; in a bucket (``s3``) it is every object under ``outputs/<id>/``
(a worker's partial upload included: it publishes under the same prefix, the master last), and the
worker's scratch copies are local to the worker, which removes them itself.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from vidup.settings import Settings
from vidup.storage import Blobs, FileBlobs, open_blobs
from vidup.storage import layout as storage_layout


def output_dir(storage_dir: Path, video_id: str) -> Path:
    return storage_layout.resolve(storage_dir, storage_layout.output_relpath(video_id))


def leftovers(storage_dir: Path, video_id: str) -> list[Path]:
    """The package and every sibling an interrupted attempt may have left.

    The worker stages into ``.<id>.partial.<job>.<token>`` and swaps through ``.<id>.old.<token>``
    next to ``outputs/<id>``; all of them belong to this video.
    """
    final = output_dir(storage_dir, video_id)
    found = [final] if final.exists() else []
    if final.parent.is_dir():
        for prefix in (f".{video_id}.partial.", f".{video_id}.old."):
            found.extend(p for p in final.parent.iterdir() if p.name.startswith(prefix))
    return found


def remove_outputs(storage_dir: Path, video_id: str) -> list[Path]:
    """Delete what :func:`leftovers` finds on the volume; returns what it removed."""
    removed = leftovers(storage_dir, video_id)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


@functools.lru_cache(maxsize=4)
def blobs_for(settings: Settings) -> Blobs:
    """One store per settings for the operator's life: an S3 client is thread-safe, holds a
    connection pool, and costs ~100 ms to build, which a burst of deletes should not pay each."""
    return open_blobs(settings)


def _remove_prefix(blobs: Blobs, relpath: str) -> list[str]:
    if isinstance(blobs, FileBlobs):
        path = storage_layout.resolve(blobs.root, relpath)
        if not path.exists():
            return []
        shutil.rmtree(path, ignore_errors=True)
        return [str(path)]
    prefix = relpath.rstrip("/") + "/"
    count = blobs.delete_prefix(prefix)
    return [f"{count} objects under {prefix}"] if count else []


def remove_video_outputs(settings: Settings, video_id: str, blobs: Blobs | None = None) -> list[str]:
    """Delete a video's outputs, and the pieces of any chunked run, from the configured store;
    returns what was removed, for the log."""
    blobs = blobs if blobs is not None else blobs_for(settings)
    parts = _remove_prefix(blobs, storage_layout.video_parts_relpath(video_id))
    if isinstance(blobs, FileBlobs):
        return [str(p) for p in remove_outputs(blobs.root, video_id)] + parts
    return _remove_prefix(blobs, storage_layout.output_relpath(video_id)) + parts


def remove_parts(settings: Settings, video_id: str, job_id: str, blobs: Blobs | None = None) -> list[str]:
    """Delete the pieces of one chunked run once its package is published."""
    blobs = blobs if blobs is not None else blobs_for(settings)
    return _remove_prefix(blobs, storage_layout.parts_relpath(video_id, job_id))
