"""``python -m vidup_ingest --host H --port P``: serve the app with gunicorn.

Threaded workers (gthread, with request heads read by the event loop: ``server/worker.py``): a
request holds a thread from the moment its head is in until it is answered, so a streaming upload
holds one for its whole PATCH and the ingest serves ``VIDUP_INGEST_WORKERS * VIDUP_INGEST_THREADS``
requests at once (default 2 * 256); connections still sending their head, kept alive or being
closed cost no thread. ``VIDUP_INGEST_HEADER_TIMEOUT=0`` runs gunicorn's stock gthread instead.
Each worker builds its own app (no preload), so Redis/Kubernetes clients and background threads are
per process. With ``VIDUP_METRICS_PORT`` set the master also serves the workers' summed Prometheus
metrics on that port (``server/metrics.py``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from vidup import logs
from vidup_ingest.config import IngestConfig
from vidup_ingest.server import metrics as server_metrics
from vidup_ingest.server.logs import JsonGunicornLogger
from vidup_ingest.server.worker import HeadFirstWorker, gunicorn_worker_connections


class IngestServer(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from vidup_ingest.app import create_app

        return create_app()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vidup_ingest", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    hooks: dict[str, Any] = {}
    port = server_metrics.metrics_port()
    # First: the workers must inherit the directory before prometheus_client is imported. A
    # directory given without a port is still emptied, or the workers would write to a stale one.
    if port or os.environ.get(server_metrics.MULTIPROC_ENV, "").strip():
        directory, owned = server_metrics.prepare_multiprocess_dir()
        hooks = server_metrics.gunicorn_hooks(port, server_metrics.metrics_host(), directory, owned)
    config = IngestConfig.from_env()
    as_json = logs.configure("ingest")  # VIDUP_LOG_FORMAT, VIDUP_LOG_LEVEL; the workers inherit it
    worker_class: type | str = "gthread"
    worker_connections = config.max_connections
    if config.header_timeout > 0:
        worker_class = HeadFirstWorker.configured(config.header_timeout, config.max_connections)
        worker_connections = gunicorn_worker_connections(config.max_connections)
    IngestServer({
        "bind": f"{args.host}:{args.port}",
        "worker_class": worker_class,
        "workers": config.workers,
        "threads": config.threads,
        "worker_connections": worker_connections,
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 75,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": os.environ.get("VIDUP_INGEST_LOG_LEVEL", "info"),
        **({"logger_class": JsonGunicornLogger} if as_json else {}),
        # Several ingests run side by side (replicas, tests): no shared control socket in $HOME.
        "control_socket_disable": True,
        **hooks,
    }).run()


if __name__ == "__main__":
    main()
