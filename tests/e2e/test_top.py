"""Issue #18: `vidup top --once` against a running local stack shows the queue, the workers, the
videos by phase and the recent failures, read from the stack's real Redis and API server.

The stack runs as `vidup up --workers 2` does; one clip is transcoded and one non-video fails, then
`vidup top` runs as a user runs it (a separate process, given only the run directory)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import start_stack, tus_upload, video_id_of, wait_for_phase

from vidup.localstack.stack import Stack

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("top-stack"), workers=2)


def upload(stack: Stack, path: Path) -> str:
    return video_id_of(tus_upload(stack, path))


def vidup_top(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vidup.cli", "top", "--once", "--run-dir", str(stack.run_dir), *args],
                          capture_output=True, text=True, timeout=60)


def test_top_once_shows_queue_workers_phases_and_failures(stack: Stack, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip)], check=True)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"this is not a video\n" * 1000)
    good, bad = upload(stack, clip), upload(stack, notes)
    phases = [wait_for_phase(stack, v)["status"]["phase"] for v in (good, bad)]
    assert phases == ["Completed", "Failed"]

    # A worker reports itself idle a moment after its job's result is in: poll the JSON view.
    deadline = time.monotonic() + 30
    while True:
        result = vidup_top(stack, "--json")
        assert result.returncode == 0, result.stderr
        doc: dict[str, Any] = json.loads(result.stdout)
        if doc["workers_busy"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert doc["jobs"]["queued"] == 0 and doc["jobs"]["running"] == 0
    assert (doc["workers_busy"], doc["workers_idle"]) == (0, 2)
    assert sorted(w["name"] for w in doc["workers"]) == ["worker-0", "worker-1"]
    assert doc["phases"] == {"Pending": 0, "Queued": 0, "Processing": 0, "Completed": 1, "Failed": 1}
    assert [(f["name"], f["reason"]) for f in doc["failures"]] == [(bad, "InvalidMedia")]
    assert doc["failures"][0]["message"] and doc["failures"][0]["at"].endswith("Z")

    result = vidup_top(stack)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for line in ("QUEUE transcode", "  queued 0   running 0", "WORKERS 2   busy 0   idle 2",
                 "VIDEOS 2", "  Pending 0   Queued 0   Processing 0   Completed 1   Failed 1", "RECENT FAILURES"):
        assert line in text, text
    failures = text.split("RECENT FAILURES\n", 1)[1].splitlines()
    assert len(failures) == 1 and bad in failures[0] and "InvalidMedia:" in failures[0], text


def test_top_says_what_it_cannot_reach(stack: Stack, tmp_path: Path) -> None:
    """A Redis that does not answer: the view still shows the videos, names the problem, exits 1."""
    kubeconfig = str(stack.kubeconfig)
    result = subprocess.run(
        [sys.executable, "-m", "vidup.cli", "top", "--once", "--redis-url", "redis://127.0.0.1:1/0",
         "--kubeconfig", kubeconfig], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "QUEUE transcode\n  unavailable: ConnectionError" in result.stdout, result.stdout
    assert "VIDEOS " in result.stdout and "Completed" in result.stdout
