"""Session-wide fixtures: real services started by the same code as `vidup up`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from vidup.localstack.redis_server import RedisServer
from vidup.localstack.s3_server import S3Server
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
def s3_server(session_run_dir: Path) -> Iterator[S3Server]:
    """One real S3 server (SeaweedFS, as `vidup up --storage s3` runs it) for the session; tests
    isolate themselves with unique key prefixes (``S3Blobs(..., prefix=...)``)."""
    server = S3Server(session_run_dir / "s3-standalone").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session's stack core: a real etcd + kube-apiserver with the CRDs applied, and Redis.

    Started once (components=()); tests add the ingest, operator and workers they need through
    the stack's own ``start_*`` methods, so they run exactly what `vidup up` runs.
    """
    stack = Stack(tmp_path_factory.mktemp("stack"), components=()).start()
    yield stack
    stack.stop()


#: Debian's chromium: Playwright drives the system browser (its own downloads cannot work here).
CHROMIUM = Path(os.environ.get("VIDUP_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Chromium for the web app's tests (autoplay allowed, as after a click)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                   args=["--autoplay-policy=no-user-gesture-required"])
    yield b
    b.close()
