"""End to end on ``--storage s3``: the whole local stack with a real SeaweedFS bucket holding uploads
and outputs. An upload over TUS becomes HLS played over HTTP through vidup's own URLs (ranges, CORS,
conditional requests), the bucket holds the source and the package while the storage directory holds
nothing, the finalizer empties the package's prefix, and a restart of the S3 server in the middle of
a transcode costs one retry, not the video."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import m3u8
import pytest
import requests
from e2e_support import make_clip, video_id_of
from e2e_support import tus_upload as upload_location
from kubernetes import client

from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION
from vidup.storage import S3Blobs
from vidup.storage.layout import output_relpath, upload_relpath
from vidup_ingest.videos import playback_tokens

pytestmark = pytest.mark.slow

TIMEOUT = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`vidup up --storage s3 --workers 1` with x264's fastest preset, and retries spaced so a
    restarted S3 server is back before the retry runs."""
    s = Stack(tmp_path_factory.mktemp("s3-stack"), workers=1, storage="s3", extra_env={
        "VIDUP_X264_PRESET": "ultrafast", "VIDUP_RETRY_BASE_SECONDS": "5", "VIDUP_MAX_ATTEMPTS": "4",
    })
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def bucket(stack: Stack) -> S3Blobs:
    assert stack.s3 is not None
    return stack.s3.blobs()


def tus_upload(stack: Stack, path: Path) -> str:
    """Upload with tuspy; returns the video's id (from the final response's Video-Location)."""
    return video_id_of(upload_location(stack, path, chunk_size=8 << 20))


def custom_objects(stack: Stack) -> tuple[client.ApiClient, client.CustomObjectsApi]:
    api = stack.api_client()
    return api, client.CustomObjectsApi(api)


def get_resource(stack: Stack, video_id: str) -> dict[str, Any] | None:
    api, objects = custom_objects(stack)
    with api:
        try:
            return dict(objects.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, video_id))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise


