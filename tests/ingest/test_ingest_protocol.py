"""Black-box tests of every tus 1.0.0 rule, over HTTP against a running ingest."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from ingest_support import OCTET, TUS, Ingest

MiB = 1024 * 1024
EXT = {"creation", "creation-with-upload", "creation-defer-length", "termination", "concatenation",
       "checksum", "expiration"}


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def test_options_advertises_capabilities(ingest: Ingest) -> None:
    r = requests.options(f"{ingest.url}/files/", headers={"Authorization": ingest.headers()["Authorization"]})
    assert r.status_code == 204
    assert r.headers["Tus-Version"] == "1.0.0" and r.headers["Tus-Resumable"] == "1.0.0"
    assert set(r.headers["Tus-Extension"].split(",")) == EXT
    assert r.headers["Tus-Max-Size"] == str(1 << 30)
    assert set(r.headers["Tus-Checksum-Algorithm"].split(",")) >= {"sha1", "md5", "sha256"}


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0", ""])
def test_wrong_tus_resumable_is_412_and_changes_nothing(ingest: Ingest, version: str | None) -> None:
    url = ingest.create(10)
    for method, extra in (("POST", {"Upload-Length": "5"}), ("HEAD", {}), ("DELETE", {}),
                          ("PATCH", {"Upload-Offset": "0", "Content-Type": OCTET})):
        h = {**ingest.headers(), **extra}
        if version is None:
            del h["Tus-Resumable"]
        else:
            h["Tus-Resumable"] = version
        target = f"{ingest.url}/files/" if method == "POST" else url
        r = requests.request(method, target, headers=h, data=b"abc" if method == "PATCH" else None)
        assert r.status_code == 412, method
        assert r.headers["Tus-Version"] == "1.0.0"
    r = ingest.head(url)
    assert r.status_code == 200 and r.headers["Upload-Offset"] == "0"


def test_core_flow_and_head(ingest: Ingest) -> None:
    meta = f"filename {b64(b'clip.mp4')},flag"
    r = requests.post(f"{ingest.url}/files/", headers=ingest.headers(Upload_Length="10", Upload_Metadata=meta))
    assert r.status_code == 201
    url = r.headers["Location"]
    assert url.startswith(f"{ingest.url}/files/")
    expires = parsedate_to_datetime(r.headers["Upload-Expires"]).timestamp()
    assert expires > time.time() + 3600
    r = ingest.head(url)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert r.headers["Upload-Offset"] == "0" and r.headers["Upload-Length"] == "10"
    assert r.headers["Upload-Metadata"] == meta
    assert ingest.patch(url, 0, b"01234").headers["Upload-Offset"] == "5"
    r = ingest.patch(url, 5, b"56789")
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "10"
    assert r.headers["Video-Location"].endswith("/videos/" + url.rsplit("/", 1)[1])
    assert "Upload-Expires" not in r.headers
    assert ingest.stored_bytes(url) == b"0123456789"


def test_patch_offset_mismatch_is_409(ingest: Ingest) -> None:
    url = ingest.create(10)
    ingest.patch(url, 0, b"abc")
    for wrong in (0, 2, 4, 10):
        r = ingest.patch(url, wrong, b"x")
        assert r.status_code == 409 and r.headers["Upload-Offset"] == "3"
    assert ingest.head(url).headers["Upload-Offset"] == "3"


@pytest.mark.parametrize("ctype", [None, "application/octet-stream", "text/plain"])
def test_patch_content_type_is_415(ingest: Ingest, ctype: str | None) -> None:
    url = ingest.create(10)
    h = {**ingest.headers(), "Upload-Offset": "0"}
    if ctype:
        h["Content-Type"] = ctype
    r = requests.patch(url, headers=h, data=b"abc")
    assert r.status_code == 415
    assert ingest.head(url).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("headers,status", [
    ({"Upload-Offset": "-1"}, 400), ({"Upload-Offset": "abc"}, 400), ({}, 400),
    ({"Upload-Offset": "0", "Upload-Checksum": "crc32 AAAA"}, 400),
    ({"Upload-Offset": "0", "Upload-Checksum": "sha1 !!!!"}, 400),
    ({"Upload-Offset": "0", "Upload-Length": "x"}, 400),
    ({"Upload-Offset": "0", "Upload-Length": "11"}, 400),
])
def test_malformed_patch_headers(ingest: Ingest, headers: dict[str, str], status: int) -> None:
    url = ingest.create(10)
    h = {**ingest.headers(), "Content-Type": OCTET, **headers}
    r = requests.patch(url, headers=h, data=b"abc")
    assert r.status_code == status, r.text
    assert ingest.head(url).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("headers,status", [
    ({}, 400), ({"Upload-Length": "-5"}, 400), ({"Upload-Length": "1.5"}, 400),
    ({"Upload-Length": "5", "Upload-Defer-Length": "1"}, 400), ({"Upload-Defer-Length": "0"}, 400),
    ({"Upload-Length": str((1 << 30) + 1)}, 413), ({"Upload-Length": "5", "Upload-Metadata": "a !!"}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": "a YQ==,a YQ=="}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": f"renditions {b64(b'1080,360')}"}, 400),
    ({"Upload-Length": "5", "Upload-Concat": "bogus"}, 400),
    ({"Upload-Length": "5", "Upload-Concat": "final;/files/abc"}, 400),
])
def test_malformed_creation(ingest: Ingest, headers: dict[str, str], status: int) -> None:
    before = ingest.upload_keys()
    r = requests.post(f"{ingest.url}/files/", headers={**ingest.headers(), **headers})
    assert r.status_code == status, r.text
    assert ingest.upload_keys() == before


def test_patch_past_length_is_413_and_keeps_nothing(ingest: Ingest) -> None:
    url = ingest.create(4)
    assert ingest.patch(url, 0, b"abcdef").status_code == 413
    # chunked: the length is only known once the body has gone past the end
    r = ingest.patch(url, 0, iter([b"ab", b"cdef"]))
    assert r.status_code == 413
    assert ingest.head(url).headers["Upload-Offset"] == "0"
    # nothing of the refused bodies was kept: the upload finishes with exactly its own bytes
    assert ingest.patch(url, 0, b"wxyz").status_code == 204
    assert ingest.stored_bytes(url) == b"wxyz"


def test_chunked_transfer_encoding(ingest: Ingest) -> None:
    url = ingest.create(None, Upload_Defer_Length="1")
    parts = [b"x" * 70_000, b"y" * 3, b"z" * 1_000_000]

    def gen() -> Iterator[bytes]:
        yield from parts

    total = sum(map(len, parts))
    r = ingest.patch(url, 0, gen())
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(total)
    # the length, declared by an empty PATCH, finishes it
    assert ingest.patch(url, total, b"", Upload_Length=str(total)).status_code == 204
    assert ingest.stored_bytes(url) == b"".join(parts)


def test_defer_length(ingest: Ingest) -> None:
    url = ingest.create(None, Upload_Defer_Length="1")
    r = ingest.head(url)
    assert r.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in r.headers
    assert ingest.patch(url, 0, b"abc").headers["Upload-Offset"] == "3"
    r = ingest.patch(url, 3, b"def", Upload_Length="6")
    assert r.status_code == 204 and "Video-Location" in r.headers
    r = ingest.head(url)
    assert r.headers["Upload-Length"] == "6" and "Upload-Defer-Length" not in r.headers
    assert ingest.patch(url, 6, b"", Upload_Length="7").status_code == 400


def test_creation_with_upload(ingest: Ingest) -> None:
    h = ingest.headers(Upload_Length="8", Content_Type=OCTET)
    r = requests.post(f"{ingest.url}/files/", headers=h, data=b"hello")
    assert r.status_code == 201 and r.headers["Upload-Offset"] == "5"
    url = r.headers["Location"]
    assert ingest.patch(url, 5, b"!!!").status_code == 204
    assert ingest.stored_bytes(url) == b"hello!!!"
    # a body without the offset content type is refused
    r = requests.post(f"{ingest.url}/files/", headers=ingest.headers(Upload_Length="8"), data=b"hello")
    assert r.status_code == 415


def test_creation_with_upload_complete_and_checksum(ingest: Ingest) -> None:
    data = b"complete"
    ok = f"md5 {b64(hashlib.md5(data).digest())}"
    h = ingest.headers(Upload_Length="8", Content_Type=OCTET, Upload_Checksum=ok)
    r = requests.post(f"{ingest.url}/files/", headers=h, data=data)
    assert r.status_code == 201 and r.headers["Upload-Offset"] == "8" and "Video-Location" in r.headers
    bad = f"md5 {b64(hashlib.md5(b'other').digest())}"
    r = requests.post(f"{ingest.url}/files/", headers={**h, "Upload-Checksum": bad}, data=data)
    assert r.status_code == 460
    assert ingest.head(r.headers["Location"]).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
def test_checksum(ingest: Ingest, algorithm: str) -> None:
    url = ingest.create(6)
    good = f"{algorithm} {b64(hashlib.new(algorithm, b'abc').digest())}"
    bad = f"{algorithm} {b64(hashlib.new(algorithm, b'abd').digest())}"
    r = ingest.patch(url, 0, b"abc", Upload_Checksum=bad)
    assert r.status_code == 460
    assert ingest.head(url).headers["Upload-Offset"] == "0"
    assert ingest.patch(url, 0, b"abc", Upload_Checksum=good).headers["Upload-Offset"] == "3"
    more = f"{algorithm} {b64(hashlib.new(algorithm, b'def').digest())}"
    assert ingest.patch(url, 3, b"def", Upload_Checksum=more).status_code == 204
    assert ingest.stored_bytes(url) == b"abcdef"  # the refused chunk left nothing behind


def test_zero_length_upload_completes_at_creation(ingest: Ingest) -> None:
    r = requests.post(f"{ingest.url}/files/", headers=ingest.headers(Upload_Length="0"))
    assert r.status_code == 201 and "Video-Location" in r.headers
    assert ingest.head(r.headers["Location"]).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("sent", [3, 6 * MiB], ids=["small", "past-a-part"])
def test_termination(ingest: Ingest, sent: int) -> None:
    """Everything goes: data, info and records (on s3 the multipart upload a part opened too)."""
    url = ingest.create(8 * MiB)
    assert ingest.patch(url, 0, b"a" * sent).status_code == 204
    r = requests.delete(url, headers=ingest.headers())
    assert r.status_code == 204
    assert ingest.head(url).status_code == 404
    assert ingest.patch(url, sent, b"x").status_code == 404
    assert ingest.keys_of(url) == [] and ingest.multipart_uploads(url) == []
    assert requests.delete(url, headers=ingest.headers()).status_code == 404


def test_unknown_and_malformed_ids(ingest: Ingest) -> None:
    for path in ("/files/" + "0" * 32, "/files/nope", "/files/../../etc/passwd", "/files/%00"):
        r = requests.head(ingest.url + path, headers=ingest.headers())
        assert r.status_code == 404, path


def test_method_override(ingest: Ingest) -> None:
    url = ingest.create(3)
    h = ingest.headers(X_HTTP_Method_Override="PATCH", Upload_Offset="0", Content_Type=OCTET)
    r = requests.post(url, headers=h, data=b"abc")
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "3"
    r = requests.get(url, headers=ingest.headers(X_HTTP_Method_Override="HEAD"))
    assert r.status_code == 200 and r.headers["Upload-Offset"] == "3"
    url2 = ingest.create(3)
    r = requests.post(url2, headers=ingest.headers(X_HTTP_Method_Override="DELETE"))
    assert r.status_code == 204 and ingest.head(url2).status_code == 404


def test_concatenation(ingest: Ingest) -> None:
    parts = [b"first-", b"second-", b"third"]
    urls = []
    for p in parts:
        u = ingest.create(len(p), Upload_Concat="partial")
        assert ingest.head(u).headers["Upload-Concat"] == "partial"
        assert ingest.patch(u, 0, p).status_code == 204
        urls.append(u)
    # relative and absolute URLs are both accepted
    concat = "final;" + " ".join([urls[0], "/files/" + urls[1].rsplit("/", 1)[1], urls[2]])
    h = ingest.headers(Upload_Concat=concat, Upload_Metadata=f"filename {b64(b'all.mp4')}")
    r = requests.post(f"{ingest.url}/files/", headers=h)
    assert r.status_code == 201 and "Video-Location" in r.headers
    final = r.headers["Location"]
    r2 = ingest.head(final)
    assert r2.headers["Upload-Offset"] == r2.headers["Upload-Length"] == str(sum(map(len, parts)))
    assert r2.headers["Upload-Concat"].startswith("final;")
    assert ingest.stored_bytes(final) == b"".join(parts)
    # a retried final creation answers with the same upload, never a second one
    r3 = requests.post(f"{ingest.url}/files/", headers=h)
    assert r3.status_code == 201 and r3.headers["Location"] == final
    # a final upload cannot be patched
    assert ingest.patch(final, r2.headers["Upload-Offset"], b"x").status_code == 403


def test_concatenation_errors(ingest: Ingest) -> None:
    unfinished = ingest.create(10, Upload_Concat="partial")
    normal = ingest.create(1)
    ingest.patch(normal, 0, b"x")
    other = ingest.create(1, tenant="globex", Upload_Concat="partial")
    ingest.patch(other, 0, b"x", tenant="globex")
    for urls, status in (([unfinished], 400), ([normal], 400), ([other], 403),
                         (["/files/" + "f" * 32], 404), ([normal, normal], 400)):
        h = ingest.headers(Upload_Concat="final;" + " ".join(urls))
        assert requests.post(f"{ingest.url}/files/", headers=h).status_code == status, urls
    h = ingest.headers(Upload_Concat=f"final;{unfinished}", Upload_Length="10")
    assert requests.post(f"{ingest.url}/files/", headers=h).status_code == 400


def test_expiration_and_sweep(start_ingest) -> None:  # type: ignore[no-untyped-def]
    ing = start_ingest(VIDUP_UPLOAD_EXPIRY_SECONDS="2", VIDUP_INGEST_CLEANUP_INTERVAL="0.5")
    finished = ing.create(3)
    assert ing.patch(finished, 0, b"abc").status_code == 204  # first: the 2 s below start after it
    lazy = ing.create(10)
    swept = ing.create(10)
    begun = ing.create(8 * MiB)  # past a part: on s3 its bytes are in a multipart upload
    ing.patch(lazy, 0, b"ab")
    assert ing.patch(begun, 0, b"b" * 6 * MiB).status_code == 204
    time.sleep(2.5)
    assert ing.patch(lazy, 2, b"cd").status_code == 410
    # the sweep drops the bytes of expired uploads (an unfinished one's multipart upload too)
    deadline = time.monotonic() + 10
    while any(ing.holds_data(u) for u in (swept, lazy, begun)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(ing.holds_data(u) for u in (swept, lazy, begun))
    assert ing.head(swept).status_code == 410 and ing.head(begun).status_code == 410
    assert ing.head(finished).status_code == 200 and ing.stored_bytes(finished) == b"abc"


@pytest.mark.file_only("an info temp file can be made a day old; an S3 multipart upload's start cannot (the "
                       "store-level test moves the clock instead)")
def test_the_sweep_collects_orphans_at_most_hourly(start_ingest, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The running ingest's sweeper collects what a crash left (an info temp file a day old) on its
    first pass, and lists the store for orphans no more than once an hour per process: one left
    after that first pass outlives many more sweeps."""
    uploads = tmp_path / "storage" / "uploads"
    uploads.mkdir(parents=True)

    def orphan() -> Path:
        path = uploads / f"{uuid.uuid4().hex}.info.1.2.tmp"
        path.write_text("{}")
        day_old = time.time() - 25 * 3600
        os.utime(path, (day_old, day_old))
        return path

    first = orphan()
    start_ingest(storage=tmp_path / "storage", VIDUP_INGEST_WORKERS="1", VIDUP_INGEST_CLEANUP_INTERVAL="0.3")
    deadline = time.monotonic() + 20
    while first.exists():
        assert time.monotonic() < deadline, "the sweep never collected the orphan"
        time.sleep(0.1)
    second = orphan()
    time.sleep(3)  # ten sweeps
    assert second.exists()


