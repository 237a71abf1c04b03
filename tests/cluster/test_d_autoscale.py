"""`worker.autoscaling.operator` on the real local cluster: the leading operator scales the worker
Deployment on the backlog through its scale subresource, with only the chart's Role.

Twelve videos uploaded at once queue up; the Deployment's replicas rise above the minimum of 1 (up
to the maximum of 4) at once; every video completes exactly once (attempts 1, no repeated work);
after the quiet period (20 s here) the replicas return to 1, and the surplus worker pods go. The
scaling decisions are logged with their reasons by one operator replica only (the leader). The
metrics Services answer inside the cluster (the operator's queue gauge among them)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_support import diagnosis, kubectl, release_pods, wait_for
from test_b_chart import CHART, helm, make_video, serve_release, upload

from vidup.localcluster.cluster import Cluster

NS = "vidup-autoscale"
RELEASE = "vidup-as"
WORKER = f"{RELEASE}-worker"
VIDEOS = 12
QUIET_SECONDS = 20
MAX_REPLICAS = 4
INTERVAL_SECONDS = 2


def _json(cluster: Cluster, *args: str) -> Any:
    return json.loads(kubectl(cluster, "-n", NS, *args, "-o", "json").stdout)


def pods(cluster: Cluster, component: str) -> list[dict[str, Any]]:
    return release_pods(cluster, NS, RELEASE, component)


def replicas(cluster: Cluster) -> int:
    return int(_json(cluster, "get", "deployment", WORKER)["spec"].get("replicas", 0))


def _diagnosis(cluster: Cluster) -> str:
    return diagnosis(cluster, NS, RELEASE)


@pytest.fixture(scope="module")
def release(local_cluster: Cluster) -> Iterator[str]:
    """The chart with operator autoscaling (1..4 workers, a 20 s quiet period, a look every 2 s);
    one ingest replica to leave the node's two cores to the encodes. Yields the API key."""
    installed = helm(local_cluster, "install", RELEASE, str(CHART), "-n", NS, "--create-namespace", "--wait",
                     "--timeout", "10m", "--set", "worker.autoscaling.operator.enabled=true",
                     "--set", "worker.autoscaling.operator.minReplicas=1",
                     "--set", f"worker.autoscaling.operator.maxReplicas={MAX_REPLICAS}",
                     "--set", f"worker.autoscaling.operator.quietSeconds={QUIET_SECONDS}",
                     "--set", f"worker.autoscaling.operator.intervalSeconds={INTERVAL_SECONDS}",
                     "--set", "ingest.replicaCount=1", check=False)
    yield from serve_release(local_cluster, RELEASE, NS, installed, lambda: _diagnosis(local_cluster))


