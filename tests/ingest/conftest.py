"""Fixtures for the ingest tests (helpers live in ingest_support, importable from the tests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ingest_support import Ingest, IngestFactory

from vidup.localstack.stack import Stack


@pytest.fixture(scope="module")
def start_ingest(kube: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestFactory]:
    factory = IngestFactory(kube, tmp_path_factory.mktemp("ingests"))
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
