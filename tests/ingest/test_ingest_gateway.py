"""Gateway duties over HTTP: API keys, upload tokens, tenant isolation, rate limits, and the
VideoTranscode handover on the real kube-apiserver."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from ingest_support import OCTET, TUS, Ingest
from kubernetes import client

from vidup.localstack.stack import Stack
from vidup.resource import GROUP, PLURAL, VERSION
from vidup_ingest import kube_client
from vidup_ingest.config import IngestConfig
from vidup_ingest.errors import TusError
from vidup_ingest.gateway.auth import parse_scopes, token_allows
from vidup_ingest.tus.handover import Handover
from vidup_ingest.tus.locks import LockManager
from vidup_ingest.tus.protocol import UploadInfo
from vidup_ingest.tus.storage import LocalStorage
from vidup_ingest.tus.uploads import Uploads


@pytest.mark.parametrize(("scopes", "method", "path", "allowed"), [
    (("upload",), "POST", "/files/", True),
    (("upload",), "PATCH", "/files/abc", True),
    (("upload",), "POST", "/files", True),
    (("upload",), "GET", "/videos", False),
    (("upload",), "POST", "/api/uploads", False),
    (("read",), "GET", "/videos", True),
    (("read",), "GET", "/videos/abc/events", True),
    (("read",), "HEAD", "/videos/abc", True),
    (("read",), "DELETE", "/videos/abc", False),
    (("read",), "POST", "/files/", False),
    (("read",), "GET", "/videosx", False),
    (("upload", "read"), "GET", "/videos/abc", True),
    (("upload", "read"), "POST", "/api/uploads", False),
    (("nonsense",), "GET", "/videos", False),
])
def test_token_scopes(scopes: tuple[str, ...], method: str, path: str, allowed: bool) -> None:
    assert token_allows(scopes, method, path) is allowed


def test_parse_scopes() -> None:
    assert parse_scopes(None) == ("upload",)
    assert parse_scopes(["read", "upload", "read"]) == ("upload", "read")
    for bad in ([], "read", ["admin"], [1]):
        with pytest.raises(TusError) as err:
            parse_scopes(bad)
        assert err.value.status == 400


def test_missing_or_bad_credentials_are_401(ingest: Ingest) -> None:
    url = ingest.create(5)
    for auth in (None, "Bearer", "Bearer nope", "Basic Zm9vOmJhcg==", "Bearer vut1.e30.AAAA",
                 "Bearer vut1.garbage", "bearer " + "x" * 500):
        h = dict(TUS)
        if auth:
            h["Authorization"] = auth
        for method, target in (("HEAD", url), ("POST", f"{ingest.url}/files/"), ("DELETE", url)):
            r = requests.request(method, target, headers={**h, "Upload-Length": "1"})
            assert r.status_code == 401, (auth, method)
            assert "Bearer" in r.headers["WWW-Authenticate"]
    r = requests.patch(url, headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET}, data=b"ab")
    assert r.status_code == 401
    assert ingest.head(url).headers["Upload-Offset"] == "0"


def test_only_a_cors_preflight_goes_without_credentials(ingest: Ingest) -> None:
    """A plain OPTIONS is a request like any other (401); a browser's preflight cannot carry
    credentials, so it is answered; probes have /healthz."""
    for target in (f"{ingest.url}/files/", ingest.create(5)):
        r = requests.options(target)
        assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"]
        assert "Tus-Extension" not in r.headers
        r = requests.options(target, headers={"Origin": "https://app.example.com",
                                              "Access-Control-Request-Method": "PATCH"})
        assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"]
    assert requests.get(f"{ingest.url}/healthz").status_code == 200


def test_tenants_cannot_touch_each_other(ingest: Ingest) -> None:
    url = ingest.create(6)
    ingest.patch(url, 0, b"abc")
    assert ingest.head(url, tenant="globex").status_code == 403
    assert ingest.patch(url, 3, b"def", tenant="globex").status_code == 403
    assert requests.delete(url, headers=ingest.headers("globex")).status_code == 403
    h = ingest.headers("globex", Upload_Concat=f"final;{url}")
    assert requests.post(f"{ingest.url}/files/", headers=h).status_code == 403
    assert ingest.head(url).headers["Upload-Offset"] == "3"


def test_upload_token_flow(ingest: Ingest) -> None:
    r = requests.post(f"{ingest.url}/api/uploads", headers={"Authorization": f"Bearer {ingest.keys['acme']}"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["upload_url"] == f"{ingest.url}/files/" and doc["tenant"] == ingest.tenant("acme")
    assert doc["expires_at"] > time.time()
    token = doc["token"]
    bearer = {**TUS, "Authorization": f"Bearer {token}"}
    r = requests.post(doc["upload_url"], headers={**bearer, "Upload-Length": "3"})
    assert r.status_code == 201
    url = r.headers["Location"]
    r = requests.patch(url, headers={**bearer, "Upload-Offset": "0", "Content-Type": OCTET}, data=b"abc")
    assert r.status_code == 204
    # the token's tenant owns the upload: the key of the same tenant sees it, another tenant does not
    assert ingest.head(url).status_code == 200
    assert ingest.head(url, tenant="globex").status_code == 403
    # a token cannot mint tokens (it is bound to the upload endpoint)
    assert requests.post(f"{ingest.url}/api/uploads", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    # tampering with the payload (another tenant) breaks the signature
    prefix, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["t"] = ingest.tenant("globex")
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    r = requests.head(url, headers={**TUS, "Authorization": f"Bearer {prefix}.{forged}.{sig}"})
    assert r.status_code == 401
    assert requests.post(f"{ingest.url}/api/uploads").status_code == 401


def test_expired_token_is_401(start_ingest: Any) -> None:
    ing = start_ingest(VIDUP_TOKEN_TTL_SECONDS="1")
    token = requests.post(f"{ing.url}/api/uploads", headers={"Authorization": f"Bearer {ing.keys['acme']}"}
                          ).json()["token"]
    time.sleep(2.1)
    r = requests.post(f"{ing.url}/files/", headers={**TUS, "Authorization": f"Bearer {token}", "Upload-Length": "1"})
    assert r.status_code == 401


def test_rate_limits(start_ingest: Any) -> None:
    ing = start_ingest(VIDUP_RATE_LIMIT_REQUESTS="8/minute", VIDUP_RATE_LIMIT_CREATIONS="2/minute")
    assert requests.post(f"{ing.url}/files/", headers=ing.headers(Upload_Length="1")).status_code == 201
    url = requests.post(f"{ing.url}/files/", headers=ing.headers(Upload_Length="1")).headers["Location"]
    r = requests.post(f"{ing.url}/files/", headers=ing.headers(Upload_Length="1"))
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    statuses = [ing.head(url).status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and statuses[-1] == 429
    # limits are per tenant
    assert ing.head(url, tenant="globex").status_code == 403


def _transcodes(kube: Stack) -> dict[str, dict[str, Any]]:
    with kube.api_client() as api:
        items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    return {item["metadata"]["name"]: item for item in items["items"]}


def _id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def test_every_completion_path_creates_exactly_one_videotranscode(ingest: Ingest, kube: Stack) -> None:
    meta = f"filename {base64.b64encode(b'holiday.mov').decode()},renditions {base64.b64encode(b'720,480').decode()}"
    # 1. last PATCH
    last_patch = ingest.create(4, Upload_Metadata=meta)
    ingest.patch(last_patch, 0, b"ab")
    assert _id(last_patch) not in _transcodes(kube)
    ingest.patch(last_patch, 2, b"cd")
    # 2. creation-with-upload
    r = requests.post(f"{ingest.url}/files/", headers=ingest.headers(Upload_Length="3", Content_Type=OCTET),
                      data=b"xyz")
    with_upload = r.headers["Location"]
    # 3. zero length
    zero = ingest.create(0)
    # 4. final concatenation (partials themselves are not videos), retried
    parts = []
    for chunk in (b"12", b"34"):
        u = ingest.create(2, Upload_Concat="partial")
        ingest.patch(u, 0, chunk)
        parts.append(u)
    h = ingest.headers(Upload_Concat="final;" + " ".join(parts))
    final = requests.post(f"{ingest.url}/files/", headers=h).headers["Location"]
    assert requests.post(f"{ingest.url}/files/", headers=h).headers["Location"] == final
    # a HEAD after completion does not create another one either
    ingest.head(last_patch)

    found = _transcodes(kube)
    for url in (last_patch, with_upload, zero, final):
        assert _id(url) in found, url
    for url in parts:
        assert _id(url) not in found
    vt = found[_id(last_patch)]
    assert vt["spec"]["tenant"] == ingest.tenant("acme")
    assert vt["spec"]["source"] == {"path": f"uploads/{_id(last_patch)}", "size": 4, "filename": "holiday.mov"}
    assert vt["spec"]["renditions"] == [720, 480]
    assert found[_id(final)]["spec"]["source"]["size"] == 4
    assert found[_id(zero)]["spec"]["source"]["size"] == 0
    names = [n for n in found if n in {_id(u) for u in (last_patch, with_upload, zero, final)}]
    assert len(names) == len(set(names)) == 4


class _SaveLog(LocalStorage):
    """The real file store, keeping a copy of every info it saves."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.saved: list[UploadInfo] = []

    def save(self, info: UploadInfo) -> None:
        self.saved.append(info)
        super().save(info)