class ReplicaWatch:
    """Samples the worker Deployment's spec.replicas every half second in a thread."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(AssertionError, ValueError, KeyError):  # a slow API: sample again
                self.seen.append(replicas(self.cluster))
            self._stop.wait(0.5)

    def __enter__(self) -> ReplicaWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_chart_installs_with_the_operator_owning_the_worker_replicas(local_cluster: Cluster, release: str) -> None:
    deployment = _json(local_cluster, "get", "deployment", WORKER)
    manifest = helm(local_cluster, "get", "manifest", RELEASE, "-n", NS).stdout
    assert f"name: {WORKER}" in manifest and "deployments/scale" in manifest
    assert deployment["spec"]["replicas"] == 1  # the operator holds the minimum with nothing queued
    operator_sa = pods(local_cluster, "operator")[0]["spec"]["serviceAccountName"]
    who = f"--as=system:serviceaccount:{NS}:{operator_sa}"

    def can(*args: str) -> str:
        return kubectl(local_cluster, "auth", "can-i", *args, "-n", NS, who, check=False).stdout.strip()

    assert can("patch", f"deployments/{WORKER}", "--subresource=scale") == "yes"
    assert can("patch", f"deployments/{RELEASE}-ingest", "--subresource=scale") == "no"
    assert can("patch", f"deployments/{WORKER}") == "no"
    assert can("create", "pods") == "no"


def test_twelve_queued_videos_scale_the_workers_up_complete_once_and_scale_back_down(
    local_cluster: Cluster, release: str, tmp_path: Path,
) -> None:
    videos = [make_video(tmp_path / f"as{i}.mp4", 6) for i in range(VIDEOS)]
    docs: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def send(index: int, video: Path) -> None:
        try:
            docs.append(upload(local_cluster, release, video, tmp_path / f"client{index}", wait=False))
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    with ReplicaWatch(local_cluster) as watch:
        threads = [threading.Thread(target=send, args=(i, v)) for i, v in enumerate(videos)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not errors, errors
        names = sorted(str(d["id"]) for d in docs)
        assert len(names) == VIDEOS

        def all_done() -> bool:
            items = {vt["metadata"]["name"]: vt for vt in _json(local_cluster, "get", "videotranscodes")["items"]}
            phases = [(items.get(n, {}).get("status") or {}).get("phase") for n in names]
            assert "Failed" not in phases, _diagnosis(local_cluster)
            return all(p == "Completed" for p in phases)

        wait_for(all_done, 1200, "all twelve videos Completed", interval=2)
        assert max(watch.seen) > 1, (watch.seen, _diagnosis(local_cluster))
        assert max(watch.seen) <= MAX_REPLICAS, watch.seen
        # no lost or repeated work: one run each
        for vt in _json(local_cluster, "get", "videotranscodes")["items"]:
            if vt["metadata"]["name"] in names:
                assert vt["status"]["phase"] == "Completed" and vt["status"].get("attempts") == 1, vt["status"]
        # quiet: back to the minimum, and the surplus pods go (idle workers stop at once)
        wait_for(lambda: replicas(local_cluster) == 1, QUIET_SECONDS + 120, "replicas back to 1", interval=1)
        wait_for(lambda: len(pods(local_cluster, "worker")) == 1, 180, "one worker pod left", interval=1)
        # and it stays there: a few of the operator's looks later (samples taken before the scale
        # down may still land in the watch just after it, so only the late ones count)
        time.sleep(4 * INTERVAL_SECONDS)
    assert watch.seen[-3:] == [1, 1, 1], (watch.seen, _diagnosis(local_cluster))
    # every video still Completed once after the scale down (no handed-back job ran again)
    for vt in _json(local_cluster, "get", "videotranscodes")["items"]:
        if vt["metadata"]["name"] in names:
            assert vt["status"]["phase"] == "Completed" and vt["status"].get("attempts") == 1, vt["status"]
    # one replica (the leader) made every decision, each logged with its reason
    scaled_by = {}
    for pod in pods(local_cluster, "operator"):
        log = kubectl(local_cluster, "-n", NS, "logs", pod["metadata"]["name"], "--tail=-1").stdout
        lines = [line for line in log.splitlines() if f"autoscale: {WORKER} up" in line
                 or f"autoscale: {WORKER} down" in line]
        if lines:
            scaled_by[pod["metadata"]["name"]] = lines
    assert len(scaled_by) == 1, scaled_by
    lines = next(iter(scaled_by.values()))
    series = [n for i, n in enumerate(watch.seen) if i == 0 or n != watch.seen[i - 1]]
    print("worker replicas over time:", series, "\noperator decisions:\n" + "\n".join(lines))  # for -rP
    assert any(" up 1 -> " in line and "queued" in line for line in lines), lines
    assert any(" down " in line and "-> 1" in line and "quiet period 20s" in line for line in lines), lines


def test_metrics_services_answer_inside_the_cluster(local_cluster: Cluster, release: str) -> None:
    """The per-component metrics Services (not routed through the ingress) reach each component's
    metrics port; read from inside the ingest pod, as a Prometheus in the cluster would."""
    pod = pods(local_cluster, "ingest")[0]["metadata"]["name"]
    for component, metric in (("operator", "vidup_operator_queue_depth"), ("worker", "vidup_"),
                              ("ingest", "vidup_")):
        url = f"http://{RELEASE}-{component}-metrics.{NS}.svc:9090/metrics"
        script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"

        def scrape(script: str = script) -> str:
            return kubectl(local_cluster, "-n", NS, "exec", pod, "--", "python", "-c", script).stdout

        body = wait_for(scrape, 60, f"{component} metrics", interval=2)
        assert metric in body, (component, body[:2000])
