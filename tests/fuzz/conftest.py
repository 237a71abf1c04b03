"""Fixtures for the fuzz tests: one real ingest for the whole fuzz session, started by the ingest
tests' ``IngestFactory`` (the code `vidup up` runs) on the session's kube-apiserver and Redis, in a
namespace of its own; the cases per route are printed at the end and written to
build/fuzz-report.txt."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "ingest"))

from fuzz_support import CLASSES, COUNTS, DEEP, SECONDS
from fuzz_world import Targets, World, build_world
from ingest_support import IngestFactory

import vidup_ingest.webapp.routes as webapp_routes
from vidup.localstack.stack import Stack

#: Seconds the fuzz ingest waits for a stalled body (VIDUP_INGEST_READ_TIMEOUT): short, so the
#: cases that stall stay cheap; the client's own timeout (fuzz_http.TIMEOUT) is well above it.
READ_TIMEOUT = 1.0
REPORT = Path(__file__).resolve().parents[2] / "build" / "fuzz-report.txt"


@pytest.fixture(scope="session")
def world(kube: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    namespace = f"fuzz-{uuid.uuid4().hex[:8]}"
    api = kube.api_client()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    factory = IngestFactory(kube, tmp_path_factory.mktemp("fuzz-ingest"))
    try:
        ingest = factory(
            VIDUP_NAMESPACE=namespace,
            VIDUP_INGEST_READ_TIMEOUT=str(READ_TIMEOUT),
            VIDUP_INGEST_LOCK_WAIT="3",
            VIDUP_INGEST_CLEANUP_INTERVAL="0",  # nothing but the fuzz cases changes state
            VIDUP_MAX_UPLOAD_SIZE=str(1 << 20),
        )
        yield build_world(ingest, api, namespace, webapp_routes.STATIC_DIR)
    finally:
        factory.stop_all()
        client.CoreV1Api(api).delete_namespace(namespace)
        api.close()


@pytest.fixture(scope="session")
def targets(world: World) -> Targets:
    return Targets(world)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not COUNTS:
        return
    width = max(len(r) for r in COUNTS)
    lines = []
    for route in sorted(COUNTS):
        classes = " ".join(f"{c}:{n}" for (r, c), n in sorted(CLASSES.items()) if r == route)
        lines.append(f"{route:<{width}}  {COUNTS[route]:>6} cases  {SECONDS[route]:7.1f} s  ({classes})")
    lines.append(f"{'total':<{width}}  {sum(COUNTS.values()):>6} cases  {sum(SECONDS.values()):7.1f} s"
                 f"  ({'deep, random' if DEEP else 'derandomized'})")
    terminalreporter.write_sep("=", "vidup fuzz: cases run per route")
    for line in lines:
        terminalreporter.write_line(line)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
