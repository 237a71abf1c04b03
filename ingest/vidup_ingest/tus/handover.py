"""Hand a finished upload to Kubernetes: create its VideoTranscode, exactly once, and delete it
when the finished upload is terminated.

The resource is named after the upload id, so creating it twice is impossible: a second attempt
(retried final concatenation, a sweep retrying after an API outage) gets 409 AlreadyExists, which
counts as success. Deleting one that is already gone (404) counts as success too.
"""

from __future__ import annotations

import logging
from typing import Any

from vidup.resource import GROUP, PLURAL, RENDITION_HEIGHTS, VERSION, VideoSpec, VideoTranscodeObject
from vidup_ingest import metrics
from vidup_ingest.kube_client import custom_objects_api
from vidup_ingest.tus.protocol import UploadInfo

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

    def create(self, info: UploadInfo, source_path: str) -> bool:
        """True once the resource exists (created now or before); False if the API failed —
        the caller keeps the upload marked not-handed-over and the sweep retries."""
        try:
            api = custom_objects_api()
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
            metrics.HANDOVER_FAILURES.labels("create").inc()
            return False

    def delete(self, upload_id: str) -> bool:
        """True once the upload's resource is gone or going (the operator's finalizer cancels its
        work and removes its outputs); False if the API failed, so the caller keeps the upload."""
        try:
            custom_objects_api().delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, upload_id, _request_timeout=10,
            )
            log.info("deleted VideoTranscode %s (its upload was terminated)", upload_id)
            return True
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return True
            log.warning("could not delete VideoTranscode %s: %s", upload_id, exc)
            metrics.HANDOVER_FAILURES.labels("delete").inc()
            return False
