"""Where things live on the shared volume. Paths in resources are relative to the storage root,
so every pod may mount the volume wherever it likes."""

from __future__ import annotations

from pathlib import Path

UPLOADS = "uploads"
OUTPUTS = "outputs"
#: The encoded pieces of a chunked video until its stitch publishes the package (then removed).
PARTS = "parts"
MASTER_PLAYLIST = "master.m3u8"
#: The media type of each file an HLS package holds, by suffix: the worker stores objects with it
#: and the ingest serves files with it (anything else in a package directory is not served).
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
    ".vtt": "text/vtt",
}


def upload_relpath(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}"


def output_relpath(video_id: str) -> str:
    return f"{OUTPUTS}/{video_id}"


def parts_relpath(video_id: str, job_id: str) -> str:
    """Where the pieces of one chunked run (``job_id``: one generation of the resource) live."""
    return f"{PARTS}/{video_id}/{job_id}"


def video_parts_relpath(video_id: str) -> str:
    """Every chunked run's pieces of a video (the finalizer removes it with the outputs)."""
    return f"{PARTS}/{video_id}"


def resolve(storage_dir: Path, relpath: str) -> Path:
    """An absolute path inside the storage root; refuses anything that would escape it."""
    root = storage_dir.resolve()
    path = (root / relpath).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"path {relpath!r} escapes the storage root")
    return path
