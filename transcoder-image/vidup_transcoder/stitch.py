"""Pure pieces of the stitch: the done markers' content and the concatenated media playlists (the
master, with its audio rendition group, is :func:`vidup_transcoder.master_playlist.render_master`).

A chunked video's pieces each leave a done marker (:data:`vidup.chunking.DONE_MARKER`) listing what
they made: per rendition, the segments with their durations and sizes. The stitch concatenates the
chunks' lists per rendition, in chunk order, into one VOD media playlist (segment numbers are
global, so no file is renamed), and writes the master: each variant names the ``aud`` audio group
and declares the audio's codec and its peak and average rates on top of the video's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vidup_transcoder.master_playlist import Segment

MARKER_VERSION = 1


@dataclass(frozen=True)
class PieceRendition:
    """What one piece made for one rendition (``name`` is the directory: ``1080p``, ``audio``)."""

    name: str
    width: int
    height: int
    segments: list[Segment]


@dataclass(frozen=True)
class PieceMarker:
    """The content of a piece's done marker."""

    piece: str
    kind: str
    start_seconds: float
    duration_seconds: float
    first_segment: int
    renditions: list[PieceRendition]
    frame_rate: str = ""

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "version": MARKER_VERSION, "piece": self.piece, "kind": self.kind,
            "start_seconds": self.start_seconds, "duration_seconds": self.duration_seconds,
            "first_segment": self.first_segment, "frame_rate": self.frame_rate,
            "renditions": [
                {"name": r.name, "width": r.width, "height": r.height,
                 "segments": [{"uri": s.uri, "duration": s.duration, "size": s.size_bytes} for s in r.segments]}
                for r in self.renditions
            ],
        }
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PieceMarker:
        data = json.loads(raw)
        return cls(
            piece=str(data["piece"]), kind=str(data["kind"]),
            start_seconds=float(data["start_seconds"]), duration_seconds=float(data["duration_seconds"]),
            first_segment=int(data["first_segment"]), frame_rate=str(data.get("frame_rate", "")),
            renditions=[
                PieceRendition(str(r["name"]), int(r["width"]), int(r["height"]),
                               [Segment(str(s["uri"]), float(s["duration"]), int(s["size"])) for s in r["segments"]])
                for r in data["renditions"]
            ],
        )

    def rendition(self, name: str) -> PieceRendition:
        for r in self.renditions:
            if r.name == name:
                return r
        raise KeyError(f"piece {self.piece} has no rendition {name}")


def concatenate(chunks: Sequence[Sequence[Segment]]) -> list[Segment]:
    """One rendition's segments of every chunk, in chunk order; refuses a name seen twice (two
    chunks numbering the same segment would overwrite each other's file)."""
    out: list[Segment] = []
    seen: set[str] = set()
    for segments in chunks:
        for seg in segments:
            if seg.uri in seen:
                raise ValueError(f"segment {seg.uri} appears twice")
            seen.add(seg.uri)
            out.append(seg)
    return out


def target_duration(segments: Sequence[Segment]) -> int:
    """RFC 8216 4.3.3.1: every EXTINF rounded to the nearest integer is at most the target."""
    return max((int(s.duration + 0.5) for s in segments), default=1) or 1


def render_media_playlist(segments: Sequence[Segment]) -> str:
    """A VOD media playlist of ``segments`` (each starting with an IDR frame)."""
    if not segments:
        raise ValueError("a media playlist needs at least one segment")
    lines = [
        "#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target_duration(segments)}",
        "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for seg in segments:
        lines += [f"#EXTINF:{seg.duration:.6f},", seg.uri]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
