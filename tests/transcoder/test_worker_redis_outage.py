"""A Redis restart while a worker encodes must cost neither the worker nor the encode.

Found by the chaos soak (tests/soak): RQ's horse monitor let the heartbeat's connection error out,
the worker quit, and its work-horse and FFmpeg died with it; and a worker whose job ended while
Redis was away quit too. A Redis of its own, since the test kills it; a real
``python -m vidup_transcoder.worker`` and real FFmpeg.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
from rq import Queue, Retry
from rq.job import Job
from transcoder_media import make_source

from vidup.localstack.components import worker_process
from vidup.localstack.processes import wait_until
from vidup.localstack.redis_server import RedisServer
from vidup.transcode_jobs import JOB_FUNCTION, TranscodeRequest, progress_key
from vidup_transcoder.encoding import job_timeout_for


@pytest.mark.parametrize("outage", [3, 15], ids=["encode-outlives-outage", "encode-ends-during-outage"])
def test_a_busy_worker_outlives_a_redis_restart_and_its_encode_finishes(tmp_path: Path, outage: float) -> None:
    server = RedisServer(tmp_path / "redis").start()
    storage = tmp_path / "storage"
    make_source(storage / "uploads" / "through", size="1280x720", seconds=6, rate=25)
    env = {
        "VIDUP_REDIS_URL": server.url, "VIDUP_QUEUE": "transcode", "VIDUP_STORAGE_DIR": str(storage),
        "VIDUP_X264_PRESET": "medium",  # slow enough for the restart to land mid-encode
        "VIDUP_WORKER_HEARTBEAT_SECONDS": "1", "VIDUP_WORKER_HEARTBEAT_GRACE_SECONDS": "3",
    }
    worker = worker_process(tmp_path, env, 0).start()
    connection = redis.Redis.from_url(server.url)

    def enqueue(name: str) -> Job:
        request = TranscodeRequest(name, f"uploads/{name}", f"outputs/{name}", [720], 2)
        return Queue("transcode", connection=connection).enqueue(
            JOB_FUNCTION, request.to_dict(), job_id=f"vt-{name}-{uuid.uuid4().hex[:6]}",
            job_timeout=job_timeout_for(6), retry=Retry(max=1),
        )

    try:
        job = enqueue("through")

        def progress() -> int:
            raw = connection.hget(progress_key(job.id), "progress")
            return int(raw) if raw is not None else -1

        wait_until(lambda: progress() >= 5, 90, "the encode to be under way")
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGKILL)  # comes back empty: no persistence
        server.process.stop(grace=1)
        time.sleep(outage)  # heartbeats fail meanwhile; in the long outage the job ends too
        server.start()  # the same port
        wait_until(lambda: (storage / "outputs" / "through" / "master.m3u8").is_file(), 180,
                   "the encode under way during the restart to finish")
        worker.check_running()  # the same process: it never quit
        # ... and it still takes work from the queue of the Redis that came back
        make_source(storage / "uploads" / "after", size="320x240", seconds=2)
        enqueue("after")
        wait_until(lambda: (storage / "outputs" / "after" / "master.m3u8").is_file(), 120,
                   f"a job enqueued after the restart to be done; worker log:\n{worker.log_tail(40)}")
        worker.check_running()
    finally:
        connection.close()
        worker.stop(grace=5)
        server.stop()
