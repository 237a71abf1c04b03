"""How vidup's own processes are started: the one definition shared by `vidup up` and the tests."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from vidup.localstack.processes import ManagedProcess


def worker_process(run_dir: Path, env: Mapping[str, str], index: int) -> ManagedProcess:
    """An FFmpeg worker: an RQ worker on the transcode queue (``python -m vidup_transcoder.worker``)."""
    argv = [sys.executable, "-m", "vidup_transcoder.worker", "--name", f"worker-{index}"]
    return ManagedProcess(f"worker-{index}", argv, run_dir / "logs" / f"worker-{index}.log", env=env)


def ingest_process(run_dir: Path, env: Mapping[str, str], port: int, index: int = 0) -> ManagedProcess:
    """The TUS ingest and status API (``python -m vidup_ingest``), listening on 127.0.0.1:port."""
    argv = [sys.executable, "-m", "vidup_ingest", "--host", "127.0.0.1", "--port", str(port)]
    return ManagedProcess(
        f"ingest-{index}", argv, run_dir / "logs" / f"ingest-{index}.log", env=env,
        url=f"http://127.0.0.1:{port}",
    )


def operator_process(run_dir: Path, env: Mapping[str, str], index: int = 0) -> ManagedProcess:
    """The Kopf operator (``python -m vidup_operator``), using KUBECONFIG from ``env``."""
    argv = [sys.executable, "-m", "vidup_operator"]
    return ManagedProcess(f"operator-{index}", argv, run_dir / "logs" / f"operator-{index}.log", env=env)
