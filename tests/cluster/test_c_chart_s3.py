"""`helm install` with `storage.type=s3` on the real local cluster: uploads, sources and HLS live in
a bucket, so no pod shares a volume. A real SeaweedFS (the local stack's S3Server) runs on the host
at the node's address, which pods route to (as they reach the API server there); the release gets
its own namespace, key prefix and ingress host (`localhost`, so it never shadows test_b's
any-host route). Every pod Ready with no shared claim, an upload through the ingress becomes HLS
served through the ingress from the bucket, the finalizer empties the video's outputs in the
bucket, and uninstall leaves nothing of the release (the bucket keeps the sources, as documented)."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cluster_support import apply, assert_hls_served, diagnosis, kubectl, release_pods, wait_for
from test_b_chart import CHART, helm, make_video, ready, serve_release

from vidup.localcluster import hostnet
from vidup.localcluster.cluster import Cluster
from vidup.localstack.s3_server import BUCKET, REGION, S3Server

NS = "vidup-chart-s3"
RELEASE = "vidup-s3"
SECRET = "vidup-s3-bucket"
#: The ingress host of this release: a name the host resolves (to 127.0.0.1, where Traefik listens)
#: and a rule more specific than test_b's any-host one, should that release still be there.
HOST = "localhost"
COMPONENTS = {"ingest": 2, "operator": 2, "worker": 2, "redis": 1}


def _json(cluster: Cluster, *args: str) -> Any:
    return json.loads(kubectl(cluster, "-n", NS, *args, "-o", "json").stdout)


def pods(cluster: Cluster, component: str | None = None) -> list[dict[str, Any]]:
    return release_pods(cluster, NS, RELEASE, component)


def ingress_url(cluster: Cluster) -> str:
    return f"http://{HOST}:{cluster.ingress_port}"


def _diagnosis(cluster: Cluster) -> str:
    return diagnosis(cluster, NS, RELEASE, tail=60)


@pytest.fixture(scope="module")
def s3(local_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS of this module's own, bound to the node's address so pods reach it."""
    server = S3Server(tmp_path_factory.mktemp("s3-for-pods"), host=hostnet.NODE_ADDRESS).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"chart-{secrets.token_hex(4)}/"


@pytest.fixture(scope="module")
def release(local_cluster: Cluster, s3: S3Server, prefix: str) -> Iterator[str]:
    """The chart with storage.type=s3 and a Secret holding the bucket's key pair; yields the
    bootstrap tenant's API key."""
    kubectl(local_cluster, "create", "namespace", NS)
    apply(local_cluster, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NS},
                          "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key,
                                         "AWS_SECRET_ACCESS_KEY": s3.secret_key}})
    installed = helm(local_cluster, "install", RELEASE, str(CHART), "-n", NS, "--wait", "--timeout", "10m",
                     "--set", "storage.type=s3", "--set", f"storage.s3.endpoint={s3.endpoint}",
                     "--set", f"storage.s3.region={REGION}", "--set", f"storage.s3.bucket={BUCKET}",
                     "--set", f"storage.s3.prefix={prefix}", "--set", f"storage.s3.existingSecret={SECRET}",
                     "--set", f"ingress.host={HOST}", check=False)
    yield from serve_release(local_cluster, RELEASE, NS, installed, lambda: _diagnosis(local_cluster))


