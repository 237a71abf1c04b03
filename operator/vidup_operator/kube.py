"""The API server edge: patch a VideoTranscode's status, post Events. Nothing else.

Only needs what the chart grants: ``patch`` on ``videotranscodes/status`` and ``create`` on core
``events``. Kopf's own writes (its finalizer) need ``patch`` on ``videotranscodes``.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vidup.kube_config import client_configuration
from vidup.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from vidup_operator.decisions import Event
from vidup_operator.status import rfc3339

log = logging.getLogger(__name__)

COMPONENT = "vidup-operator"


def new_api_client() -> client.ApiClient:
    return client.ApiClient(client_configuration())


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.instance = f"{socket.gethostname()}-{os.getpid()}"

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch ``status``; returns the new object, or None if the resource is gone."""
        try:
            result: dict[str, Any] = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": patch},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def post_event(self, body: dict[str, Any], event: Event) -> None:
        """A core/v1 Event on the resource; failures are logged, never fatal (events are best effort)."""
        meta = body.get("metadata", {})
        stamp = rfc3339(datetime.now(UTC))
        namespace = meta.get("namespace", "default")
        manifest = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": API_VERSION, "kind": KIND, "name": meta.get("name"), "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "reason": event.reason,
            "message": event.message[:1024],
            "type": event.type,
            "source": {"component": COMPONENT},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(namespace, manifest)
        except ApiException as exc:
            log.warning("could not post event %s on %s: %s", event.reason, meta.get("name"), exc.reason)
