"""Faults the operator must survive: a SIGKILLed worker, a SIGKILLed operator, a flushed Redis,
and two operator replicas of which the leader dies. Real API server, Redis, RQ workers, FFmpeg.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job

from vidup.localstack.stack import Stack

sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))
from operator_support import World, open_world, unique, wait_for


@pytest.fixture
def world(kube: Stack, tmp_path: Path) -> Iterator[World]:
    """A fresh namespace, Redis and queue per test: each fault test starts its own processes."""
    yield from open_world(kube, tmp_path / "world")


def runs_of(world: World, job_id: str) -> int:
    """How many executions of the job ended (RQ keeps one result per execution)."""
    return len(Job.fetch(job_id, connection=world.redis).results())


def one_package(world: World, name: str) -> None:
    outputs = world.storage_dir / "outputs"
    assert (outputs / name / "master.m3u8").is_file()
    assert not list(outputs.glob(f".{name}.*")), "staging leftovers next to the package"


def test_a_worker_killed_mid_transcode_still_ends_completed_with_one_set_of_outputs(world: World) -> None:
    world.start_operator(env={"VIDUP_LOG_FORMAT": "json"})
    doomed = world.start_worker(1)
    name = unique("wkill")
    world.create(name, world.upload(name, seconds=30, size="1280x720"), renditions=(720, 480))
    wait_for(lambda: world.status(name).get("progress", 0) >= 5, 120, f"{name} to make progress")
    world.kill(doomed)
    world.start_worker(2)
    status = world.wait_phase(name, {"Completed", "Failed"}, timeout=240)
    assert status["phase"] == "Completed", status
    assert status["attempts"] == 2
    one_package(world, name)
    reasons = [e["reason"] for e in world.events(name)]
    assert "Requeued" in reasons, reasons
    assert Job.fetch(status["jobId"], connection=world.redis).worker_name == "worker-2"
    # The operator's own lines about the video (here the requeue warning) carry its id, as Kopf's do.
    lines = [json.loads(line) for line in (world.run_dir / "logs" / "operator-0.log").read_text().splitlines()]
    about = [d for d in lines if d["logger"].startswith("vidup_operator") and name in d["message"]]
    assert any("Requeued" in d["message"] for d in about), lines[-20:]
    assert all(d.get("video_id") == name for d in about), about


def test_an_operator_killed_mid_transcode_and_restarted_makes_no_second_job(world: World) -> None:
    doomed = world.start_operator(0)
    world.start_worker(1)
    name = unique("okill")
    world.create(name, world.upload(name, seconds=24, size="1280x720"), renditions=(720, 480))
    wait_for(lambda: world.status(name).get("progress", 0) >= 5, 120, f"{name} to make progress")
    world.kill(doomed)
    time.sleep(1)
    world.start_operator(1)
    status = world.wait_phase(name, {"Completed", "Failed"}, timeout=180)
    assert status["phase"] == "Completed", status
    assert status["attempts"] == 1
    assert runs_of(world, status["jobId"]) == 1, "the job ran more than once"
    assert len(Queue(world.queue, connection=world.redis)) == 0
    assert [e["reason"] for e in world.events(name)].count("Queued") == 1
    one_package(world, name)


def test_a_redis_flush_while_queued_is_repaired_by_enqueueing_again(world: World) -> None:
    world.start_operator()
    name = unique("flush")
    world.create(name, world.upload(name, seconds=3))
    status = world.wait_phase(name, "Queued")
    job_id = status["jobId"]
    wait_for(lambda: Job.exists(job_id, connection=world.redis), 10, "the job to be in Redis")
    world.redis.flushall()
    wait_for(lambda: Job.exists(job_id, connection=world.redis), 30, "the operator to enqueue the job again")
    assert Queue(world.queue, connection=world.redis).get_job_ids() == [job_id]
    # The operator acts job first, then status, then events: the event may trail the job a little.
    wait_for(lambda: "Requeued" in [e["reason"] for e in world.events(name)], 10, "the Requeued event")
    world.start_worker(1)
    status = world.wait_phase(name, {"Completed", "Failed"}, timeout=120)
    assert status["phase"] == "Completed" and status["attempts"] == 1 and status["jobId"] == job_id
    one_package(world, name)


def test_two_replicas_process_each_video_once_and_the_standby_takes_over_when_the_leader_dies(
    world: World,
) -> None:
    lease = {"VIDUP_OPERATOR_LEASE_SECONDS": "3"}
    first = world.start_operator(0, env=lease)
    wait_for(lambda: "leader:" in first.log_tail(50), 30, "the first operator to lead")
    second = world.start_operator(1, env=lease)
    world.start_worker(1)
    world.start_worker(2)
    names = [unique(f"ha{i}") for i in range(4)]
    for name in names:
        world.create(name, world.upload(name, seconds=4))
    for name in names:
        assert world.wait_phase(name, {"Completed", "Failed"})["phase"] == "Completed"
    assert "leader:" not in second.log_tail(200), "the standby must not reconcile while the leader lives"
    # Events follow the status (job, status, events): let the leader finish posting before it dies,
    # or a kill between the two loses a Completed event, which no one posts again for a done video.
    for name in names:
        wait_for(lambda n=name: "Completed" in [e["reason"] for e in world.events(n)], 10, f"{name}'s event")

    world.kill(first)
    later = [unique(f"ha-after{i}") for i in range(2)]
    for name in later:
        world.create(name, world.upload(name, seconds=4))
    for name in later:
        assert world.wait_phase(name, {"Completed", "Failed"}, timeout=120)["phase"] == "Completed"
    assert "leader:" in second.log_tail(200)

    for name in names + later:
        status = world.status(name)
        assert status["attempts"] == 1, (name, status, world.events(name))
        assert runs_of(world, status["jobId"]) == 1
        assert [e["reason"] for e in world.events(name)].count("Completed") == 1
