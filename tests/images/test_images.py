"""The three Dockerfiles, built by a private Docker engine and run for real: each image runs as a
non-root user, and ingest + operator + worker containers together turn a TUS upload into HLS
against the local API server and Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kubernetes import client
from tusclient import client as tus_client

from vidup import resource
from vidup.localstack.docker_engine import REPO_ROOT, DockerEngine
from vidup.localstack.processes import free_port, wait_until
from vidup.localstack.stack import Stack

IMAGES = {
    "ingest": ("ingest/Dockerfile", "vidup/ingest:test"),
    "operator": ("operator/Dockerfile", "vidup/operator:test"),
    "worker": ("transcoder-image/Dockerfile", "vidup/worker:test"),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is missing: `make test` installs docker.io")
    docker = DockerEngine(tmp_path_factory.mktemp("docker")).start()
    try:
        docker.ensure_base_image()
        for dockerfile, tag in IMAGES.values():
            docker.build(REPO_ROOT / dockerfile, tag)
        yield docker
    finally:
        for container in docker.docker("ps", "-aq", check=False).stdout.split():
            docker.docker("rm", "-f", container, check=False)
        docker.stop()


@pytest.mark.parametrize("component", sorted(IMAGES))
def test_image_runs_as_non_root(engine: DockerEngine, component: str) -> None:
    tag = IMAGES[component][1]
    uid = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "id", tag, "-u").stdout.strip()
    assert uid.isdigit() and int(uid) != 0
    config = json.loads(engine.docker("image", "inspect", tag).stdout)[0]["Config"]
    assert config["User"] not in ("", "0", "root")


def test_worker_image_has_ffmpeg(engine: DockerEngine) -> None:
    out = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "ffmpeg",
                        IMAGES["worker"][1], "-hide_banner", "-version").stdout
    assert out.startswith("ffmpeg version")


def _sample(path: Path) -> None:
    subprocess.run([
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=24:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "aac", "-shortest", str(path),
    ], check=True)


def test_containers_turn_an_upload_into_hls(engine: DockerEngine, kube: Stack, tmp_path: Path) -> None:
    """ingest, operator and worker as containers (host network, shared storage volume)."""
    assert kube.settings is not None
    storage = tmp_path / "storage"
    storage.mkdir()
    storage.chmod(0o777)  # the images' non-root users write here
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(kube.settings.api_keys_file or "", keys / "api-keys.json")
    shutil.copy(kube.kubeconfig, keys / "kubeconfig")
    for path in keys.iterdir():
        path.chmod(0o644)
    port = free_port()
    queue = f"images-{uuid.uuid4().hex[:8]}"
    env = {
        **kube.component_env(), "VIDUP_STORAGE_DIR": "/data", "VIDUP_QUEUE": queue,
        "VIDUP_API_KEYS_FILE": "/keys/api-keys.json", "KUBECONFIG": "/keys/kubeconfig",
        "VIDUP_X264_PRESET": "ultrafast",
    }
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    common = ["run", "-d", "--network", "host", "-v", f"{storage}:/data", "-v", f"{keys}:/keys:ro", *env_args]
    engine.docker(*common, "--name", f"ingest-{queue}", IMAGES["ingest"][1],
                  "python", "-m", "vidup_ingest", "--host", "127.0.0.1", "--port", str(port))
    engine.docker(*common, "--name", f"operator-{queue}", IMAGES["operator"][1])
    engine.docker(*common, "--name", f"worker-{queue}", IMAGES["worker"][1])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 90,
                   "the ingest container")
        source = tmp_path / "sample.mp4"
        _sample(source)
        uploader = tus_client.TusClient(f"{url}/files/", headers={"Authorization": f"Bearer {kube.api_key}"})
        upload = uploader.uploader(str(source), chunk_size=256 * 1024, metadata={"filename": "sample.mp4"})
        upload.upload()
        video_id = upload.url.rstrip("/").rsplit("/", 1)[-1]
        with kube.api_client() as api:
            custom = client.CustomObjectsApi(api)

            def phase() -> str:
                obj = custom.get_namespaced_custom_object(
                    resource.GROUP, resource.VERSION, "default", resource.PLURAL, video_id)
                return str((obj.get("status") or {}).get("phase", ""))

            wait_until(lambda: phase() in ("Completed", "Failed"), 240, "the video to finish")
            obj = custom.get_namespaced_custom_object(
                resource.GROUP, resource.VERSION, "default", resource.PLURAL, video_id)
        assert obj["status"]["phase"] == "Completed", obj["status"]
        master = storage / obj["status"]["outputs"]["masterPlaylist"]
        assert master.read_text().startswith("#EXTM3U")
    finally:
        for name in ("ingest", "operator", "worker"):
            logs = engine.docker("logs", "--tail", "40", f"{name}-{queue}", check=False)
            print(f"--- {name} container log ---\n{logs.stdout}{logs.stderr}")
            engine.docker("rm", "-f", f"{name}-{queue}", check=False)
