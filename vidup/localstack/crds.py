"""Apply the project's CustomResourceDefinitions and wait until the API server serves them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from vidup.localstack.processes import wait_until

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def crd_documents(crd_dir: Path = CRD_DIR) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(crd_dir.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def apply_crds(api_client: client.ApiClient, crd_dir: Path = CRD_DIR, timeout: float = 60) -> None:
    """Create or replace each CRD, then wait for it to be Established (served)."""
    api = client.ApiextensionsV1Api(api_client)
    for doc in crd_documents(crd_dir):
        name = doc["metadata"]["name"]
        try:
            api.create_custom_resource_definition(doc)
        except ApiException as error:
            if error.status != 409:
                raise
            current = api.read_custom_resource_definition(name)
            doc["metadata"]["resourceVersion"] = current.metadata.resource_version
            api.replace_custom_resource_definition(name, doc)

        def established(crd_name: str = name) -> bool:
            crd = api.read_custom_resource_definition(crd_name)
            return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

        wait_until(established, timeout, f"CRD {name} to be established")
