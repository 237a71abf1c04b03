"""Helpers for the status API tests: a real ingest started by the stack's own ``start_ingest`` on
the session's real kube-apiserver, and VideoTranscode resources written with the Kubernetes client.

Until the operator runs in these tests, a test plays the operator's part by patching the status
subresource itself: real objects on the real API server, read back by the ingest over HTTP.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from vidup.localstack.processes import ManagedProcess
from vidup.resource import GROUP, PLURAL, VERSION, VideoSpec, VideoTranscodeObject
from vidup.storage.layout import output_relpath, upload_relpath


@dataclass
class StatusIngest:
    """One ingest replica with its own storage, namespace and (uniquely named) tenants."""

    url: str
    process: ManagedProcess
    storage: Path
    namespace: str
    keys: dict[str, str]
    tenants: dict[str, str]
    secret: str
    api: client.ApiClient

    def headers(self, alias: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[alias]}"}

    @property
    def objects(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create_video(self, alias: str = "acme", filename: str = "clip.mp4", size: int = 1234) -> str:
        """A VideoTranscode as the ingest's handover creates it (same body builder)."""
        video_id = uuid.uuid4().hex
        spec = VideoSpec(tenant=self.tenants[alias], source_path=upload_relpath(video_id), source_size=size,
                         filename=filename)
        body = VideoTranscodeObject(name=video_id, namespace=self.namespace, spec=spec).to_body()
        self.objects.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        return video_id

    def set_status(self, video_id: str, status: dict[str, Any]) -> None:
        """What the operator does: a merge patch of the status subresource."""
        self.objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, video_id, {"status": status},
            _content_type="application/merge-patch+json",
        )

    def delete_video(self, video_id: str) -> None:
        self.objects.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, video_id)

    def output_dir(self, video_id: str) -> Path:
        path = self.storage / output_relpath(video_id)
        path.mkdir(parents=True, exist_ok=True)
        return path


def completed_status(video_id: str, progress: int = 100) -> dict[str, Any]:
    """A Completed status shaped like the CRD's (paths relative to outputs.path)."""
    return {
        "phase": "Completed",
        "progress": progress,
        "jobId": f"vt-{video_id}-g1",
        "attempts": 1,
        "startedAt": "2026-01-01T00:00:00Z",
        "completedAt": "2026-01-01T00:01:00Z",
        "source": {"durationSeconds": 12.5, "width": 1920, "height": 1080, "hasAudio": True},
        "outputs": {
            "path": output_relpath(video_id),
            "masterPlaylist": "master.m3u8",
            "poster": "poster.jpg",
            "summary": "1080p,720p",
            "renditions": [
                {"name": "1080p", "width": 1920, "height": 1080, "bandwidth": 5000000,
                 "averageBandwidth": 4000000, "codecs": "avc1.640028,mp4a.40.2", "playlist": "1080p/index.m3u8"},
                {"name": "720p", "width": 1280, "height": 720, "bandwidth": 2800000,
                 "averageBandwidth": 2000000, "codecs": "avc1.64001f,mp4a.40.2", "playlist": "720p/index.m3u8"},
            ],
        },
    }
