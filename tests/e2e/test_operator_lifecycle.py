"""The operator's happy and unhappy paths end to end: real kube-apiserver, Redis, RQ workers, FFmpeg.

Resources are created directly (as the ingest would); one operator and two workers serve the module.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq.job import Job

from vidup.localstack import binaries
from vidup.localstack.stack import Stack

sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))
from operator_support import World, wait_for


@pytest.fixture(scope="module")
def world(kube: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(kube, tmp_path_factory.mktemp("operator-lifecycle")).start()
    try:
        w.start_operator()
        w.start_worker(1)
        w.start_worker(2)
        yield w
    finally:
        w.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_progress_rises_monotonically_to_100_and_the_status_tells_the_whole_story(world: World) -> None:
    name = unique("progress")
    source = world.upload(name, seconds=16, size="1280x720")
    world.create(name, source, renditions=(720, 480))
    seen: list[int] = []
    phases: list[str] = []
    for status in world.watch_status(name, timeout=180):
        if status.get("phase") and (not phases or phases[-1] != status["phase"]):
            phases.append(status["phase"])
        if status.get("phase") == "Processing" or status.get("phase") == "Completed":
            seen.append(int(status.get("progress", 0)))
        if status.get("phase") in ("Completed", "Failed"):
            break
    assert phases == ["Queued", "Processing", "Completed"], phases
    assert seen == sorted(seen), f"progress went down: {seen}"
    assert seen[-1] == 100 and seen[0] < 50
    assert len({p for p in seen if 0 < p < 100}) >= 3, f"too few progress steps mirrored: {seen}"

    status = world.status(name)
    assert status["attempts"] == 1 and status["observedGeneration"] == 1
    assert status["jobId"].startswith("vt-") and status["jobId"].endswith("-g1")
    assert status["startedAt"] <= status["completedAt"]
    assert status["outputs"]["summary"] == "720p,480p"
    assert status["outputs"]["masterPlaylist"] == f"outputs/{name}/master.m3u8"
    assert (world.storage_dir / status["outputs"]["masterPlaylist"]).is_file()
    assert status["source"]["width"] == 1280 and status["source"]["durationSeconds"] == pytest.approx(16, abs=0.5)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Transcoded", 1)
    reasons = [e["reason"] for e in world.events(name)]
    assert {"Queued", "Started", "Completed"} <= set(reasons), reasons


def test_a_non_video_fails_at_once_with_invalid_media_visible_in_kubectl(world: World, kube: Stack) -> None:
    name = unique("notvideo")
    relpath = f"uploads/{name}"
    (world.storage_dir / relpath).parent.mkdir(parents=True, exist_ok=True)
    (world.storage_dir / relpath).write_bytes(b"%PDF-1.4 definitely not a video\n" * 2000)
    world.create(name, relpath)
    status = world.wait_phase(name, {"Failed", "Completed"}, timeout=120)
    assert status["phase"] == "Failed" and status["reason"] == "InvalidMedia"
    assert status["attempts"] == 1, "a permanent media error must not be retried"
    assert name in status["message"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidMedia")
    events = world.events(name)
    assert any(e["reason"] == "Failed" and e["type"] == "Warning" for e in events), events

    kubectl = str(binaries.expected().kubectl)
    base = [kubectl, "--kubeconfig", str(kube.kubeconfig), "-n", world.namespace]
    table = subprocess.run([*base, "get", "videotranscodes", name], capture_output=True, text=True, check=True)
    assert "Failed" in table.stdout, table.stdout
    described = subprocess.run([*base, "describe", "videotranscode", name], capture_output=True, text=True,
                               check=True).stdout
    assert "InvalidMedia" in described and "Warning" in described and "Failed" in described


def test_deleting_a_resource_removes_its_outputs_and_the_resource(world: World) -> None:
    name = unique("delete")
    world.create(name, world.upload(name, seconds=3))
    status = world.wait_phase(name, "Completed")
    outputs = world.storage_dir / status["outputs"]["path"]
    assert (outputs / "master.m3u8").is_file()
    world.custom.delete_namespaced_custom_object("vidup.io", "v1alpha1", world.namespace, "videotranscodes", name)
    wait_for(lambda: world.get(name) is None, 60, f"{name} to be gone")
    assert not outputs.exists()
    assert not list(outputs.parent.glob(f".{name}.*"))
    with pytest.raises(Exception, match="No such job"):
        Job.fetch(status["jobId"], connection=world.redis)


def test_deleting_a_resource_mid_transcode_stops_its_job(world: World) -> None:
    name = unique("delrun")
    world.create(name, world.upload(name, seconds=30, size="1280x720"), renditions=(720, 480))
    wait_for(lambda: world.status(name).get("progress", 0) > 0, 120, f"{name} to make progress")
    job_id = world.status(name)["jobId"]
    world.custom.delete_namespaced_custom_object("vidup.io", "v1alpha1", world.namespace, "videotranscodes", name)
    wait_for(lambda: world.get(name) is None, 60, f"{name} to be gone")
    outputs = world.storage_dir / "outputs"
    assert not (outputs / name).exists()
    assert not list(outputs.glob(f".{name}.*"))
    with pytest.raises(Exception, match="No such job"):
        Job.fetch(job_id, connection=world.redis)


def test_ten_videos_at_once_with_two_workers_all_complete_and_both_workers_work_in_parallel(world: World) -> None:
    names = [unique(f"batch{i}") for i in range(10)]
    for name in names:
        world.create(name, world.upload(name, seconds=6, size="640x360"))
    for name in names:
        world.wait_phase(name, {"Completed", "Failed"}, timeout=300)
    statuses = {name: world.status(name) for name in names}
    assert {s["phase"] for s in statuses.values()} == {"Completed"}, statuses
    assert all(s["attempts"] == 1 for s in statuses.values())

    jobs = [Job.fetch(s["jobId"], connection=world.redis) for s in statuses.values()]
    assert len({j.worker_name for j in jobs}) == 2, "both workers should have taken jobs"
    overlapping = [
        (a.id, b.id) for a in jobs for b in jobs
        if a.worker_name != b.worker_name and a.started_at < b.ended_at and b.started_at < a.ended_at
    ]
    assert overlapping, "the two workers were never busy at the same time"
