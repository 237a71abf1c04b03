"""Issue #18: with VIDUP_LOG_FORMAT=json every component writes one JSON object per line, and one
video can be followed across the ingest, the operator and a worker by its ``video_id``; an HTTP
request by its ``request_id`` (the client's X-Request-ID, or one the ingest made up and returned).

A whole local stack as `vidup up` runs it: a real tus upload, a real transcode, then every line of
every component's log file must parse."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_support import make_clip, start_stack, wait_for_phase
from tusclient import client as tus_client

from vidup.localstack.stack import Stack

pytestmark = pytest.mark.slow

FIELDS = {"time", "level", "logger", "message", "component", "pid"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("json-logs"), workers=2, VIDUP_LOG_FORMAT="json")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "sample.mp4", seconds=2, size="640x360", audio=False)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file as a JSON object; a line that is not one fails the test."""
    docs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}:{number} is not JSON: {line!r}")
        assert isinstance(doc, dict) and doc.keys() >= FIELDS, f"{path.name}:{number}: {line}"
        docs.append(doc)
    return docs


def test_json_logs_follow_one_video_across_components(stack: Stack, sample: Path) -> None:
    tus = tus_client.TusClient(f"{stack.url}/files/", headers={"Authorization": f"Bearer {stack.api_key}"})
    uploader = tus.uploader(str(sample), chunk_size=256 << 10, metadata={"filename": sample.name})
    uploader.upload()
    video_id = str(uploader.url).rstrip("/").rsplit("/", 1)[-1]
    generated = uploader.request.response_headers.get("x-request-id")
    assert generated, "the ingest returns a request id it made up when the client sent none"
    assert wait_for_phase(stack, video_id, {"Completed", "Failed"})["status"]["phase"] == "Completed"
    mine = f"test-{uuid.uuid4().hex[:12]}"
    answer = requests.get(f"{stack.url}/videos/{video_id}", timeout=30,
                          headers={"Authorization": f"Bearer {stack.api_key}", "X-Request-ID": mine})
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == mine

    logs = stack.run_dir / "logs"
    by_component: dict[str, list[dict[str, Any]]] = {}
    # The worker's "job done" lines are written by its work-horse just before it exits, and the
    # ingest's access line after the response has gone; give the writes a moment to be on disk
    # before reading (the phase was written by the operator).
    deadline = time.monotonic() + 30
    while True:
        by_component = {}
        for name in ("ingest-0", "operator-0", "worker-0", "worker-1"):
            for doc in read_json_lines(logs / f"{name}.log"):
                by_component.setdefault(doc["component"], []).append(doc)
        with_id = {c for c, docs in by_component.items() if any(d.get("video_id") == video_id for d in docs)}
        answered = any(d.get("request_id") == mine for d in by_component.get("ingest", []))
        if (with_id >= {"ingest", "operator", "worker"} and answered) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert with_id >= {"ingest", "operator", "worker"}, {c: len(d) for c, d in by_component.items()}

    ingest = by_component["ingest"]
    writes = [d for d in ingest if d.get("method") in ("POST", "PATCH") and d.get("video_id") == video_id]
    assert {d["method"] for d in writes} == {"POST", "PATCH"}, writes
    assert all(d.get("request_id") for d in writes), writes
    assert any(d.get("request_id") == generated for d in writes)
    status_lines = [d for d in ingest if d.get("request_id") == mine]
    assert status_lines and all(d.get("video_id") == video_id for d in status_lines), status_lines
    assert any(d.get("status") == 200 and d.get("path") == f"/videos/{video_id}" for d in status_lines)

    worker = [d for d in by_component["worker"] if d.get("video_id") == video_id]
    assert all(d.get("job_id") for d in worker), worker
    for doc in (d for docs in by_component.values() for d in docs):
        assert doc["time"].endswith("Z") and doc["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
