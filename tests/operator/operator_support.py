"""Helpers for the operator's end-to-end tests: an isolated little world on the session's API server.

Each test module gets its own namespace, its own Redis and queue (so a FLUSHALL or a stray worker
never touches another module's state), and starts the operator and workers with the very process
definitions `vidup up` uses (:mod:`vidup.localstack.components`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vidup.localstack import components
from vidup.localstack.processes import ManagedProcess
from vidup.localstack.redis_server import RedisServer
from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION, VideoSpec, VideoTranscodeObject
from vidup.storage.layout import upload_relpath

T = TypeVar("T")

#: Fast encodes for tests; the worker reads it (vidup_transcoder.command.x264_preset).
FAST_ENV = {
    "VIDUP_X264_PRESET": "ultrafast",
    "VIDUP_RETRY_BASE_SECONDS": "1",
    # The worker notices a dead peer after heartbeat + grace; keep that short for the fault tests.
    "VIDUP_WORKER_HEARTBEAT_SECONDS": "2",
    "VIDUP_WORKER_HEARTBEAT_GRACE_SECONDS": "4",
}


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def make_video(path: Path, seconds: float = 4, size: str = "320x240", rate: int = 25, audio: bool = True) -> Path:
    """A small H.264/AAC mp4 made with FFmpeg's lavfi sources."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        argv += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    argv += ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    argv += ["-c:a", "aac", "-shortest"] if audio else []
    argv += ["-f", "mp4", str(path)]  # uploads have no extension: name the container
    subprocess.run(argv, check=True, timeout=120)
    return path


@dataclass
class World:
    """A namespace, a Redis and a queue of our own, plus the operator and worker processes we start."""

    stack: Stack
    run_dir: Path
    namespace: str = field(default_factory=lambda: f"op-{uuid.uuid4().hex[:8]}")
    queue: str = field(default_factory=lambda: f"transcode-{uuid.uuid4().hex[:6]}")
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_server: RedisServer | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    api: client.ApiClient | None = None

    def start(self) -> World:
        self.redis_server = RedisServer(self.run_dir / "redis").start()
        self.api = self.stack.api_client()
        client.CoreV1Api(self.api).create_namespace({"metadata": {"name": self.namespace}})
        return self

    @property
    def storage_dir(self) -> Path:
        assert self.stack.settings is not None
        return self.stack.settings.storage_dir

    @property
    def redis(self) -> redis.Redis:
        assert self.redis_server is not None
        return redis.Redis.from_url(self.redis_server.url)

    def env(self) -> dict[str, str]:
        assert self.redis_server is not None
        return {
            **self.stack.component_env(),
            "VIDUP_REDIS_URL": self.redis_server.url,
            "VIDUP_NAMESPACE": self.namespace,
            "VIDUP_QUEUE": self.queue,
            **FAST_ENV,
            **self.extra_env,
        }

    def start_operator(self, index: int = 0, env: dict[str, str] | None = None) -> ManagedProcess:
        process = components.operator_process(self.run_dir, {**self.env(), **(env or {})}, index).start()
        self.processes.append(process)
        return process

    def start_worker(self, index: int) -> ManagedProcess:
        # A fresh name each time: a SIGKILLed worker's registration outlives it in Redis.
        process = components.worker_process(self.run_dir, self.env(), index).start()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(grace=5)
        self.processes.clear()
        if self.api is not None:
            custom = client.CustomObjectsApi(self.api)
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]:
                # No operator runs any more: drop finalizers so the namespace can go.
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, item["metadata"]["name"],
                    {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json",
                )
            with contextlib.suppress(ApiException):
                client.CoreV1Api(self.api).delete_namespace(self.namespace)
            self.api.close()
        if self.redis_server is not None:
            self.redis_server.stop()

    # -- resources -----------------------------------------------------------------------------

    def upload(self, name: str, seconds: float = 4, size: str = "320x240", **kw: Any) -> str:
        """Put a generated video where an upload would land; returns its storage-relative path."""
        relpath = upload_relpath(name)
        make_video(self.storage_dir / relpath, seconds, size, **kw)
        return relpath

    def create(self, name: str, source_path: str, renditions: tuple[int, ...] = (480,),
               segment_seconds: int = 10) -> dict[str, Any]:
        size = (self.storage_dir / source_path).stat().st_size
        spec = VideoSpec("demo", source_path, size, f"{name}.mp4", renditions=renditions,
                         segment_seconds=segment_seconds)
        body = VideoTranscodeObject(name, self.namespace, spec).to_body()
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body,
        )
        return result

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def status(self, name: str) -> dict[str, Any]:
        body = self.get(name) or {}
        return dict(body.get("status") or {})

    def wait_phase(self, name: str, phases: set[str] | str, timeout: float = 120) -> dict[str, Any]:
        wanted = {phases} if isinstance(phases, str) else phases

        def check() -> dict[str, Any] | None:
            self.check_processes()
            status = self.status(name)
            return status if status.get("phase") in wanted else None

        return wait_for(check, timeout, f"{name} to reach {sorted(wanted)}", interval=0.2)

    def events(self, name: str) -> list[dict[str, Any]]:
        items = client.CoreV1Api(self.api).list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}",
        ).items
        return [{"reason": e.reason, "type": e.type, "message": e.message} for e in items]

    def watch_status(self, name: str, timeout: float) -> Iterator[dict[str, Any]]:
        """Every status the API server shows for ``name`` (a watch, so no change is missed)."""
        from kubernetes import watch

        stream = watch.Watch().stream(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
            field_selector=f"metadata.name={name}", timeout_seconds=int(timeout),
        )
        for event in stream:
            yield dict(event["object"].get("status") or {})

    def check_processes(self) -> None:
        """Fail fast (with the log) if an operator died that we did not kill."""
        for process in self.processes:
            if process.name.startswith("operator") and getattr(process, "expected_dead", False) is False:
                process.check_running()

    def kill(self, process: ManagedProcess) -> None:
        """SIGKILL the process group: what a node or container crash does to a pod."""
        process.expected_dead = True  # type: ignore[attr-defined]
        os.killpg(process.pid, signal.SIGKILL)
        assert process.popen is not None
        process.popen.wait(timeout=10)


def open_world(stack: Stack, run_dir: Path, **env: str) -> Iterator[World]:
    """A fixture's body: a fresh namespace, Redis and queue (with ``env`` for every process it
    starts), stopped with everything it started."""
    world = World(stack, run_dir, extra_env=dict(env)).start()
    try:
        yield world
    finally:
        world.stop()


def unique(prefix: str) -> str:
    """A resource name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
