"""The per-resource loop: observe (Redis), decide (pure), act (RQ, then status, then events).

Runs inside a Kopf daemon while the resource needs work. It keeps its own copy of the status it
last wrote: the operator is the only writer, so that copy is the truth, and deciding from it (not
from a watch event that may lag) keeps one transition from being acted on twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import RedisError

from vidup import chunking
from vidup.resource import VideoSpec
from vidup.settings import Settings
from vidup.storage import layout as storage_layout
from vidup.transcode_jobs import TranscodeRequest, job_id_for
from vidup_operator import metrics
from vidup_operator.config import OperatorConfig
from vidup_operator.decisions import (
    Decision,
    JobCommand,
    Observation,
    PieceCommand,
    chunked_stage,
    decide,
    needs_work,
    pending_patch,
)
from vidup_operator.jobs import JobStore
from vidup_operator.jobview import JobState, JobView
from vidup_operator.kube import Kube
from vidup_operator.outputs import blobs_for, remove_parts
from vidup_operator.wakeups import Wakeups

log = logging.getLogger(__name__)


class Stopped(Protocol):
    """Kopf's ``stopped`` kwarg: falsy while the daemon should run; ``await stopped.wait(t)``."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Any: ...


@dataclass
class Runtime:
    """What every resource's loop shares: config, Redis/RQ, the API client, the wake-up hub."""

    config: OperatorConfig
    jobs: JobStore
    kube: Kube
    wakeups: Wakeups


def request_for(name: str, spec: Mapping[str, Any], settings: Settings | None = None) -> TranscodeRequest:
    """The worker's request: the resource name is the video id; outputs go to ``outputs/<name>``.
    A long source is chunked as ``settings`` say (VIDUP_CHUNK_*; none: never)."""
    video = VideoSpec.from_spec(dict(spec))
    return TranscodeRequest(
        video_id=name,
        source_path=video.source_path,
        output_path=storage_layout.output_relpath(name),
        renditions=list(video.renditions),
        segment_seconds=video.segment_seconds,
        chunk_seconds=settings.chunk_seconds if settings is not None else 0,
        chunk_min_chunks=settings.chunk_min_chunks if settings is not None else 0,
    )


def piece_request(name: str, spec: Mapping[str, Any], job_id: str, piece: PieceCommand) -> TranscodeRequest:
    """One piece of a chunked video: the video's request with the plan's facts and the parts path."""
    return dataclasses.replace(
        request_for(name, spec), kind=piece.kind, chunk=piece.chunk, media_seconds=piece.media_seconds,
        chunk_seconds=piece.chunk_seconds, parts_path=storage_layout.parts_relpath(name, job_id),
    )


@dataclass(frozen=True)
class PiecesSeen:
    views: dict[str, JobView]
    markers: frozenset[str]
    progress: dict[str, int]


class Reconciler:
    def __init__(self, runtime: Runtime, body: Mapping[str, Any]) -> None:
        self.runtime = runtime
        self.body = body  # Kopf's live view: spec/metadata follow the watch stream
        self.status: dict[str, Any] = dict(body.get("status") or {})
        #: Pieces of a chunked video seen missing from Redis, since when (monotonic seconds).
        self.missing_since: dict[str, float] = {}
        self.last_progress_patch = 0.0

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.body.get("metadata") or {}

    def generation(self) -> int:
        return int(self.meta.get("generation") or 1)

    async def run(self, stopped: Stopped) -> None:
        """Reconcile until Kopf stops the daemon (the resource is terminal, deleted, or we step down)."""
        config = self.runtime.config
        while not stopped:
            job_id = job_id_for(str(self.meta.get("uid")), self.generation())
            wake_after = config.poll_seconds
            try:
                decision = await self.step()
            except RedisError as exc:
                log.warning("%s: Redis unavailable (%s); retrying", self.meta.get("name"), exc)
                wake_after = max(config.poll_seconds, 2.0)
            else:
                if decision.wake_after is not None:
                    wake_after = min(wake_after, max(0.05, decision.wake_after))
                if not needs_work(self.generation(), self.status):
                    # Terminal: Kopf stops us once the watch shows it; no need to poll until then.
                    wake_after = 5.0
            await self._sleep(job_id, wake_after, stopped)
            # Bound the write rate: a chatty encode must not turn into a patch per percent.
            since = time.monotonic() - self.last_progress_patch
            if since < config.min_patch_seconds:
                await asyncio.sleep(config.min_patch_seconds - since)
        self.runtime.wakeups.drop(job_id_for(str(self.meta.get("uid")), self.generation()))

    async def _sleep(self, job_id: str, timeout: float, stopped: Stopped) -> None:
        """Until news for the job, the timeout, or Kopf asking us to stop (so we exit gracefully)."""

        async def until_stopped() -> None:
            await stopped.wait(timeout)

        tasks = {
            asyncio.ensure_future(self.runtime.wakeups.wait(job_id, timeout)),
            asyncio.ensure_future(until_stopped()),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()

    async def step(self) -> Decision:
        """One observe-decide-act round."""
        if self.meta.get("deletionTimestamp"):
            return Decision()
        uid, generation = str(self.meta.get("uid")), self.generation()
        job_id = job_id_for(uid, generation)
        spec = self.body.get("spec") or {}
        jobs = self.runtime.jobs
        view, progress = await asyncio.to_thread(self._observe, jobs, job_id)
        pieces = PiecesSeen({}, frozenset(), {})
        if chunked_stage(self.status) and self.status.get("jobId") == job_id:
            pieces = await asyncio.to_thread(self._observe_pieces, jobs, job_id)
        video = VideoSpec.from_spec(dict(spec))
        obs = Observation(
            uid=uid, generation=generation, renditions=tuple(video.renditions),
            status=self.status, job=view, progress=progress, now=datetime.now(UTC),
            segment_seconds=video.segment_seconds, chunk_seconds=self.runtime.config.settings.chunk_seconds,
            pieces=pieces.views, markers=pieces.markers, piece_progress=pieces.progress,
        )
        decision = decide(obs, self.runtime.config.policy)
        if decision.idle:
            return decision
        # Shielded: once the job is touched, the status and events must follow even if Kopf
        # cancels the daemon (it does when our own Completed patch makes the resource terminal).
        await asyncio.shield(self.act(decision, obs, spec))
        return decision

    @staticmethod
    def _observe(jobs: JobStore, job_id: str) -> tuple[JobView, int | None]:
        return jobs.observe(job_id), jobs.progress(job_id)

    def _observe_pieces(self, jobs: JobStore, job_id: str) -> PiecesSeen:
        """Each piece's job and progress, and, for every piece Redis does not call done, whether its
        done marker is on storage: the marker is the record that outlives a Redis flush."""
        chunks = self.status.get("chunks") or {}
        has_audio = bool((self.status.get("source") or {}).get("hasAudio"))
        names = chunking.pieces(int(chunks.get("total") or 0), has_audio)
        views = {p: jobs.observe(chunking.piece_job_id(job_id, p)) for p in [*names, chunking.STITCH]}
        progress = {}
        for p in names:
            if views[p].state is JobState.RUNNING:
                progress[p] = jobs.progress(chunking.piece_job_id(job_id, p)) or 0
        blobs = blobs_for(self.runtime.config.settings)
        parts = storage_layout.parts_relpath(str(self.meta.get("name")), job_id)
        markers = frozenset(
            p for p in names
            if not (views[p].state is JobState.FINISHED and views[p].result is not None)
            and blobs.size(f"{parts}/{p}/{chunking.DONE_MARKER}") is not None
        )
        now, ticks = time.time(), time.monotonic()
        for p in names:
            if p in markers or views[p].state is not JobState.MISSING:
                self.missing_since.pop(p, None)
                continue
            # Redis forgot the piece (every piece was enqueued when the video was chunked). A worker
            # may still encode it (its claim is fresh), or have just taken it off the queue (its
            # claim is about to appear): wait for it rather than have the piece run twice.
            first = self.missing_since.setdefault(p, ticks)
            if ticks - first < chunking.CLAIM_GRACE_SECONDS or \
                    chunking.claim_is_fresh(blobs.read_bytes(f"{parts}/{p}/{chunking.CLAIM}"), now):
                views[p] = JobView(JobState.RUNNING)
        return PiecesSeen(views, markers, progress)

    async def act(self, decision: Decision, obs: Observation, spec: Mapping[str, Any]) -> None:
        """Job first, then status, then events: a crash in between repeats the step harmlessly."""
        name = str(self.meta.get("name"))
        jobs = self.runtime.jobs
        status_patch = decision.status
        before = dict(self.status)  # _patch replaces self.status; the metrics compare the two
        if decision.cancel_job_id:
            await asyncio.to_thread(jobs.cancel, decision.cancel_job_id)
            await asyncio.to_thread(jobs.forget, decision.cancel_job_id)
        for cancel in decision.cancel_pieces:
            await asyncio.to_thread(jobs.cancel, cancel)
        job_id = job_id_for(str(self.meta.get("uid")), self.generation())
        for piece in decision.pieces:
            await asyncio.to_thread(
                jobs.enqueue, piece.job_id, piece_request(name, spec, job_id, piece), replace=True,
            )
        if decision.job is not JobCommand.NONE:
            request = request_for(name, spec, self.runtime.config.settings)
            try:
                await asyncio.to_thread(
                    jobs.enqueue, decision.job_id, request, replace=decision.job is JobCommand.REPLACE,
                )
            except RedisError as exc:
                if self.status.get("jobId") == decision.job_id and self.status.get("phase") == "Pending":
                    raise
                status_patch = pending_patch(obs, decision.job_id, str(exc))
                await self._patch(name, status_patch)
                raise
        if status_patch:
            await self._patch(name, status_patch)
        if decision.remove_parts:  # best effort: the finalizer removes what is left with the outputs
            try:
                await asyncio.to_thread(remove_parts, self.runtime.config.settings, name, job_id)
            except OSError as exc:
                log.warning("%s: could not remove the encoded pieces: %s", name, exc)
        metrics.record_decision(before, decision, obs, self.meta.get("creationTimestamp"))
        for event in decision.events:
            if event.type == "Warning":  # the log says what the operator saw, not only what it did
                log.warning("%s: %s: %s (job %s seen as %s)", name, event.reason, event.message,
                            decision.job_id or self.status.get("jobId"), obs.job)
            await asyncio.to_thread(self.runtime.kube.post_event, dict(self.body), event)

    async def _patch(self, name: str, patch: dict[str, Any]) -> None:
        namespace = str(self.meta.get("namespace") or self.runtime.config.settings.namespace)
        updated = await asyncio.to_thread(self.runtime.kube.patch_status, namespace, name, patch)
        if updated is not None:
            self.status = dict(updated.get("status") or {})
        if set(patch) == {"progress"}:
            self.last_progress_patch = time.monotonic()
