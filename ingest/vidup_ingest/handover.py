"""Hand a finished upload to Kubernetes: create its VideoTranscode, exactly once.

The resource is named after the upload id, so creating it twice is impossible: a second attempt
(retried final concatenation, a sweep retrying after an API outage) gets 409 AlreadyExists, which
counts as success. The API client is made lazily in each worker process (after gunicorn forks).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from vidup.resource import GROUP, PLURAL, RENDITION_HEIGHTS, VERSION, VideoSpec, VideoTranscodeObject
from vidup_ingest.protocol import UploadInfo

log = logging.getLogger(__name__)


def transcode_body(info: UploadInfo, namespace: str, source_path: str) -> dict[str, Any]:
    """The VideoTranscode for a finished upload (pure: tested without a cluster)."""
    spec = VideoSpec(
        tenant=info.tenant,
        source_path=source_path,
        source_size=info.length or 0,
        filename=info.filename,
        renditions=info.renditions or RENDITION_HEIGHTS,
    )
    return VideoTranscodeObject(name=info.id, namespace=namespace, spec=spec,
                                labels={f"{GROUP}/upload": info.id}).to_body()


class Handover:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._api: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def _custom_objects(self) -> Any:
        with self._lock:
            if self._api is None or self._pid != os.getpid():
                from kubernetes import client, config

                if os.environ.get("KUBECONFIG"):
                    config.load_kube_config()
                else:
                    config.load_incluster_config()
                self._api = client.CustomObjectsApi()
                self._pid = os.getpid()
            return self._api

    def create(self, info: UploadInfo, source_path: str) -> bool:
        """True once the resource exists (created now or before); False if the API failed —
        the caller keeps the upload marked not-handed-over and the sweep retries."""
        try:
            api = self._custom_objects()
            api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, transcode_body(info, self.namespace, source_path),
                _request_timeout=10,
            )
            log.info("created VideoTranscode %s for tenant %s", info.id, info.tenant)
            return True
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return True
            log.warning("could not create VideoTranscode %s (will retry): %s", info.id, exc)
            return False
