"""Fixtures for the ingest tests (helpers live in ingest_support, importable from the tests).

Every test that starts an ingest runs once per storage backend, ``[file]`` and ``[s3]`` (a real
SeaweedFS): ``backend`` is a module-scoped parameter of ``start_ingest``, so each module starts
its ingests once per backend. A test about the file backend itself (fsync, the page cache, a
data file cut short) is marked ``@pytest.mark.file_only("why")`` and gets only ``[file]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ingest_support import Ingest, IngestFactory

from vidup.localstack.stack import Stack

BACKENDS = ("file", "s3")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "file_only(reason): an ingest test for the file backend only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("file_only")
    if marker is not None and not (marker.args and isinstance(marker.args[0], str) and marker.args[0]):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: file_only needs a reason")
    backends = ["file"] if marker is not None else list(BACKENDS)
    metafunc.parametrize("backend", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of this module's ingests (parametrized by ``pytest_generate_tests``)."""
    return str(request.param)


@pytest.fixture(scope="module")
def start_ingest(kube: Stack, backend: str, request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestFactory]:
    s3 = request.getfixturevalue("s3_server") if backend == "s3" else None
    factory = IngestFactory(kube, tmp_path_factory.mktemp(f"ingests-{backend}"), s3)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def ingest(start_ingest: IngestFactory) -> Ingest:
    """A shared ingest for tests that leave no lasting state behind them (each makes new uploads)."""
    return start_ingest()


@pytest.fixture
def payload() -> Callable[[int], bytes]:
    def make(size: int) -> bytes:
        return os.urandom(size)

    return make
