"""The VideoTranscode custom resource: its identity, phases and spec shape, defined once for everyone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

GROUP = "vidup.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VideoTranscode"
PLURAL = "videotranscodes"
SINGULAR = "videotranscode"
SHORT_NAME = "vt"
CATEGORY = "vidup"
CRD_NAME = f"{PLURAL}.{GROUP}"

#: The renditions a client may ask for, by the height of the short side.
RENDITION_HEIGHTS: tuple[int, ...] = (1080, 720, 480)
DEFAULT_SEGMENT_SECONDS = 10
MIN_SEGMENT_SECONDS = 2
MAX_SEGMENT_SECONDS = 30


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED)


_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def is_valid_name(name: str) -> bool:
    """Resource names are DNS labels; upload ids are chosen so they are valid names as they are."""
    return bool(_NAME_RE.match(name))


@dataclass(frozen=True)
class VideoSpec:
    """What a VideoTranscode asks for. ``source_path`` is relative to the shared storage root."""

    tenant: str
    source_path: str
    source_size: int
    filename: str = ""
    renditions: tuple[int, ...] = RENDITION_HEIGHTS
    segment_seconds: int = DEFAULT_SEGMENT_SECONDS

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "tenant": self.tenant,
            "source": {"path": self.source_path, "size": self.source_size},
            "renditions": list(self.renditions),
            "segmentSeconds": self.segment_seconds,
        }
        if self.filename:
            spec["source"]["filename"] = self.filename
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> VideoSpec:
        source = spec.get("source") or {}
        return cls(
            tenant=spec["tenant"],
            source_path=source["path"],
            source_size=int(source.get("size", 0)),
            filename=source.get("filename", ""),
            renditions=tuple(spec.get("renditions") or RENDITION_HEIGHTS),
            segment_seconds=int(spec.get("segmentSeconds", DEFAULT_SEGMENT_SECONDS)),
        )


@dataclass(frozen=True)
class VideoTranscodeObject:
    """A whole resource body ready to create."""

    name: str
    namespace: str
    spec: VideoSpec
    labels: dict[str, str] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {f"{GROUP}/tenant": self.spec.tenant, **self.labels},
            },
            "spec": self.spec.to_spec(),
        }
