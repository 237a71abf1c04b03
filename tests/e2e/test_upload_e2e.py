"""End to end, on the whole local stack `vidup up` starts (control plane, Redis, ingest, operator,
two FFmpeg workers): upload → VideoTranscode → HLS served by the ingest and played over HTTP;
a non-video upload → Failed/InvalidMedia; and `vidup upload` as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import m3u8
import pytest
import requests
from e2e_support import TIMEOUT, make_clip, resource, start_stack, tus_upload, wait_for_phase
from tusclient import client as tus_client

from vidup.localstack import binaries
from vidup.localstack.stack import Stack
from vidup.storage.layout import output_relpath, upload_relpath

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Everything, as `vidup up --workers 2` runs it, with x264's fastest preset (VIDUP_X264_PRESET)."""
    yield from start_stack(tmp_path_factory.mktemp("e2e-stack"), workers=2)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seconds of 1280x720 test pattern with a tone: two rungs (720p, 480p)."""
    return make_clip(tmp_path_factory.mktemp("media") / "sample.mp4")


def status_doc(stack: Stack, video_url: str) -> dict[str, Any]:
    r = requests.get(video_url, headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ffprobe_video(url: str) -> tuple[int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "json", url], capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    stream = json.loads(out)["streams"][0]
    return int(stream["width"]), int(stream["height"])


def decodes_cleanly(url: str) -> float:
    """Decode the whole rendition over HTTP; the decoded duration in seconds (errors fail)."""
    result = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", url, "-f", "null", "-"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", url],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return float(json.loads(out)["format"]["duration"])


def kubectl(stack: Stack, *args: str) -> str:
    return subprocess.run([str(binaries.expected().kubectl), "--kubeconfig", str(stack.kubeconfig), *args],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def test_tus_upload_becomes_playable_hls(stack: Stack, sample: Path) -> None:
    video_url = tus_upload(stack, sample)
    assert video_url.startswith(f"{stack.url}/videos/")
    video_id = video_url.rsplit("/", 1)[-1]
    obj = wait_for_phase(stack, video_id, {"Completed", "Failed"})
    assert obj["status"]["phase"] == "Completed", obj["status"]

    doc = status_doc(stack, video_url)
    assert (doc["id"], doc["status"], doc["progress"]) == (video_id, "COMPLETED", 100)
    assert doc["job_id"] == obj["status"]["jobId"] and doc["path"] == f"uploads/{video_id}"
    assert doc["filename"] == "sample.mp4" and doc["size"] == sample.stat().st_size
    assert doc["reason"] is None and doc["error"] is None
    assert doc["duration"] == pytest.approx(3.0, abs=0.2)
    assert [(r["width"], r["height"]) for r in doc["renditions"]] == [(1280, 720), (854, 480)]

    master = requests.get(doc["master_playlist_url"], timeout=30)
    assert master.status_code == 200
    assert master.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    playlist = m3u8.loads(master.text, uri=doc["master_playlist_url"])
    assert playlist.is_variant
    variants = {p.stream_info.resolution: urljoin(doc["master_playlist_url"], p.uri) for p in playlist.playlists}
    assert set(variants) == {(1280, 720), (854, 480)}
    for rendition in doc["renditions"]:
        assert variants[(rendition["width"], rendition["height"])] == rendition["playlist_url"]
        media = m3u8.loads(requests.get(rendition["playlist_url"], timeout=30).text)
        assert media.segments and media.is_endlist
        segment = requests.get(urljoin(rendition["playlist_url"], media.segments[0].uri), timeout=30)
        assert segment.status_code == 200 and segment.headers["Content-Type"] == "video/mp2t"
        # a player's view: ffprobe/ffmpeg fetch the playlist and segments over HTTP from the ingest
        assert ffprobe_video(rendition["playlist_url"]) == (rendition["width"], rendition["height"])
        assert decodes_cleanly(rendition["playlist_url"]) == pytest.approx(3.0, abs=0.3)
    assert ffprobe_video(doc["master_playlist_url"]) in {(1280, 720), (854, 480)}
    poster = requests.get(doc["poster_url"], timeout=30)
    assert poster.status_code == 200 and poster.headers["Content-Type"] == "image/jpeg"
    assert poster.content[:3] == b"\xff\xd8\xff"

    listed = requests.get(f"{stack.url}/videos", headers={"Authorization": f"Bearer {stack.api_key}"},
                          timeout=30).json()
    assert video_id in [item["id"] for item in listed["items"]]


def test_non_video_fails_with_invalid_media(stack: Stack, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"this is not a video\n" * 5000)
    video_url = tus_upload(stack, notes)
    video_id = video_url.rsplit("/", 1)[-1]
    obj = wait_for_phase(stack, video_id, {"Completed", "Failed"})
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidMedia")
    assert status["message"]

    table = kubectl(stack, "get", "videotranscodes", video_id)
    assert re.search(rf"^{video_id}\s+Failed\b", table, re.MULTILINE), table
    assert kubectl(stack, "get", "vt", video_id, "-o", "jsonpath={.status.reason}") == "InvalidMedia"

    doc = status_doc(stack, video_url)
    assert (doc["status"], doc["reason"], doc["error"]) == ("FAILED", "InvalidMedia", status["message"])
    assert doc["master_playlist_url"] is None and doc["renditions"] == []


# -- `vidup upload` ----------------------------------------------------------------------------


def vidup_upload(stack: Stack, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`vidup upload` exactly as a user runs it after `eval "$(vidup env)"`."""
    env = {**os.environ, **stack.user_env(), "VIDUP_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "vidup.cli", "upload", *args], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT + 60)


def without_tokens(doc: dict[str, Any]) -> str:
    """The document with playback tokens blanked: a token is minted per request (stable for a
    15-minute window), so two reads straddling a window edge differ only there."""
    return re.sub(r"/hls/[^/]+/|\?token=[^\"]+", "/hls/T/", json.dumps(doc, sort_keys=True))


def test_vidup_upload_wait_json_completed(stack: Stack, sample: Path, tmp_path: Path) -> None:
    result = vidup_upload(stack, tmp_path / "cache", str(sample), "--wait", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["status"], doc["progress"]) == ("COMPLETED", 100)
    assert without_tokens(doc) == without_tokens(status_doc(stack, doc["url"]))
    assert "upload" in result.stderr and "transcode" in result.stderr and "100.0%" in result.stderr
    assert resource(stack, doc["id"])["status"]["phase"] == "Completed"


def test_vidup_upload_wait_json_failed(stack: Stack, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(300_000))
    result = vidup_upload(stack, tmp_path / "cache", str(junk), "--wait", "--json")
    assert result.returncode == 1, (result.stdout, result.stderr)
    doc = json.loads(result.stdout)
    assert (doc["status"], doc["reason"]) == ("FAILED", "InvalidMedia") and doc["error"]
    assert without_tokens(doc) == without_tokens(status_doc(stack, doc["url"]))


def test_vidup_upload_human_output_and_usage_errors(stack: Stack, sample: Path, tmp_path: Path) -> None:
    result = vidup_upload(stack, tmp_path / "cache", str(sample), "--wait")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^video [0-9a-f]{32}: COMPLETED \(100%\)$", result.stdout, re.MULTILINE), result.stdout
    assert "master playlist: http" in result.stdout and "1280x720" in result.stdout
    missing = vidup_upload(stack, tmp_path / "cache", str(tmp_path / "nope.mp4"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("VIDUP_URL", "VIDUP_TOKEN")}
    no_creds = subprocess.run([sys.executable, "-m", "vidup.cli", "upload", str(sample)], env=env,
                              capture_output=True, text=True, timeout=60)
    assert no_creds.returncode == 2 and "VIDUP_TOKEN" in no_creds.stderr
    bad_key = vidup_upload(stack, tmp_path / "cache", str(sample), "--token", "vk_wrong")
    assert bad_key.returncode == 1 and "401" in bad_key.stderr
    no_chunk = vidup_upload(stack, tmp_path / "cache", str(sample), "--chunk-mib", "0")
    assert no_chunk.returncode == 2 and "--chunk-mib" in no_chunk.stderr


def test_vidup_upload_resumes_an_interrupted_upload(stack: Stack, tmp_path: Path) -> None:
    """Interrupted right after the upload is created, as Ctrl-C would. The child gets SIGINT's
    default action back: a test run started in the background of a non-interactive shell inherits
    SIGINT ignored, which Python keeps, and the upload then simply finished (exit 0, not 130).
    Small chunks keep the upload going for a while (with 8 MiB chunks 96 MiB took under 0.2 s)."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(96 << 20))
    cache = tmp_path / "cache"
    env = {**os.environ, **stack.user_env(), "VIDUP_CACHE_DIR": str(cache)}
    first = subprocess.Popen([sys.executable, "-m", "vidup.cli", "upload", str(big), "--chunk-mib", "0.25"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert first.stderr is not None
    line = first.stderr.readline()  # the bar's first line is drawn right after the upload is created
    assert line.startswith("upload"), line
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "run the same command again to resume" in err
    stored = json.loads((cache / "upload-urls.json").read_text())
    assert len(stored) == 1
    upload_url = next(iter(stored.values()))["url"]

    second = subprocess.run([sys.executable, "-m", "vidup.cli", "upload", str(big), "--json"], env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["id"] == upload_url.rsplit("/", 1)[-1], "the second run did not continue the first upload"
    assert doc["size"] == big.stat().st_size
    assert json.loads((cache / "upload-urls.json").read_text()) == {}, "a finished upload is forgotten"
    assert stack.settings is not None
    assert (stack.settings.storage_dir / doc["path"]).read_bytes() == big.read_bytes()


def test_terminating_a_finished_upload_removes_the_video_and_its_hls(stack: Stack, sample: Path) -> None:
    """tus DELETE of a finished upload: its VideoTranscode goes through the operator's finalizer,
    which removes the HLS package; the upload's bytes go too."""
    tus = tus_client.TusClient(f"{stack.url}/files/", headers={"Authorization": f"Bearer {stack.api_key}"})
    uploader = tus.uploader(str(sample), chunk_size=1 << 20, metadata={"filename": sample.name})
    uploader.upload()
    video_id = str(uploader.url).rstrip("/").rsplit("/", 1)[-1]
    wait_for_phase(stack, video_id, {"Completed"})
    assert stack.settings is not None
    outputs = stack.settings.storage_dir / output_relpath(video_id)
    assert (outputs / "master.m3u8").is_file()

    r = requests.delete(str(uploader.url), headers={"Tus-Resumable": "1.0.0",
                                                     "Authorization": f"Bearer {stack.api_key}"}, timeout=30)
    assert r.status_code == 204, r.text
    deadline = time.monotonic() + 60
    while video_id in kubectl(stack, "get", "videotranscodes", "-o", "name") or outputs.exists():
        assert time.monotonic() < deadline, "the video or its outputs outlived the termination"
        time.sleep(0.5)
    assert not (stack.settings.storage_dir / upload_relpath(video_id)).exists()
    gone = requests.get(f"{stack.url}/videos/{video_id}", headers={"Authorization": f"Bearer {stack.api_key}"},
                        timeout=30)
    assert gone.status_code == 404
