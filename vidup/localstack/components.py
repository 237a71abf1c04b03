"""How vidup's own processes are started: the one definition shared by `vidup up` and the tests.

Each component serves Prometheus metrics on a port of its own when given one (``metrics_port``):
loopback only, like everything the local stack starts; ``metrics_url`` is where to scrape it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from vidup.localstack.processes import ManagedProcess


def metrics_env(port: int | None) -> dict[str, str]:
    """The variables that make a component serve its metrics on 127.0.0.1:``port`` (None: none)."""
    return {} if port is None else {"VIDUP_METRICS_PORT": str(port), "VIDUP_METRICS_HOST": "127.0.0.1"}


def metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


def worker_process(run_dir: Path, env: Mapping[str, str], index: int, metrics_port: int | None = None,
                   ) -> ManagedProcess:
    """An FFmpeg worker: an RQ worker on the transcode queue (``python -m vidup_transcoder.worker``)."""
    argv = [sys.executable, "-m", "vidup_transcoder.worker", "--name", f"worker-{index}"]
    return ManagedProcess(f"worker-{index}", argv, run_dir / "logs" / f"worker-{index}.log",
                          env={**env, **metrics_env(metrics_port)})


def ingest_process(run_dir: Path, env: Mapping[str, str], port: int, index: int = 0,
                   metrics_port: int | None = None) -> ManagedProcess:
    """The TUS ingest and status API (``python -m vidup_ingest``), listening on 127.0.0.1:port.
    Its gunicorn workers share a metrics directory in the run directory, emptied at each start."""
    argv = [sys.executable, "-m", "vidup_ingest", "--host", "127.0.0.1", "--port", str(port)]
    extra = metrics_env(metrics_port)
    if metrics_port is not None:
        extra["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics" / f"ingest-{index}")
    return ManagedProcess(
        f"ingest-{index}", argv, run_dir / "logs" / f"ingest-{index}.log", env={**env, **extra},
        url=f"http://127.0.0.1:{port}",
    )


def operator_process(run_dir: Path, env: Mapping[str, str], index: int = 0, metrics_port: int | None = None,
                     ) -> ManagedProcess:
    """The Kopf operator (``python -m vidup_operator``), using KUBECONFIG from ``env``."""
    argv = [sys.executable, "-m", "vidup_operator"]
    return ManagedProcess(f"operator-{index}", argv, run_dir / "logs" / f"operator-{index}.log",
                          env={**env, **metrics_env(metrics_port)})
