"""Pure parts of the status API and `vidup upload`: the phase mapping, output paths, playback
tokens, and the upload client's URL storage and fingerprint. No services needed."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from vidup.resource import Phase
from vidup.upload_client import FileFingerprint, JsonUrlStorage, ProgressBar, Target
from vidup_ingest.videos import playback_tokens
from vidup_ingest.videos.status import STATUS_BY_PHASE, VideoUrls, output_relative, status_document

URLS = VideoUrls(self_url="https://x/videos/v1", events_url="wss://x/videos/v1/events?token=t",
                 hls_base="https://x/videos/v1/hls/t/")


def test_every_phase_maps_to_one_of_the_four_statuses() -> None:
    assert set(STATUS_BY_PHASE) == set(Phase)
    assert set(STATUS_BY_PHASE.values()) == {"PENDING", "PROCESSING", "COMPLETED", "FAILED"}


def test_unknown_phase_and_bad_progress_are_safe() -> None:
    obj = {"metadata": {"name": "v1"}, "spec": {"tenant": "t", "source": {"path": "uploads/v1", "size": 1}},
           "status": {"phase": "Exploded", "progress": "lots"}}
    doc = status_document(obj, URLS)
    assert (doc["status"], doc["phase"], doc["progress"]) == ("PENDING", "Pending", 0)
    obj["status"] = {"phase": "Processing", "progress": 250}
    assert status_document(obj, URLS)["progress"] == 100


def test_completed_without_a_token_has_no_urls() -> None:
    obj = {"metadata": {"name": "v1"}, "spec": {"tenant": "t", "source": {"path": "uploads/v1", "size": 1}},
           "status": {"phase": "Completed", "progress": 100,
                      "outputs": {"path": "outputs/v1", "masterPlaylist": "outputs/v1/master.m3u8"}}}
    assert status_document(obj, URLS)["master_playlist_url"] == "https://x/videos/v1/hls/t/master.m3u8"
    no_token = VideoUrls(self_url=URLS.self_url, events_url=URLS.events_url, hls_base="")
    assert status_document(obj, no_token)["master_playlist_url"] is None


@pytest.mark.parametrize(("outputs_path", "path", "expected"), [
    ("outputs/v1", "master.m3u8", "master.m3u8"),
    ("outputs/v1", "outputs/v1/master.m3u8", "master.m3u8"),
    ("outputs/v1/", "outputs/v1/720p/index.m3u8", "720p/index.m3u8"),
    ("", "master.m3u8", "master.m3u8"),
    ("outputs/v1", "outputs/v10/master.m3u8", "outputs/v10/master.m3u8"),
])
def test_output_relative(outputs_path: str, path: str, expected: str) -> None:
    assert output_relative(outputs_path, path) == expected


def test_playback_tokens() -> None:
    now = 1_800_000_100.0  # inside a window (1_800_000_000 is a window edge)
    token = playback_tokens.issue("s3cret", "v1", ttl_seconds=3600, now=now)
    expires = playback_tokens.verify("s3cret", "v1", token, now=now)
    assert now + 3600 <= expires <= now + 3600 + playback_tokens.WINDOW_SECONDS
    # stable within a window, so status documents and player caches see one URL
    assert playback_tokens.issue("s3cret", "v1", ttl_seconds=3600, now=now + 1) == token
    assert playback_tokens.looks_like_token(token) and not playback_tokens.looks_like_token("vk_abc")
    with pytest.raises(playback_tokens.PlaybackTokenError, match="invalid"):
        playback_tokens.verify("s3cret", "v2", token, now=now)
    with pytest.raises(playback_tokens.PlaybackTokenError, match="invalid"):
        playback_tokens.verify("other", "v1", token, now=now)
    with pytest.raises(playback_tokens.PlaybackTokenError, match="expired"):
        playback_tokens.verify("s3cret", "v1", token, now=expires + 1)
    with pytest.raises(playback_tokens.PlaybackTokenError, match="malformed"):
        playback_tokens.verify("s3cret", "v1", "../etc", now=now)
    with pytest.raises(playback_tokens.PlaybackTokenError, match="not configured"):
        playback_tokens.verify("", "v1", token, now=now)
    with pytest.raises(ValueError):
        playback_tokens.issue("", "v1")


def test_json_url_storage_round_trip_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "urls.json"
    store = JsonUrlStorage(path)
    assert store.get_item("k") is None
    store.set_item("k", "http://x/files/1")
    store.set_item("j", "http://x/files/2")
    assert JsonUrlStorage(path).get_item("k") == "http://x/files/1"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store.remove_item("k")
    assert store.get_item("k") is None and store.get_item("j") == "http://x/files/2"
    path.write_text("{not json")
    assert store.get_item("j") is None
    store.set_item("j", "http://x/files/3")
    assert store.get_item("j") == "http://x/files/3"


def test_fingerprint_tells_files_servers_and_credentials_apart(tmp_path: Path) -> None:
    head = os.urandom(2 << 20)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(head + b"tail-a")
    b.write_bytes(head + b"tail-b")  # same size and head: tuspy's default would call them equal
    os.utime(b, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns))
    fp = FileFingerprint("http://x/files/", "key1")

    def of(f: FileFingerprint, p: Path) -> str:
        with open(p, "rb") as s:
            return f.get_fingerprint(s)

    assert of(fp, a) == of(fp, a)
    assert of(fp, a) != of(fp, b)
    assert of(fp, a) != of(FileFingerprint("http://y/files/", "key1"), a)
    assert of(fp, a) != of(FileFingerprint("http://x/files/", "key2"), a)
    before = of(fp, a)
    os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert of(fp, a) != before


def test_target_accepts_the_base_or_the_files_url() -> None:
    assert Target.from_url("https://v.example.com/") == Target("https://v.example.com", "https://v.example.com/files/")
    assert Target.from_url("https://v.example.com/files/").endpoint == "https://v.example.com/files/"
    assert Target.from_url("https://v.example.com/prefix/files").base == "https://v.example.com/prefix"


def test_progress_bar_off_a_terminal_prints_steps_only() -> None:
    out = io.StringIO()
    bar = ProgressBar("upload", out)
    for pct in (0, 1, 2, 9, 10, 15, 55, 100):
        bar.show(pct)
    lines = out.getvalue().splitlines()
    assert [line.split("]")[1].split("%")[0].strip() for line in lines] == ["0.0", "10.0", "55.0", "100.0"]
