"""``python -m vidup_ingest --host H --port P``: serve the app with gunicorn.

gthread workers: each streaming upload holds a thread for its whole PATCH, so the ingest serves
``VIDUP_INGEST_WORKERS * VIDUP_INGEST_THREADS`` concurrent requests (default 2 * 32). Each worker
builds its own app (no preload), so Redis/Kubernetes clients and background threads are per process.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from vidup_ingest.config import IngestConfig


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
    config = IngestConfig.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    IngestServer({
        "bind": f"{args.host}:{args.port}",
        "worker_class": "gthread",
        "workers": config.workers,
        "threads": config.threads,
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 75,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": os.environ.get("VIDUP_INGEST_LOG_LEVEL", "info"),
        # Several ingests run side by side (replicas, tests): no shared control socket in $HOME.
        "control_socket_disable": True,
    }).run()


if __name__ == "__main__":
    main()
