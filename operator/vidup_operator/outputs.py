"""Removing a video's HLS package (and any half-written staging copies) from shared storage."""

from __future__ import annotations

import shutil
from pathlib import Path

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
    """Delete what :func:`leftovers` finds; returns what it removed."""
    removed = leftovers(storage_dir, video_id)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed
