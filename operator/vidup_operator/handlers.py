"""Kopf handlers: thin translations into the reconciler and the clean-up. No decisions here."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from vidup import logs
from vidup.resource import GROUP, PLURAL, VERSION
from vidup.transcode_jobs import job_id_for
from vidup_operator import autoscaler, decisions, metrics
from vidup_operator.decisions import needs_work
from vidup_operator.outputs import remove_video_outputs
from vidup_operator.reconciler import Reconciler, Runtime

FINALIZER = f"{GROUP}/operator"
#: How long a delete waits for a stopped encode to let go before removing its files anyway.
STOP_WAIT_SECONDS = 20.0


def configure(settings: kopf.OperatorSettings) -> None:
    """Kopf keeps its bookkeeping in annotations (the status schema would prune ``status.kopf``),
    posts only warnings as Events (ours are the readable ones), and watches one namespace without
    scanning the cluster, so it needs no RBAC beyond what the chart grants."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration",
    )
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings)
    memo["autoscaler"] = autoscaler.start(memo["runtime"])  # Kopf runs only on the leader


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    await autoscaler.stop(memo.get("autoscaler"))


def _needs_work(body: kopf.Body, **_: Any) -> bool:
    return needs_work(int(body.metadata.get("generation") or 1), body.get("status"))


@kopf.daemon(
    GROUP, VERSION, PLURAL, id="reconcile", when=_needs_work,
    cancellation_backoff=3.0, cancellation_timeout=10.0,
)
async def reconcile(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """One loop per resource that still has work; Kopf stops it once the resource is terminal.
    Every line it logs (its threads' too: ``to_thread`` copies the context) names the video."""
    runtime: Runtime = memo["runtime"]
    with logs.bound(video_id=str(body.metadata.name)):
        await Reconciler(runtime, body).run(stopped)


@kopf.on.event(GROUP, VERSION, PLURAL, id="metrics")
def watch_phases(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """Feed the resources-by-phase gauge from the watch stream (listing included)."""
    uid = str(body.metadata.uid)
    if event.get("type") == "DELETED":
        metrics.RESOURCES.gone(uid)
    else:
        metrics.RESOURCES.seen(uid, (body.get("status") or {}).get("phase"))


@kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup")
async def cleanup(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Stop or cancel the job, remove the outputs (unless kept), then let the resource go."""
    runtime: Runtime = memo["runtime"]
    jobs = runtime.jobs
    ids = {job_id_for(str(body.metadata.uid), int(body.metadata.get("generation") or 1))}
    status = body.get("status") or {}
    if status.get("jobId"):
        ids.add(str(status["jobId"]))
    ids |= set(decisions.all_piece_jobs(str(status.get("jobId") or ""), status))
    for job_id in sorted(ids):
        if await asyncio.to_thread(jobs.cancel, job_id):
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            while time.monotonic() < deadline and await asyncio.to_thread(jobs.still_running, job_id):
                await asyncio.sleep(0.2)
    settings = runtime.config.settings
    if settings.keep_outputs:
        logger.info("keeping outputs of %s (VIDUP_KEEP_OUTPUTS)", body.metadata.name)
    else:
        removed = await asyncio.to_thread(remove_video_outputs, settings, str(body.metadata.name))
        logger.info("removed %s", ", ".join(str(p) for p in removed) or "no outputs")
    for job_id in sorted(ids):
        await asyncio.to_thread(jobs.forget, job_id)
