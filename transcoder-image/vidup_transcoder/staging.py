"""Build output in a hidden sibling directory and move it into place only when complete.

A player or the operator must never see half an HLS package, so the job encodes into
``.<name>.partial.<job id>.<token>`` next to the final directory (same filesystem, so the rename is
atomic) and renames it at the very end. The job id in the name lets anyone holding the job -- the
next attempt after a SIGKILLed worker, or the worker whose work-horse was stopped -- find and remove
what an interrupted attempt left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path


def _partial_prefix(out_dir: Path, job_id: str) -> str:
    return f".{out_dir.name}.partial.{job_id}."


def new_partial_dir(out_dir: Path, job_id: str) -> Path:
    """A fresh, empty staging directory for one attempt of ``job_id``."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    path = out_dir.parent / f"{_partial_prefix(out_dir, job_id)}{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def remove_partials(out_dir: Path, job_id: str) -> list[Path]:
    """Delete every staging directory any attempt of ``job_id`` left; returns what was removed."""
    removed: list[Path] = []
    if not out_dir.parent.is_dir():
        return removed
    prefix = _partial_prefix(out_dir, job_id)
    for entry in out_dir.parent.iterdir():
        if entry.name.startswith(prefix):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def promote(partial: Path, out_dir: Path) -> None:
    """Move the finished package into place, replacing an older package of the same video if any."""
    old: Path | None = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old.{uuid.uuid4().hex[:12]}"
        os.rename(out_dir, old)
    os.rename(partial, out_dir)
    with contextlib.suppress(OSError):
        fd = os.open(out_dir.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
