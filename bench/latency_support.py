"""The measurements behind ``bench/latency``: upload-to-start and progress-mirroring latency.

Runs a whole local stack (the same code as `vidup up`: ingest, operator, two workers), uploads small
videos over TUS one after another, and records, for each:

* **upload → job start**: from just before the final PATCH of the upload (the last byte leaving
  the client; the ingest creates the VideoTranscode when it has it) to ``started_at`` of the RQ job
  on a worker (same machine, same clock);
* **progress → resource**: for each progress value a worker published, from the moment the bench
  received its pub/sub announcement (the worker writes the hash and publishes in one pipeline) to
  the moment a watch on the API server showed that value on ``status.progress``. The hash's own
  ``updated`` field has whole-second resolution, so it is reported separately, for reference.
"""

from __future__ import annotations

import base64
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from kubernetes import client, watch
from rq.job import Job

from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION
from vidup.transcode_jobs import progress_channel, progress_key

TARGET_SECONDS = 1.0


def make_sample(path: Path, seconds: int = 8, size: str = "640x360") -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
         "-f", "mp4", str(path)],
        check=True, timeout=120,
    )
    return path


def tus_upload(base_url: str, token: str, data: bytes, filename: str) -> tuple[str, float]:
    """Create and send an upload in one PATCH; returns (upload id, time just before the PATCH)."""
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
    meta = "filename " + base64.b64encode(filename.encode()).decode()
    created = requests.post(f"{base_url}/files/", headers={
        **headers, "Upload-Length": str(len(data)), "Upload-Metadata": meta,
    }, timeout=30)
    created.raise_for_status()
    location = requests.compat.urljoin(f"{base_url}/files/", created.headers["Location"])
    sent_at = time.time()
    patched = requests.patch(location, data=data, headers={
        **headers, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
    }, timeout=60)
    patched.raise_for_status()
    return location.rstrip("/").rsplit("/", 1)[-1], sent_at


@dataclass
class Recorder:
    """Background listeners: worker progress announcements and the resources' status changes."""

    stack: Stack
    published: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    mirrored: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Recorder:
        for target in (self._listen_progress, self._watch_resources):
            threading.Thread(target=target, daemon=True).start()
        time.sleep(0.5)
        return self

    def _listen_progress(self) -> None:
        assert self.stack.redis is not None
        conn = redis.Redis.from_url(self.stack.redis.url)
        pubsub = conn.pubsub()
        prefix = progress_channel("")
        pubsub.psubscribe(progress_channel("*"))
        while not self.stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if not message or message["type"] != "pmessage":
                continue
            seen = time.time()
            job_id = message["channel"].decode().removeprefix(prefix)
            value = int(message["data"])
            updated = conn.hget(progress_key(job_id), "updated")
            self.published.setdefault((job_id, value), (seen, float(updated or 0)))

    def _watch_resources(self) -> None:
        api = self.stack.api_client()
        custom = client.CustomObjectsApi(api)
        assert self.stack.settings is not None
        last: dict[str, int] = {}
        while not self.stop.is_set():
            stream = watch.Watch().stream(
                custom.list_namespaced_custom_object, GROUP, VERSION, self.stack.settings.namespace, PLURAL,
                timeout_seconds=5,
            )
            for event in stream:
                seen = time.time()
                body = event["object"]
                status = body.get("status") or {}
                name = body["metadata"]["name"]
                self.phases[name] = status
                progress = status.get("progress")
                if progress is not None and last.get(name) != progress:
                    last[name] = progress
                    self.mirrored[name].append((int(progress), seen))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def describe(label: str, values: list[float]) -> str:
    median, p95 = statistics.median(values), percentile(values, 95)
    verdict = "OK" if median < TARGET_SECONDS else "MISSES"
    return (f"{label:<44} n={len(values):<4} median={median * 1000:7.0f} ms  p95={p95 * 1000:7.0f} ms  "
            f"max={max(values) * 1000:7.0f} ms  [{verdict} target median < {TARGET_SECONDS:g} s]")


def run(videos: int = 20) -> int:
    with tempfile.TemporaryDirectory(prefix="vidup-bench-latency-") as tmp:
        run_dir = Path(tmp)
        print(f"starting the local stack (ingest, operator, 2 workers) in {run_dir} ...", flush=True)
        stack = Stack(run_dir / "stack", workers=2, extra_env={"VIDUP_X264_PRESET": "ultrafast"}).start()
        try:
            return _measure(stack, make_sample(run_dir / "sample.mp4").read_bytes(), videos)
        finally:
            stack.stop()


def _measure(stack: Stack, data: bytes, videos: int) -> int:
    assert stack.redis is not None
    recorder = Recorder(stack).start()
    conn = redis.Redis.from_url(stack.redis.url)
    to_start: list[float] = []
    names: list[str] = []
    for index in range(videos):
        name, sent_at = tus_upload(stack.url, stack.api_key, data, f"bench-{index}.mp4")
        names.append(name)
        deadline = time.time() + 120
        while recorder.phases.get(name, {}).get("phase") not in ("Completed", "Failed"):
            if time.time() > deadline:
                raise SystemExit(f"{name} did not finish: {recorder.phases.get(name)}")
            time.sleep(0.05)
        status = recorder.phases[name]
        job = Job.fetch(status["jobId"], connection=conn)
        assert job.started_at is not None
        to_start.append(job.started_at.timestamp() - sent_at)
        print(f"  {index + 1:>2}/{videos} {name}: {status['phase']}, job started "
              f"{to_start[-1] * 1000:.0f} ms after the last byte", flush=True)
    time.sleep(1)
    recorder.stop.set()

    mirror: list[float] = []
    mirror_by_hash: list[float] = []
    for name in names:
        job_id = recorder.phases[name]["jobId"]
        for value, seen in recorder.mirrored[name]:
            published = recorder.published.get((job_id, value))
            if published is None or value == 0:
                continue  # 0 is written with the Processing transition, not mirrored
            mirror.append(seen - published[0])
            if published[1]:
                mirror_by_hash.append(seen - published[1])
    published_count = sum(1 for (job, _v) in recorder.published if job in
                          {recorder.phases[n]["jobId"] for n in names})
    print()
    print(f"{videos} uploads of {len(data) / 1024:.0f} KiB, 8 s 640x360 each; "
          f"{published_count} progress values published, {len(mirror)} seen on the resources "
          "(the operator patches at a bounded rate, so some intermediate values are skipped)")
    print(describe("upload's last byte -> job started on a worker", to_start))
    print(describe("worker progress change -> resource status", mirror))
    print(describe("  (same, from the hash's whole-second stamp)", mirror_by_hash))
    failed = [n for n in names if recorder.phases[n].get("phase") != "Completed"]
    if failed:
        print(f"not completed: {failed}")
    ok = statistics.median(to_start) < TARGET_SECONDS and statistics.median(mirror) < TARGET_SECONDS
    return 0 if ok and not failed else 1