def test_a_failed_handover_saves_the_finished_info_once_and_the_retry_hands_it_over(
        kube: Stack, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the Kubernetes API unreachable, completion records the upload as finished and not
    handed over, in one save (a second, identical save was a wasted write: on S3, a PUT per
    upload); the retry (the sweep's) once the API answers hands it over and records that."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{dead}"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "x"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(kube_client, "_api", None)
    storage = _SaveLog(tmp_path / "store")
    uploads = Uploads(storage, LockManager(redis.Redis.from_url(redis_url), prefix=f"test:{tmp_path.name}"),
                      Handover("default"), IngestConfig.from_env(), max_size=1 << 20, expiry_seconds=3600)
    info, _, _ = uploads.create("acme", length=0, defer=False, metadata_raw=None, concat=None, body=None,
                                upload_url=lambda upload_id: upload_id)
    finished = [i for i in storage.saved if i.completed_at is not None]
    assert len(finished) == 1 and not finished[0].handed_over
    assert storage.load(info.id) == finished[0]
    storage.saved.clear()
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))  # the API answers now
    monkeypatch.setattr(kube_client, "_api", None)
    retried = uploads.retry_handover(finished[0])
    assert retried.handed_over and storage.load(info.id) == retried
    assert [i.handed_over for i in storage.saved] == [False, True]
    assert info.id in _transcodes(kube)


