"""How a long video is cut into chunks that workers encode in parallel, and the names of the pieces.

Shared by the operator (which enqueues one job per piece and tracks them) and the worker (which
encodes one piece): both must cut the same source at the same times, so the plan is a pure function
of the source's probed duration, the segment length and the chunk length, nothing else.

* A chunk is a whole number of segments long, so every chunk starts on a segment boundary: its first
  segment number is global (``first_segment``) and its keyframes fall where the single-pass encode's
  would. The last chunk takes the remainder; a remainder shorter than one segment joins the chunk
  before it rather than becoming a chunk of a few frames.
* A video is chunked only when it is at least ``min_chunks`` chunks long (the issue's "three chunks'
  worth"): below that the fixed costs of a chunked run (one more probe per chunk, the stitch) are not
  repaid by parallelism.
* The pieces of a chunked video: the video chunks ``c0000``, ``c0001``... and ``audio`` (encoded
  once over the whole source) when the source has sound; then ``stitch`` once all of them are done.
  Each piece is its own RQ job, ``<job id>_<piece>``, so an enqueue of a piece that exists is a no-op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: Between a job id (``vt-<uid>-g<generation>``, dashes only) and a piece name in a piece's job id.
PIECE_SEPARATOR = "_"
AUDIO = "audio"
STITCH = "stitch"
#: The file a finished piece leaves last in its parts directory: its presence is "done".
DONE_MARKER = "done.json"
#: The file a worker keeps fresh in a piece's parts directory while it encodes the piece. Redis
#: knows who runs what, but a FLUSHALL forgets it while the encode goes on; the claim on storage
#: lets the operator tell "lost from Redis, still being encoded" (wait) from "lost" (enqueue again),
#: so a flush never makes a second worker encode a chunk the first is half way through.
CLAIM = "claim.json"
#: How often the encoding worker rewrites its claim, and how old a claim may be and still count.
CLAIM_REFRESH_SECONDS = 5.0
CLAIM_FRESH_SECONDS = 30.0
#: How long a piece Redis forgot is given for its claim to appear before it is enqueued again: a
#: worker writes the claim as its run starts, a moment after it took the job off the queue, and a
#: flush in that moment must not make the piece run twice.
CLAIM_GRACE_SECONDS = 5.0
#: VIDUP_CHUNK_SECONDS's default (:class:`vidup.settings.Settings`).
DEFAULT_CHUNK_SECONDS = 60


@dataclass(frozen=True)
class Chunk:
    """A time range of the source: ``[start_seconds, start_seconds + duration_seconds)``."""

    index: int
    start_seconds: float
    duration_seconds: float
    #: The global number of the chunk's first HLS segment (``start_seconds / segment_seconds``).
    first_segment: int

    @property
    def name(self) -> str:
        return chunk_name(self.index)


def chunk_name(index: int) -> str:
    return f"c{index:04d}"


def chunk_length(segment_seconds: int, chunk_seconds: int) -> int:
    """``chunk_seconds`` rounded to a whole number of segments (at least one)."""
    segment_seconds = max(1, segment_seconds)
    return max(1, round(chunk_seconds / segment_seconds)) * segment_seconds


def wants_chunks(duration_seconds: float, segment_seconds: int, chunk_seconds: int, min_chunks: int) -> bool:
    """Whether a source this long is chunked (``chunk_seconds`` 0 turns chunking off)."""
    if chunk_seconds <= 0 or min_chunks < 2:
        return False
    return duration_seconds >= min_chunks * chunk_length(segment_seconds, chunk_seconds)


def plan_chunks(duration_seconds: float, segment_seconds: int, chunk_seconds: int) -> list[Chunk]:
    """The chunks covering ``[0, duration_seconds)``; see the module docstring for the rules."""
    length = chunk_length(segment_seconds, chunk_seconds)
    segment_seconds = max(1, segment_seconds)
    starts = list(range(0, max(1, int(duration_seconds // length) + 1)))
    starts = [i * length for i in starts if i * length < duration_seconds] or [0]
    if len(starts) > 1 and duration_seconds - starts[-1] < segment_seconds:
        starts.pop()  # a sliver of a chunk joins the one before it
    chunks = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else duration_seconds
        chunks.append(Chunk(i, float(start), float(end - start), start // segment_seconds))
    return chunks


def pieces(total_chunks: int, has_audio: bool) -> list[str]:
    """Every piece that must be done before the stitch, in the order they are enqueued."""
    return [chunk_name(i) for i in range(total_chunks)] + ([AUDIO] if has_audio else [])


def piece_job_id(job_id: str, piece: str) -> str:
    """The RQ id of one piece of ``job_id``'s video (RQ ids are ``[A-Za-z0-9_-]+``)."""
    return f"{job_id}{PIECE_SEPARATOR}{piece}"


def parent_job_id(job_id: str) -> str:
    """The video's job id for a piece's job id (itself for the video's own job)."""
    return job_id.split(PIECE_SEPARATOR, 1)[0]


def claim_body(now: float, owner: str) -> bytes:
    """What a worker writes as its claim on a piece: when, and who (for people reading storage)."""
    return json.dumps({"at": now, "owner": owner}).encode()


def claim_is_fresh(body: bytes | None, now: float) -> bool:
    """Whether a claim read from storage was written less than ``CLAIM_FRESH_SECONDS`` ago (a
    missing or unreadable claim is not)."""
    if not body:
        return False
    try:
        at = float(json.loads(body)["at"])
    except (ValueError, KeyError, TypeError):
        return False
    return now - at < CLAIM_FRESH_SECONDS