def wait_for_status(stack: Stack, video_id: str, done: Any, what: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = dict((get_resource(stack, video_id) or {}).get("status") or {})
        if done(status):
            return status
        time.sleep(0.3)
    pytest.fail(f"{video_id}: {what} did not happen in {timeout} s; last status {status}")


def status_doc(stack: Stack, video_id: str) -> dict[str, Any]:
    r = requests.get(f"{stack.url}/videos/{video_id}", headers={"Authorization": f"Bearer {stack.api_key}"},
                     timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def local_files(stack: Stack) -> list[str]:
    """Files of uploads, outputs or scratch on the storage directory (there should be none)."""
    assert stack.settings is not None
    root = stack.settings.storage_dir
    return sorted(str(p.relative_to(root)) for top in ("uploads", "outputs", "scratch")
                  for p in (root / top).rglob("*") if p.is_file())


def ffprobe(target: str) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", target],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return dict(json.loads(out))


def test_s3_upload_plays_through_vidup_urls_and_the_finalizer_empties_the_bucket(
        stack: Stack, bucket: S3Blobs, tmp_path: Path) -> None:
    sample = make_clip(tmp_path / "sample.mp4", 3, "1280x720")
    video_id = tus_upload(stack, sample)
    status = wait_for_status(stack, video_id, lambda s: s.get("phase") in ("Completed", "Failed"), "an end")
    assert status["phase"] == "Completed", status

    # the bucket holds the source and the package; the storage directory holds nothing
    assert bucket.size(upload_relpath(video_id)) == sample.stat().st_size
    package = dict(bucket.keys(output_relpath(video_id) + "/"))
    prefix = output_relpath(video_id)
    assert f"{prefix}/master.m3u8" in package and f"{prefix}/poster.jpg" in package
    assert {f"{prefix}/720p/index.m3u8", f"{prefix}/480p/index.m3u8"} <= set(package)
    assert any(k.endswith(".ts") for k in package)
    assert local_files(stack) == []

    # a player's view: everything through the ingest's tokened URLs, no bucket credentials
    doc = status_doc(stack, video_id)
    assert (doc["status"], doc["path"]) == ("COMPLETED", upload_relpath(video_id))
    master_url = doc["master_playlist_url"]
    master = requests.get(master_url, timeout=30)
    assert master.status_code == 200 and master.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert master.headers["Cache-Control"] == "no-cache"
    assert master.content == bucket.read_bytes(f"{prefix}/master.m3u8")
    variants = m3u8.loads(master.text, uri=master_url).playlists
    assert {v.stream_info.resolution for v in variants} == {(1280, 720), (854, 480)}
    media_url = urljoin(master_url, next(v.uri for v in variants if v.stream_info.resolution == (854, 480)))
    media = m3u8.loads(requests.get(media_url, timeout=30).text)
    assert media.is_endlist and media.segments
    seg_url = urljoin(media_url, media.segments[0].uri)
    seg = requests.get(seg_url, timeout=30)
    assert seg.status_code == 200 and seg.headers["Content-Type"] == "video/mp2t"
    assert seg.headers["Accept-Ranges"] == "bytes" and seg.headers["Cache-Control"] == "private, max-age=3600"
    assert seg.content == bucket.read_bytes(f"{prefix}/480p/{media.segments[0].uri}")
    (tmp_path / "seg.ts").write_bytes(seg.content)
    streams = {s["codec_type"]: s for s in ffprobe(str(tmp_path / "seg.ts"))["streams"]}
    assert (streams["video"]["codec_name"], streams["video"]["width"], streams["video"]["height"]) == ("h264", 854, 480)
    assert streams["audio"]["codec_name"] == "aac"
    assert ffprobe(media_url)["format"]["duration"]  # ffprobe follows the playlist over HTTP

    # ranges, conditional requests, HEAD and CORS, as on the volume
    size, body = len(seg.content), seg.content
    part = requests.get(seg_url, headers={"Range": "bytes=100-1123"}, timeout=30)
    assert part.status_code == 206 and part.content == body[100:1124]
    assert (part.headers["Content-Range"], part.headers["Content-Length"]) == (f"bytes 100-1123/{size}", "1024")
    tail = requests.get(seg_url, headers={"Range": "bytes=-188"}, timeout=30)
    assert tail.status_code == 206 and tail.content == body[-188:]
    assert tail.headers["Content-Range"] == f"bytes {size - 188}-{size - 1}/{size}"
    assert requests.get(seg_url, headers={"Range": f"bytes={size - 10}-"}, timeout=30).content == body[-10:]
    beyond = requests.get(seg_url, headers={"Range": f"bytes={size + 10}-"}, timeout=30)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
    head = requests.head(seg_url, timeout=30)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(size) and not head.content
    assert requests.get(seg_url, headers={"If-None-Match": seg.headers["ETag"]}, timeout=30).status_code == 304
    origin = "https://player.example.com"
    cors = requests.get(seg_url, headers={"Origin": origin, "Range": "bytes=0-9"}, timeout=30)
    assert cors.status_code == 206 and cors.headers["Access-Control-Allow-Origin"] == origin
    exposed = {h.strip().lower() for h in cors.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"content-range", "content-length", "accept-ranges"} <= exposed
    preflight = requests.options(seg_url, headers={
        "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"},
        timeout=30)
    assert preflight.status_code == 204
    assert "range" in preflight.headers["Access-Control-Allow-Headers"].lower()
    # nothing outside the package is reachable through the HLS route, and missing files are 404s
    base = master_url.rsplit("/", 1)[0] + "/"
    for tail_path in ("480p/seg_99999.ts", f"..%2F..%2F..%2Fuploads%2F{video_id}.ts", "480p/.hidden.ts"):
        raw = requests.get(base + tail_path, timeout=30)
        assert raw.status_code == 404, (tail_path, raw.status_code)
    assert urlsplit(base).path.startswith(f"/videos/{video_id}/hls/")

    # kubectl delete: the finalizer removes every object of the package
    api, objects = custom_objects(stack)
    with api:
        objects.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, video_id)
    deadline = time.monotonic() + 60
    while get_resource(stack, video_id) is not None or list(bucket.keys(prefix + "/")):
        assert time.monotonic() < deadline, "the resource or its objects outlived the delete"
        time.sleep(0.5)
    assert requests.get(master_url, timeout=30).status_code == 404


def test_segments_can_redirect_to_presigned_urls(stack: Stack, bucket: S3Blobs) -> None:
    """VIDUP_HLS_REDIRECT_SECONDS: segments answer 302 to a short-lived presigned URL, playlists
    are still served by the ingest."""
    video_id = "redirected"
    prefix = output_relpath(video_id)
    bucket.put_bytes(f"{prefix}/master.m3u8", b"#EXTM3U\n", "application/vnd.apple.mpegurl")
    bucket.put_bytes(f"{prefix}/480p/seg_00000.ts", b"G" * 188 * 10, "video/mp2t")
    assert stack.settings is not None
    token = playback_tokens.issue(stack.settings.token_secret, video_id)
    ingest = stack.start_ingest(index=1, env={"VIDUP_HLS_REDIRECT_SECONDS": "60"})
    try:
        base = f"{ingest.url}/videos/{video_id}/hls/{token}/"
        master = requests.get(base + "master.m3u8", timeout=30, allow_redirects=False)
        assert master.status_code == 200 and master.content == b"#EXTM3U\n"
        seg = requests.get(base + "480p/seg_00000.ts", timeout=30, allow_redirects=False)
        assert seg.status_code == 302
        assert seg.headers["Location"].startswith(stack.s3.endpoint if stack.s3 else "")
        followed = requests.get(seg.headers["Location"], timeout=30)
        assert followed.status_code == 200 and followed.content == b"G" * 188 * 10
        assert followed.headers["Content-Type"] == "video/mp2t"
    finally:
        ingest.stop()
        stack.processes.remove(ingest)
        bucket.delete_prefix(prefix + "/")


def test_s3_restart_mid_transcode_costs_a_retry_not_the_video(stack: Stack, bucket: S3Blobs, tmp_path: Path) -> None:
    assert stack.s3 is not None
    source = make_clip(tmp_path / "long.mp4", 30, "1280x720")
    video_id = tus_upload(stack, source)
    running = wait_for_status(stack, video_id, lambda s: s.get("phase") in ("Completed", "Failed") or (
        s.get("phase") == "Processing" and s.get("progress", 0) >= 1), "FFmpeg making progress")
    assert running["phase"] == "Processing", f"the encode ended before the fault could hit it: {running}"
    stack.s3.stop()  # FFmpeg reads its scratch copy on; the publish that follows finds no store
    try:
        failed = wait_for_status(stack, video_id, lambda s: s.get("reason") == "Retrying" or s.get("phase") in (
            "Completed", "Failed"), "the attempt failing while the store is down", timeout=180)
    finally:
        stack.s3.start()  # same ports, same data, same credentials
    assert failed.get("reason") == "Retrying", failed
    assert "attempt 1 of 4 failed" in failed["message"] and "connect" in failed["message"].lower(), failed
    status = wait_for_status(stack, video_id, lambda s: s.get("phase") in ("Completed", "Failed"), "an end")
    assert status["phase"] == "Completed", status
    assert status["attempts"] >= 2
    prefix = output_relpath(video_id)
    master = bucket.read_bytes(f"{prefix}/master.m3u8")
    assert master is not None and b"#EXT-X-STREAM-INF" in master
    for variant in m3u8.loads(master.decode()).playlists:
        media = bucket.read_bytes(f"{prefix}/{variant.uri}")
        assert media is not None
        for seg in m3u8.loads(media.decode()).segments:
            assert bucket.size(f"{prefix}/{variant.uri.rsplit('/', 1)[0]}/{seg.uri}"), seg.uri
    assert local_files(stack) == []
    doc = status_doc(stack, video_id)
    assert requests.get(doc["master_playlist_url"], timeout=30).content == master
