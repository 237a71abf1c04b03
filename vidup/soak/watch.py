"""Every phase each VideoTranscode goes through, seen from a watch on the API server.

A final ``get`` shows only where a video ended; a video completed twice (Completed, then back to
Processing, then Completed again) looks just like one completed once. The watch sees each change,
so the audit can count how many times a video *became* Completed.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from kubernetes import client, watch

from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION


class PhaseWatch(threading.Thread):
    """Records, per resource name, its phases in order (consecutive repeats folded)."""

    def __init__(self, stack: Stack, namespace: str) -> None:
        super().__init__(name="soak-phase-watch", daemon=True)
        self.stack = stack
        self.namespace = namespace
        self.phases: dict[str, list[str]] = defaultdict(list)
        self.latest: dict[str, dict[str, Any]] = {}
        #: ``time.time()`` when each resource was first seen Completed
        self.completed_at: dict[str, float] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        api = self.stack.api_client()
        custom = client.CustomObjectsApi(api)
        version = ""
        try:
            while not self.stopping.is_set():
                kwargs: dict[str, Any] = {"timeout_seconds": 5}
                if version:
                    kwargs["resource_version"] = version
                try:
                    stream = watch.Watch().stream(
                        custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, **kwargs,
                    )
                    for event in stream:
                        body = event["object"]
                        if event["type"] == "ERROR":
                            version = ""  # e.g. 410 Gone: list again from now
                            break
                        version = str(body.get("metadata", {}).get("resourceVersion") or version)
                        self._record(body)
                except Exception as exc:
                    if getattr(exc, "status", None) == 410:
                        version = ""
                    # the API server does not go away during a soak; when it does, the run is
                    # ending (or broken, which the audit reports): look again shortly
                    self.stopping.wait(1.0)
        finally:
            api.close()

    def _record(self, body: dict[str, Any]) -> None:
        name = str(body["metadata"]["name"])
        phase = str((body.get("status") or {}).get("phase") or "")
        with self.lock:
            self.latest[name] = body
            seen = self.phases[name]
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            if phase == "Completed":
                self.completed_at.setdefault(name, time.time())

    def latest_phases(self) -> dict[str, str]:
        with self.lock:
            return {name: str((body.get("status") or {}).get("phase") or "") for name, body in self.latest.items()}

    def snapshot(self) -> dict[str, list[str]]:
        with self.lock:
            return {name: list(phases) for name, phases in self.phases.items()}

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)
