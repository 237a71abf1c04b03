"""A long video encoded in chunks by the real operator and real RQ workers (real API server, Redis,
FFmpeg): two workers share one video; a worker SIGKILLed mid-chunk costs that chunk only; a SIGKILLed
operator plus a FLUSHALL mid-encode still ends in one package with no chunk encoded twice.

Chunks are 4 s of 2 s segments here (VIDUP_CHUNK_SECONDS=4, spec segmentSeconds=2), so a 20 s
source is five chunks and the audio: the same plan a 10-minute video gets with 60 s chunks, small.
The fault tests use 8 s chunks of a 40 s 1080p source, so a chunk is still encoding when it is hit.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job

from vidup import chunking
from vidup.localstack.stack import Stack

sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))
from operator_support import World, open_world, unique, wait_for

#: RQ's line as a worker starts a piece (the job's description, then its id; not "Job OK (id)").
DEQUEUED = re.compile(r": transcode \S+(?: chunk \d+| audio| stitch) \((vt-[0-9a-f-]+-g\d+_[a-z0-9]+)\)")
CHUNK_ENV = {"VIDUP_CHUNK_SECONDS": "4", "VIDUP_CHUNK_MIN_CHUNKS": "3"}


@pytest.fixture
def world(kube: Stack, tmp_path: Path) -> Iterator[World]:
    yield from open_world(kube, tmp_path / "world", **CHUNK_ENV)


def piece_job(world: World, status: dict[str, Any], piece: str) -> Job:
    return Job.fetch(chunking.piece_job_id(status["jobId"], piece), connection=world.redis)


def check_package(world: World, name: str, chunks: int, segments: int, heights: tuple[int, ...]) -> None:
    """One package: the master with its audio group, every rung's playlist with every segment of
    every chunk in order, no staging leftovers and no pieces left on storage."""
    out = world.storage_dir / "outputs" / name
    master = (out / "master.m3u8").read_text()
    assert '#EXT-X-MEDIA:TYPE=AUDIO' in master and 'URI="audio/index.m3u8"' in master, master
    assert master.count("#EXT-X-STREAM-INF") == len(heights), master
    for height in heights:
        playlist = (out / f"{height}p" / "index.m3u8").read_text()
        uris = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        assert uris == [f"seg_{i:05d}.ts" for i in range(segments)], playlist
        assert "#EXT-X-ENDLIST" in playlist
    audio = (out / "audio" / "index.m3u8").read_text()
    assert "#EXT-X-ENDLIST" in audio
    assert not list((world.storage_dir / "outputs").glob(f".{name}.*")), "staging leftovers"
    # The operator removes the pieces just after it writes Completed (the pieces' markers must outlive
    # a crash before that write), so they may still be there at the first look.
    parts = world.storage_dir / "parts" / name
    wait_for(lambda: not parts.exists() or not any(parts.iterdir()), 30, "the pieces to be removed")


def dequeues(world: World) -> dict[str, int]:
    """How often each piece job was taken off the queue by any worker (RQ logs every job it starts
    with its id): the record of encodes that survives a FLUSHALL."""
    counts: dict[str, int] = {}
    for log in (world.run_dir / "logs").glob("worker*.log") if (world.run_dir / "logs").is_dir() else []:
        text = log.read_text(errors="replace")
        for job_id in DEQUEUED.findall(text):
            counts[job_id] = counts.get(job_id, 0) + 1
    return counts


def test_two_workers_share_the_chunks_of_one_video(world: World) -> None:
    world.start_operator()
    world.start_worker(1)
    world.start_worker(2)
    name = unique("chunk")
    world.create(name, world.upload(name, seconds=20, size="1280x720"), renditions=(720, 480), segment_seconds=2)
    status = world.wait_phase(name, {"Completed", "Failed"}, timeout=300)
    assert status["phase"] == "Completed", status
    assert status["chunks"]["total"] == 5 and status["chunks"]["completed"] == 5, status["chunks"]
    assert status["chunks"]["summary"] == "5/5" and status["attempts"] == 1 and status["progress"] == 100
    assert status["outputs"]["summary"] == "720p,480p"
    check_package(world, name, 5, 10, (720, 480))
    workers = {piece_job(world, status, chunking.chunk_name(i)).worker_name for i in range(5)}
    assert len(workers) == 2, f"one worker encoded every chunk: {workers}"
    reasons = [e["reason"] for e in world.events(name)]
    assert "Chunked" in reasons and "Stitching" in reasons and "Completed" in reasons, reasons


def long_chunks(world: World, name: str) -> None:
    """A 40 s 1080p source: five chunks once VIDUP_CHUNK_SECONDS is 8 (set before the processes start)."""
    world.create(name, world.upload(name, seconds=40, size="1920x1080"), renditions=(1080, 720), segment_seconds=2)


def test_a_worker_killed_mid_chunk_costs_that_chunk_only(world: World) -> None:
    world.extra_env["VIDUP_CHUNK_SECONDS"] = "8"
    world.start_operator()
    doomed = world.start_worker(1)
    name = unique("ckill")
    long_chunks(world, name)
    status = world.wait_phase(name, "Processing", timeout=120)
    wait_for(lambda: world.status(name).get("chunks", {}).get("completed", 0) >= 1, 120, "a first chunk done")
    status = world.status(name)

    def running_piece() -> str | None:
        for i in range(status["chunks"]["total"]):
            job = piece_job(world, status, chunking.chunk_name(i))
            if job.get_status() == "started" and int(world.redis.hget(
                    f"vidup:progress:{job.id}", "progress") or 0) >= 5:
                return chunking.chunk_name(i)
        return None

    killed = wait_for(running_piece, 120, "a chunk half encoded")
    done_before = [chunking.chunk_name(i) for i in range(status["chunks"]["total"])
                   if piece_job(world, status, chunking.chunk_name(i)).get_status() == "finished"]
    assert done_before
    world.kill(doomed)
    world.start_worker(2)
    status = world.wait_phase(name, {"Completed", "Failed"}, timeout=400)
    assert status["phase"] == "Completed", status
    assert status["chunks"]["failures"] == {killed: 1}, status["chunks"]
    for piece in done_before:  # finished before the kill: never encoded again
        assert len(piece_job(world, status, piece).results()) == 1, piece
        assert piece_job(world, status, piece).worker_name == "worker-1"
    assert piece_job(world, status, killed).worker_name == "worker-2"
    check_package(world, name, 5, 20, (1080, 720))
    assert "Requeued" in [e["reason"] for e in world.events(name)]


def test_an_operator_killed_and_a_redis_flush_mid_chunks_end_in_one_package(world: World) -> None:
    world.extra_env["VIDUP_CHUNK_SECONDS"] = "8"
    doomed = world.start_operator(0)
    world.start_worker(1)
    world.start_worker(2)
    name = unique("cflush")
    long_chunks(world, name)
    wait_for(lambda: world.status(name).get("chunks", {}).get("completed", 0) >= 1, 180, "a first chunk done")
    assert world.status(name)["chunks"]["completed"] < 5, "too late: every chunk is done already"
    world.kill(doomed)
    world.redis.flushall()
    time.sleep(1)
    world.start_operator(1)
    status = world.wait_phase(name, {"Completed", "Failed"}, timeout=400)
    assert status["phase"] == "Completed", status
    assert status["chunks"]["completed"] == status["chunks"]["total"] == 5
    check_package(world, name, 5, 20, (1080, 720))
    runs = dequeues(world)
    pieces = [chunking.piece_job_id(status["jobId"], p) for p in chunking.pieces(5, True)]
    assert all(runs.get(p) == 1 for p in pieces), runs
