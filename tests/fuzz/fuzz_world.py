"""What the fuzz cases aim at, set up over HTTP through the product like a client would: tenants
and their keys, browser tokens, finished videos with HLS outputs (one per tenant), a video still
waiting, and tus uploads in known states (``Targets``) that are recreated whenever an accepted
request legitimately changed one, so every case starts from the same shapes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from fuzz_support import SECRET, Fuzzer, StateProbe, b64
from ingest_support import OCTET, TUS, Ingest
from kubernetes import client

from vidup.resource import GROUP, PLURAL, VERSION
from vidup.storage.layout import output_relpath

#: Files of a finished video's HLS output (what a worker writes), relative to its directory.
HLS_FILES = {
    "master.m3u8": b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2800000,RESOLUTION=1280x720\n720p/index.m3u8\n",
    "720p/index.m3u8": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nseg_000.ts\n#EXT-X-ENDLIST\n",
    "720p/seg_000.ts": bytes(range(256)) * 64,
    "poster.jpg": b"\xff\xd8\xff\xe0fuzz-poster\xff\xd9",
}


@dataclass
class Video:
    id: str
    tenant: str  # alias: acme / globex
    hls_token: str  # the playback token of its master_playlist_url
    events_token: str  # the token of its events_url

    @property
    def hls_base(self) -> str:
        return f"/videos/{self.id}/hls/{self.hls_token}/"


@dataclass(repr=False)
class World:
    ingest: Ingest
    fuzzer: Fuzzer
    namespace: str
    objects: client.CustomObjectsApi
    done: Video  # acme's finished video, with HLS output
    foreign: Video  # globex's finished video, with HLS output holding the secret
    waiting_id: str  # acme's video that has not started (its events stream stays open)
    upload_token: str  # browser token, scope upload
    read_token: str  # browser token, scopes upload + read
    static: dict[str, str] = field(default_factory=dict)  # web app file sha256 -> name

    def key(self, alias: str) -> str:
        return self.ingest.keys[alias]

    def __repr__(self) -> str:
        return f"World({self.ingest.url})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what hypothesis prints
        printer.text(repr(self))


def complete_video(ingest: Ingest, objects: client.CustomObjectsApi, namespace: str, video_id: str,
                   alias: str) -> None:
    """Play the operator's part: mark the video Completed and write its HLS output (another
    tenant's output holds the secret: acme's playback tokens must never reach it)."""
    out = ingest.storage / output_relpath(video_id)
    for name, data in HLS_FILES.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SECRET + data if alias != "acme" else data)
    status = {
        "phase": "Completed", "progress": 100, "jobId": f"vt-{video_id}-g1", "attempts": 1,
        "outputs": {"path": output_relpath(video_id), "masterPlaylist": "master.m3u8", "poster": "poster.jpg",
                    "summary": "720p", "renditions": [
                        {"name": "720p", "width": 1280, "height": 720, "bandwidth": 2800000,
                         "averageBandwidth": 2000000, "codecs": "avc1.64001f,mp4a.40.2",
                         "playlist": "720p/index.m3u8"}]},
    }
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, video_id, {"status": status},
        _content_type="application/merge-patch+json")


def finished_upload(ingest: Ingest, alias: str, data: bytes, filename: str = "clip.mp4") -> str:
    """A whole upload in one creation-with-upload request; returns its id (= the video's)."""
    h = ingest.headers(alias, Upload_Length=str(len(data)), Content_Type=OCTET,
                       Upload_Metadata=f"filename {b64(filename.encode())}")
    r = requests.post(f"{ingest.url}/files/", headers=h, data=data, timeout=30)
    assert r.status_code == 201 and r.headers["Upload-Offset"] == str(len(data)), (r.status_code, r.text)
    return str(r.headers["Location"]).rsplit("/", 1)[-1]


def video_tokens(ingest: Ingest, alias: str, video_id: str) -> tuple[str, str]:
    r = requests.get(f"{ingest.url}/videos/{video_id}", headers=ingest.headers(alias), timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    hls = str(doc["master_playlist_url"]).split("/hls/", 1)[1].split("/", 1)[0] if doc.get("master_playlist_url") \
        else ""
    events = str(doc["events_url"]).split("token=", 1)[1]
    return hls, events


def browser_token(ingest: Ingest, scopes: list[str]) -> str:
    r = requests.post(f"{ingest.url}/api/uploads", headers=ingest.headers("acme"), json={"scope": scopes}, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def build_world(ingest: Ingest, api: client.ApiClient, namespace: str, static_dir: Path) -> World:
    objects = client.CustomObjectsApi(api)
    done = Video(finished_upload(ingest, "acme", SECRET + os.urandom(64)), "acme", "", "")
    foreign = Video(finished_upload(ingest, "globex", SECRET + os.urandom(64)), "globex", "", "")
    waiting_id = finished_upload(ingest, "acme", os.urandom(32))
    for video in (done, foreign):
        complete_video(ingest, objects, namespace, video.id, video.tenant)
        video.hls_token, video.events_token = video_tokens(ingest, video.tenant, video.id)
        assert video.hls_token, "no playback token: the stack has no VIDUP_TOKEN_SECRET"
    # The storage root and the outputs directory hold the secret in names a traversal would reach,
    # and links in a video's output point out of it (a worker never writes those: defence in depth).
    (ingest.storage / "secret.m3u8").write_bytes(SECRET)
    (ingest.storage / "outputs" / "secret.m3u8").write_bytes(SECRET)
    out = ingest.storage / output_relpath(done.id)
    (out / "escape.m3u8").symlink_to(ingest.storage / "secret.m3u8")
    (out / "escape").symlink_to(ingest.storage, target_is_directory=True)
    static = {}
    if static_dir.is_dir():
        static = {hashlib.sha256(p.read_bytes()).hexdigest(): str(p.relative_to(static_dir))
                  for p in static_dir.rglob("*") if p.is_file()}
    fuzzer = Fuzzer(ingest, StateProbe(ingest.storage, api, namespace))
    fuzzer.check_handed_over()
    return World(ingest=ingest, fuzzer=fuzzer, namespace=namespace, objects=objects, done=done, foreign=foreign,
                 waiting_id=waiting_id, upload_token=browser_token(ingest, ["upload"]),
                 read_token=browser_token(ingest, ["upload", "read"]), static=static)


# -- tus targets -------------------------------------------------------------------------------


@dataclass
class Target:
    """One upload the tus fuzz aims at, and how it looked when made (to notice it changed)."""

    kind: str
    id: str
    offset: int
    fingerprint: dict[str, str]


#: kind -> (tenant alias, creation headers, bytes sent at creation)
TARGET_SHAPES: dict[str, tuple[str, dict[str, str], bytes]] = {
    # an unfinished upload, some bytes in
    "open": ("acme", {"Upload-Length": "64", "Upload-Metadata": f"filename {b64(b'a.mp4')},renditions {b64(b'720')}"},
             b"0123456789abcdef"),
    # a deferred length, some bytes in
    "deferred": ("acme", {"Upload-Defer-Length": "1"}, b"deferred"),
    # a finished partial upload, ready for a final concatenation
    "part": ("acme", {"Upload-Length": "8", "Upload-Concat": "partial"}, b"partpart"),
    # an unfinished partial upload
    "openpart": ("acme", {"Upload-Length": "8", "Upload-Concat": "partial"}, b"ope"),
    # another tenant's unfinished upload
    "foreign": ("globex", {"Upload-Length": "64"}, b"foreign"),
    # a finished upload (its VideoTranscode exists)
    "finished": ("acme", {"Upload-Length": "4"}, b"done"),
    # an empty upload
    "empty": ("acme", {"Upload-Length": "32"}, b""),
}


class Targets:
    def __init__(self, world: World) -> None:
        self.world = world
        self.by_kind: dict[str, Target] = {}
        self.recreated = 0

    def _create(self, kind: str) -> Target:
        ingest = self.world.ingest
        alias, extra, data = TARGET_SHAPES[kind]
        h = {**TUS, "Authorization": f"Bearer {ingest.keys[alias]}", **extra}
        if data:
            h["Content-Type"] = OCTET
        r = requests.post(f"{ingest.url}/files/", headers=h, data=data, timeout=30)
        assert r.status_code == 201, (kind, r.status_code, r.text)
        upload_id = str(r.headers["Location"]).rsplit("/", 1)[-1]
        return Target(kind, upload_id, len(data), {})

    def ensure(self) -> None:
        """Recreate every target an accepted request changed or removed since it was made."""
        files = self.world.fuzzer.state.files
        made = False
        for kind in TARGET_SHAPES:
            target = self.by_kind.get(kind)
            if target is not None:
                current = {k: v for k, v in files.items() if k.startswith(f"uploads/{target.id}")}
                if current == target.fingerprint:
                    continue
                self.recreated += 1
            self.by_kind[kind] = self._create(kind)
            made = True
        if made:
            self.world.fuzzer.resync()
            for target in self.by_kind.values():
                target.fingerprint = {k: v for k, v in self.world.fuzzer.state.files.items()
                                      if k.startswith(f"uploads/{target.id}")}

    def __getitem__(self, kind: str) -> Target:
        return self.by_kind[kind]

