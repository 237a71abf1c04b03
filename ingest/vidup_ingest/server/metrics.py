"""Serving the ingest's metrics from gunicorn: prometheus_client's multiprocess mode.

gunicorn runs several worker processes, each with its own counters; a scrape must see their sum,
and a worker that is replaced must not take its counts along. So every worker writes its values to
files in ``PROMETHEUS_MULTIPROC_DIR``, the master serves them summed (``MultiProcessCollector``) on
its own port, and ``child_exit`` marks a dead worker so its live gauges stop counting.

The directory must be set before ``prometheus_client`` is first imported (it picks the storage
then), so :func:`prepare_multiprocess_dir` runs first thing in ``main``, before gunicorn forks. It
must be fresh: values of a previous run would be added to this one's. The metrics port is separate
from the app's so the ingress (which routes the app's port) never exposes it and it needs no tenant
credentials.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: prometheus_client reads this variable (the lower-case one is deprecated).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_port() -> int:
    """``VIDUP_METRICS_PORT``: the port serving ``/metrics`` (0 or empty: no metrics server)."""
    raw = os.environ.get("VIDUP_METRICS_PORT", "").strip()
    return int(raw) if raw else 0


def metrics_host() -> str:
    """``VIDUP_METRICS_HOST``: the address to bind (all interfaces in a pod, loopback locally)."""
    return os.environ.get("VIDUP_METRICS_HOST", "").strip() or "0.0.0.0"


def prepare_multiprocess_dir() -> tuple[Path, bool]:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory: the given one emptied, or a new
    temporary one. Returns it and whether it was created here (then it is removed at exit)."""
    given = os.environ.get(MULTIPROC_ENV, "").strip()
    if given:
        path = Path(given)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="vidup-ingest-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def gunicorn_hooks(port: int, host: str, directory: Path, owned: bool) -> dict[str, Callable[..., Any]]:
    """gunicorn server hooks: serve the summed metrics from the master once it is ready, forget a
    dead worker's live gauges, and remove a temporary directory on exit."""

    def when_ready(server: Any) -> None:
        if not port:
            return
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))
        start_http_server(port, addr=host, registry=registry)
        server.log.info("metrics on http://%s:%d/metrics", host, port)

    def child_exit(server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, path=str(directory))

    def on_exit(server: Any) -> None:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)

    return {"when_ready": when_ready, "child_exit": child_exit, "on_exit": on_exit}