def test_max_size_deferred(start_ingest) -> None:  # type: ignore[no-untyped-def]
    ing = start_ingest(VIDUP_MAX_UPLOAD_SIZE="100")
    assert requests.options(f"{ing.url}/files/", headers=ing.headers()).headers["Tus-Max-Size"] == "100"
    url = ing.create(None, Upload_Defer_Length="1")
    assert ing.patch(url, 0, b"x" * 101).status_code == 413
    assert ing.patch(url, 0, iter([b"x" * 60, b"x" * 60])).status_code == 413
    assert ing.head(url).headers["Upload-Offset"] == "0"
    assert ing.patch(url, 0, b"x" * 100, Upload_Length="100").status_code == 204


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line = data.split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1]), data.decode("latin-1")


def test_garbage_never_gives_500(ingest: Ingest) -> None:
    auth = f"Authorization: Bearer {ingest.keys['acme']}"
    url = ingest.create(100)
    path = url.split(str(ingest.port), 1)[1]
    cases = [
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n{auth}\r\nUpload-Offset: 0\r\n"
        f"Content-Type: {OCTET}\r\nContent-Length: 5",
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n{auth}\r\nUpload-Offset: 0\r\n"
        f"Content-Type: {OCTET}\r\nTransfer-Encoding: chunked",
        f"POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n{auth}\r\nUpload-Length: 1\r\n"
        "Upload-Metadata: \xff\xfe YQ==",
        f"HEAD {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer \xff",
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n{auth}\r\nUpload-Offset: 0\r\n"
        f"Content-Type: {OCTET}\r\nContent-Length: 10\r\nUpload-Checksum: sha1 {b64(bytes(20))}",
        f"BREW {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n{auth}",
        f"POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n{auth}\r\nUpload-Length: 1\r\n"
        f"X-HTTP-Method-Override: FROB",
    ]
    bodies = [b"ab", b"zz\r\nxx", b"", b"", b"0123", b"", b""]
    for head, body in zip(cases, bodies, strict=True):
        status, text = raw_request(ingest.port, head, body)
        assert 400 <= status < 500 or status in (200, 204), (status, text[:300])
    # the server survived all of it and kept the upload intact
    r = ingest.head(url)
    assert r.status_code == 200 and int(r.headers["Upload-Offset"]) <= 5
    ingest.process.check_running()


