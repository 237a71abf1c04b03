"""Reading the soak's stack as it is now: resources, Events, what is left in Redis, what runs.

Kept apart from the audit's judgements (:mod:`vidup.soak.audit`) so those stay plain functions
of what was read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from kubernetes import client
from rq import Queue
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION

TERMINAL = ("Completed", "Failed")


def resources(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every VideoTranscode in the stack's namespace, by name."""
    assert stack.settings is not None
    with stack.api_client() as api:
        items = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, stack.settings.namespace, PLURAL)["items"]
    return {str(item["metadata"]["name"]): dict(item) for item in items}


def phase_of(body: dict[str, Any] | None) -> str:
    return str(((body or {}).get("status") or {}).get("phase") or "")


def all_terminal(stack: Stack, upload_ids: Iterable[str]) -> bool:
    """Whether the resource of every id exists and is Completed or Failed."""
    found = resources(stack)
    return all(phase_of(found.get(upload_id)) in TERMINAL for upload_id in upload_ids)


def completed_events(stack: Stack) -> dict[str, int]:
    """How many ``Completed`` Events each VideoTranscode got."""
    assert stack.settings is not None
    with stack.api_client() as api:
        events = client.CoreV1Api(api).list_namespaced_event(stack.settings.namespace).items
    counts: dict[str, int] = {}
    for event in events:
        if event.reason == "Completed" and event.involved_object.kind == "VideoTranscode":
            counts[event.involved_object.name] = counts.get(event.involved_object.name, 0) + 1
    return counts


def leftovers(stack: Stack) -> list[str]:
    """What a stuck pipeline leaves: waiting or started jobs, held upload locks, live FFmpeg."""
    assert stack.redis is not None and stack.settings is not None
    conn = redis.Redis.from_url(stack.redis.url)
    found = []
    try:
        queue = Queue(stack.settings.queue, connection=conn)
        if len(queue):
            found.append(f"{len(queue)} jobs still queued: {queue.get_job_ids()[:5]}")
        for registry in (StartedJobRegistry, ScheduledJobRegistry, DeferredJobRegistry):
            ids = registry(queue=queue).get_job_ids()
            if ids:
                found.append(f"{len(ids)} jobs in the {registry.__name__}: {ids[:5]}")
        locks = [k.decode() for k in conn.scan_iter(match="*:lock:*")]
        if locks:
            found.append(f"upload locks still held: {locks[:5]}")
    finally:
        conn.close()
    found += [f"ffmpeg still running (pid {pid})" for pid in ffmpeg_pids(stack.settings.storage_dir)]
    return found


def ffmpeg_pids(storage: Path) -> list[int]:
    """FFmpeg processes working on files under ``storage`` (none once every video is done)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ffmpeg") and any(str(storage).encode() in a for a in argv):
            pids.append(int(proc.name))
    return pids


def dead_components(stack: Stack) -> list[str]:
    """Every component of the stack that is not running, with the end of its log."""
    dead = [f"{p.name} is not running; its log ends:\n{p.log_tail(15)}" for p in stack.processes if not p.running()]
    if stack.redis is None or stack.redis.process is None or not stack.redis.process.running():
        dead.append("redis is not running")
    return dead
