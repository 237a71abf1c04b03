"""HLS files served by the ingest under ``/videos/<id>/hls/<playback token>/``: content types,
range requests, CORS, path traversal, and the playback token's checks."""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import requests
from status_support import StatusIngest, completed_status

from vidup_ingest.videos import playback_tokens

MASTER = (
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=2800000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"\n'
    "720p/index.m3u8\n"
)
MEDIA = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nseg_00000.ts\n#EXT-X-ENDLIST\n"


@dataclass
class Served:
    video_id: str
    base: str
    segment: bytes
    poster: bytes


@pytest.fixture(scope="module")
def served(status_ingest: StatusIngest) -> Iterator[Served]:
    """A completed video whose output directory holds a master, a media playlist, a segment and
    a poster, plus a secret file beside the outputs that must never be reachable."""
    video_id = status_ingest.create_video()
    out = status_ingest.output_dir(video_id)
    (out / "720p").mkdir()
    (out / "master.m3u8").write_text(MASTER)
    (out / "720p" / "index.m3u8").write_text(MEDIA)
    segment = os.urandom(188 * 1000)
    (out / "720p" / "seg_00000.ts").write_bytes(segment)
    poster = b"\xff\xd8\xff\xe0" + os.urandom(500)
    (out / "poster.jpg").write_bytes(poster)
    (out / "notes.txt").write_text("not an HLS file")
    (status_ingest.storage / "uploads").mkdir(exist_ok=True)
    (status_ingest.storage / "uploads" / video_id).write_text("the private source")
    (out / "leak.m3u8").symlink_to(status_ingest.storage / "uploads" / video_id)
    status_ingest.set_status(video_id, completed_status(video_id))
    d = requests.get(f"{status_ingest.url}/videos/{video_id}", headers=status_ingest.headers(), timeout=30).json()
    base = d["master_playlist_url"].rsplit("/", 1)[0] + "/"
    yield Served(video_id, base, segment, poster)


def test_content_types(served: Served) -> None:
    master = requests.get(served.base + "master.m3u8", timeout=30)
    assert master.status_code == 200
    assert master.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert master.text == MASTER
    media = requests.get(served.base + "720p/index.m3u8", timeout=30)
    assert media.headers["Content-Type"] == "application/vnd.apple.mpegurl" and media.text == MEDIA
    seg = requests.get(served.base + "720p/seg_00000.ts", timeout=30)
    assert seg.status_code == 200
    assert seg.headers["Content-Type"] == "video/mp2t"
    assert seg.content == served.segment
    assert seg.headers["Accept-Ranges"] == "bytes"
    poster = requests.get(served.base + "poster.jpg", timeout=30)
    assert poster.headers["Content-Type"] == "image/jpeg" and poster.content == served.poster


def test_relative_uris_keep_the_token(served: Served) -> None:
    """A player resolves playlist URIs against the playlist's URL: the token rides along."""
    media_url = requests.compat.urljoin(served.base + "master.m3u8", MASTER.strip().splitlines()[-1])
    seg_url = requests.compat.urljoin(media_url, "seg_00000.ts")
    assert requests.get(seg_url, timeout=30).content == served.segment


def test_range_requests(served: Served) -> None:
    url = served.base + "720p/seg_00000.ts"
    size = len(served.segment)
    r = requests.get(url, headers={"Range": "bytes=100-1123"}, timeout=30)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 100-1123/{size}"
    assert r.headers["Content-Length"] == "1024"
    assert r.content == served.segment[100:1124]
    tail = requests.get(url, headers={"Range": "bytes=-188"}, timeout=30)
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes {size - 188}-{size - 1}/{size}"
    assert tail.content == served.segment[-188:]
    open_end = requests.get(url, headers={"Range": f"bytes={size - 10}-"}, timeout=30)
    assert open_end.content == served.segment[-10:]
    beyond = requests.get(url, headers={"Range": f"bytes={size + 10}-"}, timeout=30)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{size}"


def test_head_and_conditional_get(served: Served) -> None:
    url = served.base + "720p/seg_00000.ts"
    head = requests.head(url, timeout=30)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(served.segment))
    again = requests.get(url, headers={"If-None-Match": head.headers["ETag"]}, timeout=30)
    assert again.status_code == 304


def test_cors(served: Served) -> None:
    origin = "https://player.example.com"
    r = requests.get(served.base + "720p/seg_00000.ts", headers={"Origin": origin, "Range": "bytes=0-9"},
                     timeout=30)
    assert r.status_code == 206
    assert r.headers["Access-Control-Allow-Origin"] == origin
    exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"content-range", "content-length", "accept-ranges"} <= exposed
    preflight = requests.options(served.base + "720p/seg_00000.ts", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range",
    }, timeout=30)
    assert preflight.status_code == 204
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert "range" in allowed
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]


def _raw_get(url: str) -> tuple[int, bytes, str]:
    """A GET that sends the path byte for byte (requests/urllib3 would remove dot segments)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Location") or ""
    finally:
        conn.close()


@pytest.mark.parametrize("tail", [
    "../../../uploads/{id}.ts",
    "..%2F..%2F..%2Fuploads%2F{id}",
    "720p/../../{id}/master.m3u8/../../../../uploads/{id}",
    "%2e%2e/%2e%2e/%2e%2e/uploads/{id}",
    "/etc/passwd",
    "720p/%00seg.ts",
])
def test_traversal_is_refused(served: Served, tail: str) -> None:
    status, body, location = _raw_get(served.base + tail.format(id=served.video_id))
    if status == 308:  # werkzeug merges "//": the target must stay under the video's HLS base
        assert requests.compat.urljoin(served.base, location).startswith(served.base), location
        status, body, _ = _raw_get(requests.compat.urljoin(served.base, location))
    assert status in (400, 404), (status, body)
    assert b"the private source" not in body and b"root:" not in body


def test_only_hls_files_are_served(served: Served) -> None:
    r = requests.get(served.base + "notes.txt", timeout=30)
    assert r.status_code == 404
    assert requests.get(served.base + "720p/seg_99999.ts", timeout=30).status_code == 404
    # a symlink out of the output directory is not followed
    leak = requests.get(served.base + "leak.m3u8", timeout=30)
    assert leak.status_code == 404 and "private" not in leak.text


def test_tokens_are_checked(status_ingest: StatusIngest, served: Served) -> None:
    prefix = f"{status_ingest.url}/videos/{served.video_id}/hls/"
    # forged: a valid shape with a wrong signature, or signed with another secret
    token = served.base[len(prefix):].strip("/")
    expires, sig = token.split(".")
    forged = f"{expires}.{'A' * len(sig)}"
    other_secret = playback_tokens.issue("another secret", served.video_id)
    # expired: signed with the right secret, expiry in the past
    expired = playback_tokens.issue(status_ingest.secret, served.video_id, ttl_seconds=60, now=time.time() - 7200)
    # moved to another video: the signature covers the id
    other_video = status_ingest.create_video()
    for bad, word in ((forged, "invalid"), (other_secret, "invalid"), (expired, "expired"),
                      (f"{int(expires) + 900}.{sig}", "invalid"), ("nonsense", "malformed")):
        r = requests.get(f"{prefix}{bad}/master.m3u8", timeout=30)
        assert r.status_code == 403, (bad, r.status_code)
        assert word in r.text
    moved = requests.get(f"{status_ingest.url}/videos/{other_video}/hls/{token}/master.m3u8", timeout=30)
    assert moved.status_code == 403
    # and the genuine one works, without any Authorization header
    assert requests.get(f"{prefix}{token}/master.m3u8", timeout=30).status_code == 200
