"""``GET /videos`` and ``GET /videos/<id>`` on a real ingest over a real kube-apiserver."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from status_support import StatusIngest, completed_status


def get(ingest: StatusIngest, video_id: str, alias: str = "acme") -> requests.Response:
    return requests.get(f"{ingest.url}/videos/{video_id}", headers=ingest.headers(alias), timeout=30)


def doc(ingest: StatusIngest, video_id: str) -> dict[str, Any]:
    r = get(ingest, video_id)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return dict(r.json())


def test_new_video_without_status_is_pending(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video(filename="holiday.mov", size=4321)
    d = doc(status_ingest, video_id)
    assert d["id"] == video_id
    assert d["status"] == "PENDING" and d["phase"] == "Pending"
    assert d["progress"] == 0
    assert d["job_id"] is None
    assert d["path"] == f"uploads/{video_id}"
    assert d["filename"] == "holiday.mov" and d["size"] == 4321
    assert d["tenant"] == status_ingest.tenants["acme"]
    assert d["created_at"]
    assert d["reason"] is None and d["error"] is None
    assert d["master_playlist_url"] is None and d["renditions"] == [] and d["poster_url"] is None
    assert d["url"] == f"{status_ingest.url}/videos/{video_id}"


@pytest.mark.parametrize(("phase", "expected"), [("Pending", "PENDING"), ("Queued", "PENDING"),
                                                  ("Processing", "PROCESSING")])
def test_phases_before_the_end(status_ingest: StatusIngest, phase: str, expected: str) -> None:
    video_id = status_ingest.create_video()
    status_ingest.set_status(video_id, {"phase": phase, "progress": 37, "jobId": f"vt-{video_id}-g1",
                                        "attempts": 1, "reason": "Working", "message": "transcoding"})
    d = doc(status_ingest, video_id)
    assert (d["status"], d["phase"], d["progress"]) == (expected, phase, 37)
    assert d["job_id"] == f"vt-{video_id}-g1" and d["attempts"] == 1
    # reason/error are for failures only, whatever the resource says in between
    assert d["reason"] is None and d["error"] is None
    assert d["master_playlist_url"] is None and d["renditions"] == []
    assert d["chunks"] is None


def test_a_chunked_video_shows_its_chunks(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video()
    status_ingest.set_status(video_id, {"phase": "Processing", "progress": 40, "jobId": f"vt-{video_id}-g1",
                                        "attempts": 1, "chunks": {"total": 10, "completed": 4, "seconds": 60,
                                                                  "summary": "4/10", "failures": {}}})
    assert doc(status_ingest, video_id)["chunks"] == {"total": 10, "completed": 4}


def test_completed_has_signed_playlist_urls(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video()
    status_ingest.set_status(video_id, completed_status(video_id))
    d = doc(status_ingest, video_id)
    assert (d["status"], d["progress"], d["duration"]) == ("COMPLETED", 100, 12.5)
    assert (d["width"], d["height"]) == (1920, 1080)
    assert d["completed_at"] == "2026-01-01T00:01:00Z"
    prefix = f"{status_ingest.url}/videos/{video_id}/hls/"
    assert d["master_playlist_url"].startswith(prefix) and d["master_playlist_url"].endswith("/master.m3u8")
    token = d["master_playlist_url"][len(prefix):].split("/")[0]
    base = f"{prefix}{token}/"
    assert d["poster_url"] == base + "poster.jpg"
    assert [(r["width"], r["height"], r["bandwidth"], r["playlist_url"]) for r in d["renditions"]] == [
        (1920, 1080, 5000000, base + "1080p/index.m3u8"),
        (1280, 720, 2800000, base + "720p/index.m3u8"),
    ]
    assert d["renditions"][0]["codecs"] == "avc1.640028,mp4a.40.2"
    assert d["events_url"] == f"ws{status_ingest.url[4:]}/videos/{video_id}/events?token={token}"
    # the same document on a second read within the token window (stable URLs for players/caches)
    assert doc(status_ingest, video_id) == d


def test_completed_with_storage_root_relative_paths(status_ingest: StatusIngest) -> None:
    """Outputs paths written relative to the storage root resolve to the same URLs."""
    video_id = status_ingest.create_video()
    status = completed_status(video_id)
    status["outputs"]["masterPlaylist"] = f"outputs/{video_id}/master.m3u8"
    status["outputs"]["poster"] = f"outputs/{video_id}/poster.jpg"
    status_ingest.set_status(video_id, status)
    d = doc(status_ingest, video_id)
    assert d["master_playlist_url"].endswith(f"/videos/{video_id}/hls/{d['master_playlist_url'].split('/')[-2]}"
                                             "/master.m3u8")
    assert d["poster_url"].endswith("/poster.jpg") and "/outputs/" not in d["poster_url"]


def test_failed_has_reason_and_error(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video(filename="notes.txt")
    status_ingest.set_status(video_id, {"phase": "Failed", "progress": 0, "jobId": f"vt-{video_id}-g1",
                                        "attempts": 1, "reason": "InvalidMedia",
                                        "message": "the upload is not a video: no video stream"})
    d = doc(status_ingest, video_id)
    assert (d["status"], d["phase"]) == ("FAILED", "Failed")
    assert d["reason"] == "InvalidMedia"
    assert d["error"] == "the upload is not a video: no video stream"
    assert d["master_playlist_url"] is None and d["renditions"] == []


def test_forwarded_headers_shape_the_urls(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video()
    status_ingest.set_status(video_id, completed_status(video_id))
    headers = {**status_ingest.headers(), "X-Forwarded-Proto": "https", "X-Forwarded-Host": "videos.example.com"}
    d = requests.get(f"{status_ingest.url}/videos/{video_id}", headers=headers, timeout=30).json()
    assert d["url"] == f"https://videos.example.com/videos/{video_id}"
    assert d["master_playlist_url"].startswith(f"https://videos.example.com/videos/{video_id}/hls/")
    assert d["events_url"].startswith(f"wss://videos.example.com/videos/{video_id}/events?token=")


# -- tenant scoping ----------------------------------------------------------------------------


def test_no_credentials_is_401(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video()
    for url in (f"{status_ingest.url}/videos/{video_id}", f"{status_ingest.url}/videos"):
        r = requests.get(url, timeout=30)
        assert r.status_code == 401, r.text
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        bad = requests.get(url, headers={"Authorization": "Bearer vk_not-a-key"}, timeout=30)
        assert bad.status_code == 401


def test_another_tenants_video_is_403(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video("acme")
    assert get(status_ingest, video_id, "acme").status_code == 200
    r = get(status_ingest, video_id, "globex")
    assert r.status_code == 403
    assert video_id not in r.text and status_ingest.tenants["acme"] not in r.text


def test_unknown_video_is_404(status_ingest: StatusIngest) -> None:
    assert get(status_ingest, "0" * 32).status_code == 404
    assert get(status_ingest, "Not_A-Name").status_code == 404


def browser_token(ingest: StatusIngest, scope: list[str] | None = None, alias: str = "acme") -> str:
    body = {"json": {"scope": scope}} if scope is not None else {}
    r = requests.post(f"{ingest.url}/api/uploads", headers=ingest.headers(alias), timeout=30, **body)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == (scope or ["upload"])
    return str(r.json()["token"])


def test_an_upload_token_does_not_read_status(status_ingest: StatusIngest) -> None:
    """Browser tokens default to the upload scope: they can't be used to read the video API."""
    token = browser_token(status_ingest)
    video_id = status_ingest.create_video()
    r = requests.get(f"{status_ingest.url}/videos/{video_id}",
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 403 and "upload" in r.text


def test_a_read_scoped_token_reads_only_its_tenants_videos(status_ingest: StatusIngest) -> None:
    """What the web app holds: upload + read. It lists and reads its tenant's videos, follows their
    events, and is refused on another tenant's video, on minting tokens and on unknown scopes."""
    token = browser_token(status_ingest, ["upload", "read"])
    bearer = {"Authorization": f"Bearer {token}"}
    mine = status_ingest.create_video(filename="mine.mp4")
    theirs = status_ingest.create_video("globex")
    r = requests.get(f"{status_ingest.url}/videos/{mine}", headers=bearer, timeout=30)
    assert r.status_code == 200 and r.json()["filename"] == "mine.mp4"
    assert requests.get(f"{status_ingest.url}/videos/{theirs}", headers=bearer, timeout=30).status_code == 403
    listed = requests.get(f"{status_ingest.url}/videos?limit=500", headers=bearer, timeout=30).json()["items"]
    assert mine in {d["id"] for d in listed} and theirs not in {d["id"] for d in listed}
    with requests.get(f"{status_ingest.url}/videos/{mine}/events", params={"token": token}, stream=True,
                      timeout=30) as events:
        assert events.status_code == 200
        first = next(events.iter_lines(decode_unicode=True, delimiter="\n\n"))
        assert f'"id": "{mine}"' in first
    assert requests.post(f"{status_ingest.url}/api/uploads", headers=bearer, timeout=30).status_code == 403
    read_only = {"Authorization": f"Bearer {browser_token(status_ingest, ['read'])}"}
    r = requests.post(f"{status_ingest.url}/files/", timeout=30,
                      headers={**read_only, "Tus-Resumable": "1.0.0", "Upload-Length": "1"})
    assert r.status_code == 403
    for bad in ({"scope": ["admin"]}, {"scope": "read"}, {"scope": []}):
        r = requests.post(f"{status_ingest.url}/api/uploads", headers=status_ingest.headers(), json=bad, timeout=30)
        assert r.status_code == 400, (bad, r.text)
    r = requests.post(f"{status_ingest.url}/api/uploads", timeout=30,
                      headers={**status_ingest.headers(), "Content-Type": "application/json"}, data=b"[not json")
    assert r.status_code == 400


# -- listing -----------------------------------------------------------------------------------


def test_list_paginates_over_the_tenants_videos_only(status_ingest: StatusIngest) -> None:
    mine = {status_ingest.create_video("pager") for _ in range(5)}
    status_ingest.create_video("globex")
    seen: list[str] = []
    pages = 0
    next_token: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if next_token:
            params["continue"] = next_token
        r = requests.get(f"{status_ingest.url}/videos", headers=status_ingest.headers("pager"), params=params,
                         timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        assert len(body["items"]) <= 2
        assert all(item["tenant"] == status_ingest.tenants["pager"] for item in body["items"])
        assert all(item["status"] == "PENDING" for item in body["items"])
        seen += [item["id"] for item in body["items"]]
        next_token = body["continue"]
        if next_token is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(mine)


def test_list_default_page_and_bad_limits(status_ingest: StatusIngest) -> None:
    r = requests.get(f"{status_ingest.url}/videos", headers=status_ingest.headers("globex"), timeout=30)
    assert r.status_code == 200
    assert r.json()["continue"] is None
    for limit in ("0", "-1", "abc", "501"):
        bad = requests.get(f"{status_ingest.url}/videos", headers=status_ingest.headers(), params={"limit": limit},
                           timeout=30)
        assert bad.status_code == 400, limit
    forged = requests.get(f"{status_ingest.url}/videos", headers=status_ingest.headers(),
                          params={"continue": "not-a-token"}, timeout=30)
    assert forged.status_code == 400
