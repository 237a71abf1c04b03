"""`helm install vidup charts/vidup` on the real local cluster, with default values: every pod
Ready, an upload through the ingress becomes HLS served through the ingress, the web app uploads
and plays through the ingress in Chromium, `helm test` passes, least privilege holds, workers
scale, faults (a worker pod force-deleted mid-transcode, the leading operator deleted, an upgrade
mid-transcode) lose no video, and uninstall removes what the chart made."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_support import assert_hls_served, diagnosis, kubectl, release_pods, wait_for
from playwright.sync_api import Browser, expect

from vidup.localcluster.cluster import Cluster
from vidup.localstack import binaries
from vidup.localstack.docker_engine import REPO_ROOT

NS = "vidup-chart"
RELEASE = "vidup"
CHART = REPO_ROOT / "charts" / "vidup"


def helm(cluster: Cluster, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(binaries.expected().helm), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {done.stdout}\n{done.stderr}")
    return done


def serve_release(cluster: Cluster, release: str, namespace: str, installed: subprocess.CompletedProcess[str],
                  diagnosis: Callable[[], str]) -> Iterator[str]:
    """A module fixture's body after its ``helm install``: yield the release's API key, then
    uninstall it and its namespace (VideoTranscodes left behind lose their finalizer first, as
    nothing runs the operator any more)."""

    def objects(*args: str) -> Any:
        return json.loads(kubectl(cluster, "-n", namespace, *args, "-o", "json").stdout)

    try:
        assert installed.returncode == 0, f"{installed.stderr}\n{diagnosis()}"
        found = objects("get", "secrets", "-l", f"app.kubernetes.io/instance={release}")["items"]
        keys = [base64.b64decode(s["data"]["api-key"]).decode() for s in found if "api-key" in s.get("data", {})]
        assert len(keys) == 1
        yield keys[0]
    finally:
        helm(cluster, "uninstall", release, "-n", namespace, "--wait", check=False)
        for vt in objects("get", "videotranscodes")["items"]:
            kubectl(cluster, "-n", namespace, "patch", "videotranscode", vt["metadata"]["name"], "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False)
        kubectl(cluster, "delete", "namespace", namespace, "--wait=false", check=False)


def _json(cluster: Cluster, *args: str) -> Any:
    return json.loads(kubectl(cluster, "-n", NS, *args, "-o", "json").stdout)


def pods(cluster: Cluster, component: str) -> list[dict[str, Any]]:
    return release_pods(cluster, NS, RELEASE, component)


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def all_ready(cluster: Cluster) -> bool:
    for kind in ("deployments", "statefulsets"):
        for item in _json(cluster, "get", kind, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]:
            status = item.get("status", {})
            want = item["spec"].get("replicas", 1)
            if status.get("readyReplicas", 0) != want or status.get("updatedReplicas", 0) != want:
                return False
    return True


@pytest.fixture(scope="module")
def release(local_cluster: Cluster) -> Iterator[str]:
    """The chart installed with its default values; yields the bootstrap tenant's API key."""
    helm(local_cluster, "install", RELEASE, str(CHART), "-n", NS, "--create-namespace", "--wait",
         "--timeout", "10m")
    secret = _json(local_cluster, "get", "secrets", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    keys = [base64.b64decode(s["data"]["api-key"]).decode() for s in secret if "api-key" in s.get("data", {})]
    assert len(keys) == 1
    yield keys[0]
    helm(local_cluster, "uninstall", RELEASE, "-n", NS, "--wait", check=False)
    for vt in _json(local_cluster, "get", "videotranscodes")["items"]:
        kubectl(local_cluster, "-n", NS, "patch", "videotranscode", vt["metadata"]["name"], "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False)
    kubectl(local_cluster, "delete", "namespace", NS, "--wait=false", check=False)


def make_video(path: Path, seconds: int, size: str = "640x360") -> Path:
    subprocess.run([
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    ], check=True)
    return path


def upload(cluster: Cluster, key: str, video: Path, tmp: Path, wait: bool = True) -> dict[str, Any]:
    """`vidup upload --url $VIDUP_INGRESS_URL` exactly as a user runs it; the status document."""
    args = [sys.executable, "-m", "vidup.cli", "upload", str(video), "--url", cluster.ingress_url,
            "--token", key, "--json"]
    if wait:
        args += ["--wait", "--timeout", "600"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "VIDUP_CACHE_DIR": str(tmp / "cache")}
    done = subprocess.run(args, capture_output=True, text=True, timeout=700, env=env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def video_phase(cluster: Cluster, name: str) -> str:
    vt = _json(cluster, "get", "videotranscode", name)
    return str((vt.get("status") or {}).get("phase", ""))


def outputs(cluster: Cluster, name: str) -> list[str]:
    """The files under the video's output directory, listed from inside an ingest pod."""
    pod = pods(cluster, "ingest")[0]["metadata"]["name"]
    out = kubectl(cluster, "-n", NS, "exec", pod, "--", "find", f"/var/lib/vidup/outputs/{name}", "-type", "f").stdout
    return sorted(line.split(f"/outputs/{name}/", 1)[1] for line in out.split())


def test_install_with_default_values_reaches_all_pods_ready(local_cluster: Cluster, release: str) -> None:
    assert all_ready(local_cluster)
    for component, count in (("ingest", 2), ("operator", 2), ("worker", 2), ("redis", 1)):
        found = pods(local_cluster, component)
        assert len(found) == count and all(ready(p) for p in found), component
        # No pod needed a restart to get there (workers used to crash while Redis was starting).
        restarts = [s.get("restartCount", 0) for p in found for s in p["status"].get("containerStatuses", [])]
        assert restarts == [0] * count, (component, restarts)


def test_upload_through_the_ingress_becomes_hls_served_through_the_ingress(
    local_cluster: Cluster, release: str, tmp_path: Path
) -> None:
    doc = upload(local_cluster, release, make_video(tmp_path / "clip.mp4", 4), tmp_path)
    assert doc["status"] == "COMPLETED", doc
    assert doc["master_playlist_url"].startswith(local_cluster.ingress_url)
    assert_hls_served(doc["master_playlist_url"])
    listed = kubectl(local_cluster, "-n", NS, "get", "videotranscodes").stdout
    assert doc["id"] in listed and "Completed" in listed


def test_the_web_app_through_the_ingress_uploads_follows_and_plays(
    local_cluster: Cluster, release: str, browser: Browser, tmp_path: Path
) -> None:
    """A person at the ingress in Chromium: the page, its tus upload, live status over the
    WebSocket through Traefik, and hls.js playback, all through the ingress."""
    video = make_video(tmp_path / "from-the-browser.mp4", 4)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(local_cluster.ingress_url + "/")
        page.get_by_test_id("api-key").fill(release)
        page.get_by_test_id("sign-in").click()
        # Signed in once the key was checked (the input is enabled then): a file chosen before
        # is refused with "Sign in ... before uploading" (CI once chose it too early).
        expect(page.get_by_test_id("file-input")).to_be_enabled(timeout=60_000)
        page.get_by_test_id("file-input").set_input_files(video)
        card = page.locator('[data-testid=video-card][data-filename="from-the-browser.mp4"]').first
        expect(card.get_by_test_id("video-status")).to_have_text("Completed", timeout=600_000)
        card.get_by_role("button", name=re.compile("play", re.I)).click()
        page.wait_for_function("() => document.querySelector('[data-testid=player]').currentTime > 1",
                               timeout=60_000)
    finally:
        context.close()
    assert "from-the-browser.mp4" in kubectl(local_cluster, "-n", NS, "get", "videotranscodes", "-o", "yaml").stdout


def test_helm_test_uploads_and_completes(local_cluster: Cluster, release: str) -> None:
    done = helm(local_cluster, "test", RELEASE, "-n", NS, "--timeout", "10m")
    assert "Succeeded" in done.stdout


def test_least_privilege(local_cluster: Cluster, release: str) -> None:
    operator_sa = pods(local_cluster, "operator")[0]["spec"]["serviceAccountName"]
    who = f"system:serviceaccount:{NS}:{operator_sa}"

    def can(*args: str) -> str:
        return kubectl(local_cluster, "auth", "can-i", *args, "-n", NS, f"--as={who}", check=False).stdout.strip()

    assert can("get", "secrets") == "no"
    assert can("list", "secrets") == "no"
    assert can("create", "pods") == "no"
    assert can("list", "pods", "--all-namespaces") == "no"
    assert can("patch", "videotranscodes.vidup.io", "--subresource=status") == "yes"
    assert can("watch", "videotranscodes.vidup.io") == "yes"
    for pod in pods(local_cluster, "worker"):
        assert pod["spec"].get("automountServiceAccountToken") is False
        mounts = [m["mountPath"] for c in pod["spec"]["containers"] for m in c.get("volumeMounts", [])]
        assert not any("serviceaccount" in m for m in mounts)
    worker = pods(local_cluster, "worker")[0]["metadata"]["name"]
    listed = kubectl(local_cluster, "-n", NS, "exec", worker, "--", "ls", "/var/run/secrets/kubernetes.io",
                     check=False)
    assert listed.returncode != 0


def _jobs_per_worker(cluster: Cluster) -> dict[str, int]:
    counts = {}
    for pod in pods(cluster, "worker"):
        name = pod["metadata"]["name"]
        log = kubectl(cluster, "-n", NS, "logs", name, "--tail=-1").stdout
        counts[name] = log.count("Job OK")
    return counts


def test_six_uploads_spread_over_three_workers(local_cluster: Cluster, release: str, tmp_path: Path) -> None:
    helm(local_cluster, "upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values",
         "--set", "worker.replicaCount=3", "--wait", "--timeout", "10m")
    wait_for(lambda: len([p for p in pods(local_cluster, "worker") if ready(p)]) == 3, 180, "three workers")
    before = _jobs_per_worker(local_cluster)
    videos = [make_video(tmp_path / f"v{i}.mp4", 8) for i in range(6)]
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda v=v, i=i: results.append(upload(local_cluster, release, v,
                                                                                 tmp_path / f"c{i}")))
               for i, v in enumerate(videos)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert [r["status"] for r in results] == ["COMPLETED"] * 6, results
    after = _jobs_per_worker(local_cluster)
    ran = [name for name, count in after.items() if count > before.get(name, 0)]
    assert len(ran) >= 3, after


def _processing(cluster: Cluster, key: str, tmp: Path, seconds: int = 40) -> str:
    """Upload a video that takes a while to encode; return its name once it is Processing."""
    doc = upload(cluster, key, make_video(tmp / "long.mp4", seconds, "1280x720"), tmp, wait=False)
    name = str(doc["id"])
    wait_for(lambda: video_phase(cluster, name) == "Processing", 240, f"{name} Processing", interval=0.2)
    return name


def _completed_once(cluster: Cluster, name: str) -> None:
    wait_for(lambda: video_phase(cluster, name) in ("Completed", "Failed"), 900, f"{name} to finish", interval=1)
    status = _json(cluster, "get", "videotranscode", name).get("status", {})
    events = kubectl(cluster, "-n", NS, "get", "events", "--field-selector", f"involvedObject.name={name}").stdout
    why = {k: status.get(k) for k in ("phase", "attempts", "reason", "message")}
    assert status.get("phase") == "Completed", f"{why}\n{events}\n{diagnosis(cluster, NS, RELEASE)}"
    files = outputs(cluster, name)
    assert files.count("master.m3u8") == 1, files
    playlists = [f for f in files if f.endswith(".m3u8") and f != "master.m3u8"]
    master = kubectl(cluster, "-n", NS, "exec", pods(cluster, "ingest")[0]["metadata"]["name"], "--", "cat",
                     f"/var/lib/vidup/outputs/{name}/master.m3u8").stdout
    assert len(playlists) == master.count("#EXT-X-STREAM-INF"), files  # one set, no leftovers of a retry


def test_worker_pod_force_deleted_mid_transcode(local_cluster: Cluster, release: str, tmp_path: Path) -> None:
    name = _processing(local_cluster, release, tmp_path)
    uid = _json(local_cluster, "get", "videotranscode", name)["metadata"]["uid"]

    def running_it() -> str:
        for pod in pods(local_cluster, "worker"):
            log = kubectl(local_cluster, "-n", NS, "logs", pod["metadata"]["name"], "--tail=-1").stdout
            if uid in log and video_phase(local_cluster, name) == "Processing":
                return str(pod["metadata"]["name"])
        return ""

    victim = wait_for(running_it, 120, "the worker running the video")
    kubectl(local_cluster, "-n", NS, "delete", "pod", victim, "--force", "--grace-period=0")
    _completed_once(local_cluster, name)


def test_leading_operator_deleted_mid_transcode(local_cluster: Cluster, release: str, tmp_path: Path) -> None:
    name = _processing(local_cluster, release, tmp_path)
    redis_pod = pods(local_cluster, "redis")[0]["metadata"]["name"]
    keys = kubectl(local_cluster, "-n", NS, "exec", redis_pod, "--", "redis-cli", "--scan", "--pattern",
                   "vidup:operator:leader:*").stdout.split()
    assert len(keys) == 1
    holder = kubectl(local_cluster, "-n", NS, "exec", redis_pod, "--", "redis-cli", "get", keys[0]).stdout
    leader = holder.split("/")[0].strip()
    assert leader in [p["metadata"]["name"] for p in pods(local_cluster, "operator")]
    kubectl(local_cluster, "-n", NS, "delete", "pod", leader)
    _completed_once(local_cluster, name)


def test_upgrade_with_a_changed_value_mid_transcode(local_cluster: Cluster, release: str, tmp_path: Path) -> None:
    name = _processing(local_cluster, release, tmp_path)
    helm(local_cluster, "upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values",
         "--set", "config.VIDUP_RETRY_MAX_SECONDS=120", "--wait", "--timeout", "10m")
    _completed_once(local_cluster, name)
    assert all_ready(local_cluster)


def test_uninstall_removes_what_the_chart_made(local_cluster: Cluster, release: str) -> None:
    manifest = helm(local_cluster, "get", "manifest", RELEASE, "-n", NS).stdout
    made = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(manifest) if d]
    assert made
    videos_before = len(_json(local_cluster, "get", "videotranscodes")["items"])
    helm(local_cluster, "uninstall", RELEASE, "-n", NS, "--wait")
    for kind, name in made:
        found = kubectl(local_cluster, "-n", NS, "get", kind, name, "--ignore-not-found", "-o", "name").stdout
        assert found.strip() == "", f"{kind}/{name} is still there"
    assert kubectl(local_cluster, "get", "crd", "videotranscodes.vidup.io", "-o", "name").stdout.strip()
    assert len(_json(local_cluster, "get", "videotranscodes")["items"]) == videos_before