def upload(cluster: Cluster, key: str, video: Path, tmp: Path, chunk_mib: float = 8) -> dict[str, Any]:
    """`vidup upload --url <this release's ingress> --wait`, as a user runs it; the status document."""
    args = [sys.executable, "-m", "vidup.cli", "upload", str(video), "--url", ingress_url(cluster),
            "--token", key, "--json", "--wait", "--timeout", "600", "--chunk-mib", str(chunk_mib)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "VIDUP_CACHE_DIR": str(tmp / "cache")}
    done = subprocess.run(args, capture_output=True, text=True, timeout=700, env=env)
    assert done.returncode == 0, f"{done.stderr}\n{_diagnosis(cluster)}"
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def video(local_cluster: Cluster, release: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short video uploaded through the ingress and waited for; its status document."""
    tmp = tmp_path_factory.mktemp("s3-upload")
    clip = make_video(tmp / "clip.mp4", 4)
    doc = upload(local_cluster, release, clip, tmp)
    assert doc["status"] == "COMPLETED", f"{doc}\n{_diagnosis(local_cluster)}"
    return {**doc, "uploaded_bytes": clip.stat().st_size}


def test_install_reaches_all_pods_ready_without_a_shared_volume(local_cluster: Cluster, release: str) -> None:
    for kind in ("deployments", "statefulsets"):
        for item in _json(local_cluster, "get", kind, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]:
            want, status = item["spec"].get("replicas", 1), item.get("status", {})
            assert status.get("readyReplicas", 0) == want == status.get("updatedReplicas", 0), item["metadata"]
    for component, count in COMPONENTS.items():
        found = pods(local_cluster, component)
        assert len(found) == count and all(ready(p) for p in found), component
        restarts = [s.get("restartCount", 0) for p in found for s in p["status"].get("containerStatuses", [])]
        assert restarts == [0] * count, (component, restarts)
    # No shared claim: the only PersistentVolumeClaim is Redis's own ReadWriteOnce data (its queues,
    # one pod's), and no vidup pod mounts a claim; they get VIDUP_STORAGE=s3 and a local scratch.
    claims = _json(local_cluster, "get", "pvc")["items"]
    assert [c["metadata"]["labels"].get("app.kubernetes.io/component") for c in claims] == ["redis"], claims
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    for component in ("ingest", "operator", "worker"):
        for pod in pods(local_cluster, component):
            volumes = pod["spec"].get("volumes", [])
            assert not [v for v in volumes if "persistentVolumeClaim" in v], (component, volumes)
            assert "scratch" in [v["name"] for v in volumes if "emptyDir" in v], (component, volumes)
            env = {e["name"]: e.get("value") for c in pod["spec"]["containers"] for e in c.get("env", [])}
            assert env.get("VIDUP_STORAGE") == "s3", (component, env)


def test_a_pod_reaches_the_bucket_at_the_node_address(local_cluster: Cluster, release: str, s3: S3Server) -> None:
    """The path every vidup pod uses: pod network -> node address -> SeaweedFS, with the Secret's key."""
    pod = pods(local_cluster, "ingest")[0]["metadata"]["name"]
    probe = ("import os, boto3; from botocore.config import Config\n"
             "c = boto3.client('s3', endpoint_url=os.environ['VIDUP_S3_ENDPOINT'], "
             "region_name=os.environ['VIDUP_S3_REGION'], config=Config(s3={'addressing_style': 'path'}))\n"
             "print(c.head_bucket(Bucket=os.environ['VIDUP_S3_BUCKET'])['ResponseMetadata']['HTTPStatusCode'])")
    done = kubectl(local_cluster, "-n", NS, "exec", pod, "--", "python", "-c", probe, timeout=120)
    assert done.stdout.strip() == "200"
    assert s3.endpoint == f"http://{hostnet.NODE_ADDRESS}:{s3.ports['s3']}"


def test_upload_through_the_ingress_becomes_hls_in_the_bucket_served_through_the_ingress(
    local_cluster: Cluster, s3: S3Server, prefix: str, video: dict[str, Any]
) -> None:
    name = str(video["id"])
    assert video["master_playlist_url"].startswith(ingress_url(local_cluster)), video
    assert_hls_served(video["master_playlist_url"])
    master = requests.get(video["master_playlist_url"], timeout=10)
    listed = kubectl(local_cluster, "-n", NS, "get", "videotranscodes").stdout
    assert name in listed and "Completed" in listed

    bucket = s3.blobs(prefix)
    source = _json(local_cluster, "get", "videotranscode", name)["spec"]["source"]["path"]
    assert source == f"uploads/{name}"
    assert bucket.size(source) == video["uploaded_bytes"]
    outputs = dict(bucket.keys(f"outputs/{name}/"))
    assert f"outputs/{name}/master.m3u8" in outputs, sorted(outputs)
    assert bucket.read_bytes(f"outputs/{name}/master.m3u8") == master.content
    assert sum(1 for key in outputs if key.endswith(".ts")) >= master.text.count("#EXT-X-STREAM-INF")
    # Everything the release wrote is under its prefix (this server is the module's own).
    everything = [key for key, _ in s3.blobs().keys("")]
    assert everything and all(key.startswith(prefix) for key in everything), everything


def test_an_upload_in_1_mib_patches_over_two_ingest_replicas_assembles_in_the_bucket(
    local_cluster: Cluster, release: str, s3: S3Server, prefix: str, tmp_path: Path
) -> None:
    """About 10 PATCHes, each under S3's 5 MiB minimum part, through the ingress, which may send
    each to either ingest replica (they share no volume): the bucket holds exactly the file's bytes."""
    clip = make_video(tmp_path / "720p.mp4", 12, "1280x720")
    assert clip.stat().st_size > 6 << 20  # at least one full part and a tail
    doc = upload(local_cluster, release, clip, tmp_path, chunk_mib=1)
    assert doc["status"] == "COMPLETED", f"{doc}\n{_diagnosis(local_cluster)}"
    stored = s3.blobs(prefix).read_bytes(f"uploads/{doc['id']}")
    assert stored is not None and hashlib.sha256(stored).digest() == hashlib.sha256(clip.read_bytes()).digest()
    assert s3.blobs(prefix).size(f"outputs/{doc['id']}/master.m3u8")


def test_deleting_the_videotranscode_empties_its_outputs_in_the_bucket(
    local_cluster: Cluster, s3: S3Server, prefix: str, video: dict[str, Any]
) -> None:
    name = str(video["id"])
    bucket = s3.blobs(prefix)
    assert list(bucket.keys(f"outputs/{name}/"))
    done = kubectl(local_cluster, "-n", NS, "delete", "videotranscode", name, "--timeout=180s", check=False,
                   timeout=240)
    assert done.returncode == 0, f"{done.stderr}\n{_diagnosis(local_cluster)}"
    assert kubectl(local_cluster, "-n", NS, "get", "videotranscode", name, "--ignore-not-found",
                   "-o", "name").stdout.strip() == ""
    assert list(bucket.keys(f"outputs/{name}/")) == []  # the finalizer ran before the resource went
    assert bucket.size(f"uploads/{name}") is not None  # the source stays: deleting a resource is not tus DELETE


def test_uninstall_leaves_nothing_of_the_release(
    local_cluster: Cluster, release: str, s3: S3Server, prefix: str, video: dict[str, Any]
) -> None:
    manifest = helm(local_cluster, "get", "manifest", RELEASE, "-n", NS).stdout
    made = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(manifest) if d]
    assert made and ("PersistentVolumeClaim", f"{RELEASE}-storage") not in made
    helm(local_cluster, "uninstall", RELEASE, "-n", NS, "--wait")
    for kind, name in made:
        found = kubectl(local_cluster, "-n", NS, "get", kind, name, "--ignore-not-found", "-o", "name").stdout
        assert found.strip() == "", f"{kind}/{name} is still there"
    wait_for(lambda: not pods(local_cluster), 180, "the release's pods to go")
    wait_for(lambda: not [c for c in _json(local_cluster, "get", "pvc")["items"]
                             if not c["metadata"].get("deletionTimestamp")], 180, "Redis's claim to go")
    # The chart never empties the bucket (README, "Storage"): the source is still there.
    assert s3.blobs(prefix).size(f"uploads/{video['id']}") is not None
