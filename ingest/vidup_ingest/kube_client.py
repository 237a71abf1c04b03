"""The ingest's one Kubernetes client: built lazily in each process, because gunicorn forks its
workers after import and a client's connection pool must not be shared across a fork. The library
is imported with the module, at boot: on a cold page cache its import took seconds, which the
first upload to finish in each process paid."""

from __future__ import annotations

import os
import threading
from typing import Any

from kubernetes import client

from vidup.kube_config import client_configuration

#: Connections kept per process: every open live-progress WebSocket holds one watch connection.
POOL_SIZE = 64

_lock = threading.Lock()
_api: Any = None
_pid = 0


def custom_objects_api() -> Any:
    """This process's CustomObjectsApi (credentials per :func:`vidup.kube_config.client_configuration`)."""
    global _api, _pid
    with _lock:
        if _api is None or _pid != os.getpid():
            configuration = client_configuration()
            configuration.connection_pool_maxsize = POOL_SIZE
            _api = client.CustomObjectsApi(client.ApiClient(configuration))
            _pid = os.getpid()
        return _api
