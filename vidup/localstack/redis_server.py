"""A private redis-server on a free loopback port, for the local stack and the tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import redis

from vidup.localstack.processes import ManagedProcess, free_port, wait_until


@dataclass
class RedisServer:
    run_dir: Path
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = self.port or free_port()
        data = self.run_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
        ]
        self.process = ManagedProcess("redis", argv, self.run_dir / "logs" / "redis.log").start()
        client = redis.Redis.from_url(self.url)
        try:
            wait_until(lambda: bool(client.ping()), 15, f"redis on port {self.port}")
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