def test_x_forwarded_headers_shape_location(ingest: Ingest) -> None:
    h = ingest.headers(Upload_Length="1", X_Forwarded_Proto="https", X_Forwarded_Host="videos.example.com",
                       X_Forwarded_Prefix="/ingest")
    r = requests.post(f"{ingest.url}/files/", headers=h)
    assert r.status_code == 201
    assert r.headers["Location"].startswith("https://videos.example.com/ingest/files/")
    upload_id = r.headers["Location"].rsplit("/", 1)[1]
    assert ingest.head(f"{ingest.url}/files/{upload_id}").status_code == 200


def test_cors(ingest: Ingest) -> None:
    origin = {"Origin": "https://app.example.com"}
    r = requests.options(f"{ingest.url}/files/", headers={
        **origin, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,tus-resumable,upload-offset,content-type"})
    assert r.status_code == 204
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed >= {"authorization", "content-type", "tus-resumable", "upload-offset", "upload-length",
                       "upload-defer-length", "upload-metadata", "upload-concat", "upload-checksum",
                       "x-request-id", "x-http-method-override"}
    assert "PATCH" in r.headers["Access-Control-Allow-Methods"]
    r = requests.post(f"{ingest.url}/files/", headers={**ingest.headers(Upload_Length="5"), **origin})
    assert r.headers["Access-Control-Allow-Origin"] == origin["Origin"]
    exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed >= {"location", "upload-offset", "upload-length", "upload-metadata", "upload-expires",
                       "tus-resumable", "tus-version", "tus-extension", "tus-max-size", "upload-concat",
                       "upload-defer-length", "tus-checksum-algorithm", "video-location"}
    # errors carry CORS too, so a browser can read them
    r = requests.head(f"{ingest.url}/files/" + "0" * 32, headers={**TUS, **origin})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == origin["Origin"]
