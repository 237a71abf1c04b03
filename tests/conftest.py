"""Session-wide fixtures: real services started by the same code as `vidup up`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vidup.localstack.redis_server import RedisServer
from vidup.localstack.stack import Stack


@pytest.fixture(scope="session")
def session_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vidup-run")


@pytest.fixture(scope="session")
def redis_server(session_run_dir: Path) -> Iterator[RedisServer]:
    """One real redis-server for tests that need only Redis; isolate with unique key names."""
    server = RedisServer(session_run_dir / "standalone").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session's stack core: a real etcd + kube-apiserver with the CRDs applied, and Redis.

    Started once (components=()); tests add the ingest, operator and workers they need through
    the stack's own ``start_*`` methods, so they run exactly what `vidup up` runs.
    """
    stack = Stack(tmp_path_factory.mktemp("stack"), components=()).start()
    yield stack
    stack.stop()
