"""The autoscaler against a real API server and a real Redis with real RQ jobs and a real RQ worker,
acting as the chart's operator ServiceAccount with exactly the Role the chart renders for
``worker.autoscaling.operator`` (get/patch on one Deployment's scale subresource).

A Deployment here has no pods (no controller-manager runs), but its scale subresource is the real
one: what the operator reads and patches on any cluster. Time in :meth:`Autoscaler.tick` is the
caller's, so the quiet period is exercised without waiting for it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from vidup.localstack.stack import Stack
from vidup_operator.autoscaler import Autoscaler, Backlog, Move, read_backlog
from vidup_operator.config import AutoscaleConfig
from vidup_operator.jobs import JobStore

sys.path.insert(0, str(Path(__file__).parents[1] / "chart"))
sys.path.insert(0, str(Path(__file__).parent))
from chart_support import render
from operator_support import wait_for

WORKER = "vidup-worker"
OTHER = "something-else"
QUIET = 30.0


def _deployment(name: str, replicas: int) -> dict[str, object]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "worker", "image": "vidup/worker:test"}]}},
        },
    }


@dataclass
class World:
    namespace: str
    admin: client.AppsV1Api
    operator: client.AppsV1Api
    jobs: JobStore
    redis_url: str

    def replicas(self, name: str = WORKER) -> int:
        return int(self.admin.read_namespaced_deployment_scale(name, self.namespace).spec.replicas)

    def scaler(self, min_replicas: int = 1, max_replicas: int = 4, interval: float = 5.0) -> Autoscaler:
        settings = AutoscaleConfig(WORKER, min_replicas, max_replicas, QUIET, interval)
        return Autoscaler(settings, self.namespace, self.jobs, self.operator, clock=lambda: 0.0)


def _operator_api(kube: Stack, admin: client.ApiClient, namespace: str, run_dir: Path) -> client.ApiClient:
    """An API client holding a token of the chart's operator ServiceAccount, bound to the Role the
    chart renders with operator autoscaling on (so the test proves that Role is enough)."""
    rbac = [o for o in render("worker.autoscaling.operator.enabled=true", namespace=namespace)
            if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")
            and o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    assert len(rbac) == 3
    core, authz = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    for obj in rbac:
        {"ServiceAccount": lambda o: core.create_namespaced_service_account(namespace, o),
         "Role": lambda o: authz.create_namespaced_role(namespace, o),
         "RoleBinding": lambda o: authz.create_namespaced_role_binding(namespace, o)}[obj["kind"]](obj)
    account = next(o for o in rbac if o["kind"] == "ServiceAccount")["metadata"]["name"]
    token = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    cluster = yaml.safe_load(kube.kubeconfig.read_text())["clusters"][0]
    path = run_dir / "operator.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }))
    return config.new_client_from_config(config_file=str(path))


@pytest.fixture
def world(kube: Stack, tmp_path: Path) -> Iterator[World]:
    assert kube.redis is not None
    namespace = f"autoscale-{uuid.uuid4().hex[:6]}"
    admin = kube.api_client()
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    apps = client.AppsV1Api(admin)
    for name in (WORKER, OTHER):
        apps.create_namespaced_deployment(namespace, _deployment(name, 1))
    connection = redis.Redis.from_url(kube.redis.url)
    jobs = JobStore(connection, f"autoscale-{uuid.uuid4().hex[:8]}")
    try:
        operator = client.AppsV1Api(_operator_api(kube, admin, namespace, tmp_path))
        yield World(namespace, apps, operator, jobs, kube.redis.url)
    finally:
        jobs.queue.empty()
        client.CoreV1Api(admin).delete_namespace(namespace)


def _enqueue(world: World, count: int, seconds: float) -> list[str]:
    """Real RQ jobs that a real worker can run: each sleeps ``seconds``."""
    return [world.jobs.queue.enqueue("time.sleep", seconds).id for _ in range(count)]


def _rq_worker(world: World) -> subprocess.Popen[bytes]:
    """RQ's own worker (``rq worker --burst``): runs what is queued, then exits."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "rq"), "worker", "--url", world.redis_url, "--burst", world.jobs.queue_name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def test_twelve_queued_jobs_scale_up_at_once_and_back_down_after_the_quiet_period(world: World) -> None:
    scaler = world.scaler()
    assert scaler.tick(now=0.0).move is Move.HOLD  # nothing queued: the minimum stays
    assert world.replicas() == 1
    _enqueue(world, 12, 0.05)
    up = scaler.tick(now=1.0)
    assert (up.move, up.replicas) == (Move.UP, 4)  # 12 queued want 12, capped at max
    assert world.replicas() == 4  # through the scale subresource, with only the chart's Role
    worker = _rq_worker(world)
    assert worker.wait(timeout=120) == 0
    assert read_backlog(world.jobs) == Backlog(0, 0)
    # the quiet clock runs from the last look that wanted all 4 (the scale up at 1.0)
    waiting = scaler.tick(now=2.0)
    assert (waiting.move, waiting.replicas) == (Move.WAIT, 4)
    assert f"{QUIET - 1:.0f}s more of quiet" in waiting.reason
    assert scaler.tick(now=1.0 + QUIET - 0.5).move is Move.WAIT
    assert world.replicas() == 4
    down = scaler.tick(now=1.0 + QUIET)
    assert (down.move, down.replicas) == (Move.DOWN, 1)
    assert world.replicas() == 1
    assert scaler.tick(now=3.0 + QUIET).move is Move.HOLD


