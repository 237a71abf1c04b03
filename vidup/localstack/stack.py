"""The whole local stack, started by one piece of code for `vidup up` and for the test fixtures.

Order: control plane → CRDs → Redis → (S3 server) → ingest → operator → workers. Each component
process serves Prometheus metrics on a free port of its own (``metrics_urls``, exported by `vidup
env` as VIDUP_METRICS_URLS). With
``storage="s3"`` a private SeaweedFS holds uploads and outputs and every component is configured
for it; the storage directory then stays empty of both. Every process writes its log
into ``<run dir>/logs``; ``<run dir>/stack.json`` records what runs so another process
(`vidup env`, `vidup down`) can find and stop it.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kubernetes import client, config

from vidup.apikeys import new_api_key, write_api_keys_file
from vidup.localstack import components
from vidup.localstack.controlplane import ControlPlane
from vidup.localstack.crds import apply_crds
from vidup.localstack.processes import (
    ManagedProcess,
    free_port,
    kill_group,
    pid_alive,
    wait_until,
)
from vidup.localstack.redis_server import RedisServer
from vidup.localstack.s3_server import S3Server
from vidup.settings import Settings

DEMO_TENANT = "demo"
ALL_COMPONENTS = ("ingest", "operator", "worker")
STATE_FILE = "stack.json"


@dataclass
class Stack:
    """A running (or startable) local vidup stack rooted at ``run_dir``."""

    run_dir: Path
    workers: int = 2
    components: tuple[str, ...] = ALL_COMPONENTS
    #: Extra VIDUP_* variables for every component, e.g. a faster x264 preset in tests.
    extra_env: dict[str, str] = field(default_factory=dict)
    #: "file" (the storage directory) or "s3" (a local SeaweedFS bucket).
    storage: str = "file"
    control_plane: ControlPlane | None = None
    redis: RedisServer | None = None
    s3: S3Server | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    settings: Settings | None = None
    api_key: str = ""
    #: Process name -> the URL of its Prometheus metrics endpoint.
    metrics_urls: dict[str, str] = field(default_factory=dict)

    # -- start ---------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> Stack:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.control_plane = ControlPlane(self.run_dir).start(timeout)
            with self.api_client() as api:
                apply_crds(api)
            self.redis = RedisServer(self.run_dir).start()
            storage = self.run_dir / "storage"
            storage.mkdir(exist_ok=True)
            self.api_key = new_api_key()
            keys_file = self.run_dir / "api-keys.json"
            write_api_keys_file(keys_file, {DEMO_TENANT: self.api_key})
            self.settings = replace(
                Settings.from_env(), redis_url=self.redis.url, storage_dir=storage, namespace="default",
                api_keys_file=keys_file, token_secret=secrets.token_hex(32), storage="file",
            )
            if self.storage == "s3":
                self.s3 = S3Server(self.run_dir).start()
                self.settings = self.s3.settings(self.settings)
            if "ingest" in self.components:
                self.start_ingest()
            if "operator" in self.components:
                self.start_operator()
            if "worker" in self.components:
                for index in range(self.workers):
                    self.start_worker(index)
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def component_env(self) -> dict[str, str]:
        """The environment every vidup component process gets."""
        assert self.settings is not None and self.control_plane is not None
        return {
            **self.settings.to_env(),
            **(self.s3.env() if self.s3 is not None else {}),
            "KUBECONFIG": str(self.control_plane.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def start_ingest(self, index: int = 0, env: dict[str, str] | None = None) -> ManagedProcess:
        """Start an ingest replica; the first one started is the stack's :attr:`url`."""
        env = {**self.component_env(), **(env or {})}
        port = self._metrics_port(f"ingest-{index}")
        return self._launch(components.ingest_process(self.run_dir, env, free_port(), index, port))

    def start_operator(self, index: int = 0) -> ManagedProcess:
        port = self._metrics_port(f"operator-{index}")
        return self._launch(components.operator_process(self.run_dir, self.component_env(), index, port))

    def start_worker(self, index: int) -> ManagedProcess:
        """Start one more worker (also used by fault tests to replace a killed one)."""
        port = self._metrics_port(f"worker-{index}")
        return self._launch(components.worker_process(self.run_dir, self.component_env(), index, port))

    def _metrics_port(self, name: str) -> int:
        """A free port for ``name``'s metrics, recorded in :attr:`metrics_urls`."""
        port = free_port()
        self.metrics_urls[name] = components.metrics_url(port)
        return port

    def restart(self, process: ManagedProcess) -> ManagedProcess:
        """Start a fresh copy of a component process that was stopped or killed."""
        process.stop(grace=1)
        fresh = replace(process, popen=None)
        self.processes[self.processes.index(process)] = fresh
        return self._launch(fresh, listed=True)

    def _launch(self, process: ManagedProcess, listed: bool = False) -> ManagedProcess:
        """Start a component (listed first, so a failed start is still stopped), wait until it
        answers if it serves HTTP, and record it in the state file."""
        if not listed:
            self.processes.append(process)
        process.start()
        if process.url:
            wait_until(lambda: _answers(process), 60, f"{process.name} to answer")
        self._write_state()
        return process

    def process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    # -- use -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The first ingest replica's base URL ("" when the stack runs no ingest)."""
        return next((p.url for p in self.processes if p.url), "")

    @property
    def kubeconfig(self) -> Path:
        assert self.control_plane is not None
        return self.control_plane.kubeconfig

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def user_env(self) -> dict[str, str]:
        """What `vidup env` exports: kubectl and the clients point at this stack, and the storage
        (the directory, and with S3 the endpoint, bucket and credentials, for the aws CLI too)."""
        env = {"KUBECONFIG": str(self.kubeconfig), "VIDUP_TOKEN": self.api_key}
        if self.url:
            env["VIDUP_URL"] = self.url
        if self.settings is not None:
            env["VIDUP_STORAGE"] = self.settings.storage
            env["VIDUP_STORAGE_DIR"] = str(self.settings.storage_dir)
        if self.s3 is not None:
            env.update(self.s3.env())
        if self.metrics_urls:
            env["VIDUP_METRICS_URLS"] = " ".join(self.metrics_urls.values())
        return env

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        self.metrics_urls.clear()
        if self.s3 is not None:
            self.s3.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.control_plane is not None:
            self.control_plane.stop()
        state = self.run_dir / STATE_FILE
        if state.exists():
            state.unlink()

    def all_pids(self) -> list[int]:
        pids = [p.pid for p in self.processes]
        if self.redis and self.redis.process:
            pids.append(self.redis.process.pid)
        if self.s3 and self.s3.process:
            pids.append(self.s3.process.pid)
        if self.control_plane:
            pids.extend(p.pid for p in self.control_plane.processes)
        return pids

    def _write_state(self) -> None:
        state: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "pids": self.all_pids(),
            "env": self.user_env(),
            "components": list(self.components),
        }
        if self.settings is not None:  # for `vidup top`: the queue it reads, the resources it lists
            state.update(redis_url=self.settings.redis_url, namespace=self.settings.namespace,
                         queue=self.settings.queue)
        path = self.run_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)


def read_state(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / STATE_FILE).read_text()))


def stop_from_state(run_dir: Path) -> list[int]:
    """Stop a stack that another process started (`vidup down`); returns the pids it stopped."""
    state = read_state(run_dir)
    stopped = []
    for pid in reversed(state["pids"]):
        if pid_alive(pid):
            kill_group(pid)
            stopped.append(pid)
    (run_dir / STATE_FILE).unlink()
    return stopped


def _answers(process: ManagedProcess) -> bool:
    process.check_running()
    request = urllib.request.Request(f"{process.url}/healthz")
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.status in (200, 204)


def default_runs_root() -> Path:
    from vidup.localstack.binaries import cache_root

    return Path(os.environ.get("VIDUP_RUNS_DIR", str(cache_root() / "runs")))
