"""What the end-to-end tests share: a stack, a generated clip, a tuspy upload, and waiting for the
resource's phase."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tusclient import client as tus_client

from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION

#: How long a test video may take from upload to a final phase on a busy 2-core machine.
TIMEOUT = 240


def start_stack(run_dir: Path, workers: int = 2, **env: str) -> Iterator[Stack]:
    """A module fixture's body: `vidup up --workers N` with x264's fastest preset plus ``env``."""
    stack = Stack(run_dir, workers=workers, extra_env={"VIDUP_X264_PRESET": "ultrafast", **env})
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def make_clip(path: Path, seconds: int = 3, size: str = "1280x720", audio: bool = True) -> Path:
    """testsrc2 (and a 440 Hz tone), x264 + AAC, moov at the end as a phone writes it."""
    tone = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", "-shortest"] if audio else []
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
         *tone, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )
    return path


def tus_upload(stack: Stack, path: Path, chunk_size: int = 1 << 20) -> str:
    """Upload with tuspy (a real tus client); returns the Video-Location of the final response."""
    tus = tus_client.TusClient(f"{stack.url}/files/", headers={"Authorization": f"Bearer {stack.api_key}"})
    uploader = tus.uploader(str(path), chunk_size=chunk_size, metadata={"filename": path.name})
    uploader.upload()
    location = uploader.request.response_headers.get("video-location")
    assert location, uploader.request.response_headers
    return str(location)


def video_id_of(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


def resource(stack: Stack, video_id: str) -> dict[str, Any]:
    """The VideoTranscode as the API server has it (raises ApiException 404 if there is none)."""
    with stack.api_client() as api:
        return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, video_id))


def wait_for_phase(stack: Stack, video_id: str, phases: Iterable[str] = ("Completed", "Failed"),
                   timeout: float = TIMEOUT) -> dict[str, Any]:
    """The resource once its phase is one of ``phases`` (fails the test after ``timeout``)."""
    wanted = set(phases)
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            obj = resource(stack, video_id)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        if (obj.get("status") or {}).get("phase") in wanted:
            return obj
        time.sleep(0.5)
    pytest.fail(f"{video_id} did not reach {sorted(wanted)} in {timeout:.0f} s; last status {obj.get('status')}")
