"""Fixtures for the status API tests: one real ingest per module, in its own namespace so no
operator another module may have started ever touches these hand-written resources."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).parent))

from status_support import StatusIngest

from vidup.apikeys import new_api_key, write_api_keys_file
from vidup.localstack.stack import Stack


@pytest.fixture(scope="module")
def status_ingest(kube: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatusIngest]:
    root = tmp_path_factory.mktemp("status-ingest")
    storage = root / "storage"
    storage.mkdir()
    suffix = uuid.uuid4().hex[:8]
    tenants = {alias: f"{alias}-{suffix}" for alias in ("acme", "globex", "pager")}
    keys = {alias: new_api_key() for alias in tenants}
    keys_file = root / "api-keys.json"
    write_api_keys_file(keys_file, {tenants[a]: k for a, k in keys.items()})
    namespace = f"status-{suffix}"
    api = kube.api_client()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    process = kube.start_ingest(env={
        "VIDUP_STORAGE_DIR": str(storage),
        "VIDUP_API_KEYS_FILE": str(keys_file),
        "VIDUP_NAMESPACE": namespace,
        "VIDUP_RATE_LIMIT_REQUESTS": "100000/minute",
    })
    assert kube.settings is not None
    try:
        yield StatusIngest(url=process.url, process=process, storage=storage, namespace=namespace, keys=keys,
                           tenants=tenants, secret=kube.settings.token_secret, api=api)
    finally:
        process.stop()
        kube.processes.remove(process)
        client.CoreV1Api(api).delete_namespace(namespace)
        api.close()