def test_terminating_a_finished_upload_deletes_its_bytes_and_its_video(
        ingest: Ingest, start_ingest: Any, kube: Stack) -> None:
    """tus termination covers finished uploads: 204, the bytes go and so does the VideoTranscode
    (the operator's finalizer then cancels the work and removes the outputs). Operators who want
    finished uploads immutable set VIDUP_INGEST_TERMINATE_FINISHED=0: 403, and nothing changes."""
    url = ingest.create(3)
    assert ingest.patch(url, 0, b"abc").status_code == 204
    assert _id(url) in _transcodes(kube)
    assert requests.delete(url, headers=ingest.headers("globex")).status_code == 403
    assert _id(url) in _transcodes(kube)
    r = requests.delete(url, headers=ingest.headers())
    assert r.status_code == 204, r.text
    assert ingest.head(url).status_code == 404 and not ingest.keys_of(url)
    assert _id(url) not in _transcodes(kube)
    assert requests.delete(url, headers=ingest.headers()).status_code == 404

    immutable = start_ingest(VIDUP_INGEST_TERMINATE_FINISHED="0")
    kept = immutable.create(3)
    assert immutable.patch(kept, 0, b"abc").status_code == 204
    r = requests.delete(kept, headers=immutable.headers())
    assert r.status_code == 403 and "immutable" in r.text
    assert immutable.head(kept).status_code == 200 and immutable.stored_bytes(kept) == b"abc"
    assert _id(kept) in _transcodes(kube)
    unfinished = immutable.create(3)
    assert requests.delete(unfinished, headers=immutable.headers()).status_code == 204


@pytest.mark.parametrize("value", ["1080,360", "720,720", "", "abc"])
def test_bad_renditions_are_400(ingest: Ingest, value: str) -> None:
    meta = f"renditions {base64.b64encode(value.encode()).decode()}" if value else "renditions"
    r = requests.post(f"{ingest.url}/files/", headers=ingest.headers(Upload_Length="1", Upload_Metadata=meta))
    assert r.status_code == 400
