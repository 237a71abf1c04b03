"""Session-wide fixtures: real services started by the same code as `vidup up`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vidup.localstack.redis_server import RedisServer


@pytest.fixture(scope="session")
def session_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vidup-run")


@pytest.fixture(scope="session")
def redis_server(session_run_dir: Path) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests isolate themselves with unique key names."""
    server = RedisServer(session_run_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