def test_a_running_job_keeps_its_worker_and_new_work_restarts_the_quiet_clock(world: World) -> None:
    scaler = world.scaler(min_replicas=0)
    _enqueue(world, 3, 0.05)
    job = world.jobs.queue.enqueue("time.sleep", 20)  # enqueued last: the worker takes it last
    assert scaler.tick(now=0.0).replicas == 4
    worker = _rq_worker(world)
    try:
        wait_for(lambda: read_backlog(world.jobs) == Backlog(0, 1), 60, "only the long job running")
        assert scaler.tick(now=1.0).move is Move.WAIT
        # fresh work within the quiet period wants workers again: the clock restarts
        _enqueue(world, 3, 0.05)
        assert scaler.tick(now=QUIET - 1).move is Move.HOLD  # 3 queued + 1 running want the 4 there are
        assert scaler.tick(now=QUIET + 1).move is Move.HOLD
        world.jobs.queue.empty()
        assert scaler.tick(now=QUIET + 2).move is Move.WAIT
        down = scaler.tick(now=2 * QUIET + 2)
        # min is 0, but one job runs: one worker stays
        assert (down.move, down.replicas) == (Move.DOWN, 1)
        assert world.replicas() == 1
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    job.delete()


def test_a_concurrent_change_is_never_overwritten_blindly(world: World) -> None:
    scaler = world.scaler()
    assert scaler.set_replicas(current=3, target=2) is False  # the test op: replicas were 1, not 3
    assert world.replicas() == 1
    assert scaler.set_replicas(current=1, target=2) is True
    assert world.replicas() == 2


def test_the_charts_role_scales_only_the_worker_deployment(world: World) -> None:
    with pytest.raises(ApiException) as denied:
        world.operator.read_namespaced_deployment_scale(OTHER, world.namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied:
        world.operator.patch_namespaced_deployment(WORKER, world.namespace, {"spec": {"replicas": 3}})
    assert denied.value.status == 403  # the Deployment itself (its pod template) stays out of reach
    with pytest.raises(ApiException) as denied:
        world.operator.list_namespaced_deployment(world.namespace)
    assert denied.value.status == 403


def test_the_loop_scales_on_its_own_and_outlives_failures(world: World) -> None:
    """The async loop the operator starts: it scales without being driven, and a Deployment it may
    not touch (a misconfiguration) costs a logged warning, not the operator."""
    _enqueue(world, 2, 0.05)

    async def scenario() -> tuple[int, int]:
        scaler = world.scaler(interval=0.2)
        task = asyncio.create_task(scaler.run())
        wrong = world.scaler(interval=0.2)
        wrong.config = AutoscaleConfig(OTHER, 1, 4, QUIET, 0.2)
        failing = asyncio.create_task(wrong.run())
        try:
            for _ in range(100):  # two queued jobs want two workers
                if await asyncio.to_thread(world.replicas) == 2:
                    break
                await asyncio.sleep(0.1)
            assert not failing.done()  # still trying, not crashed
            return await asyncio.to_thread(world.replicas), await asyncio.to_thread(world.replicas, OTHER)
        finally:
            for t in (task, failing):
                t.cancel()
            await asyncio.gather(task, failing, return_exceptions=True)

    # A loop of its own, in a thread of its own: the session's Playwright (web app tests) keeps an
    # event loop running in the main thread, where asyncio.run refuses to start another.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, scenario()).result() == (2, 1)
