"""Unit and property tests of the pure protocol code: header, metadata and PATCH rules."""

from __future__ import annotations

import base64
import hashlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidup_ingest.errors import TusError
from vidup_ingest.tus.headers import (
    MAX_INT,
    Concat,
    is_offset_stream,
    parse_checksum,
    parse_concat,
    parse_defer_length,
    parse_int_header,
    parse_upload_offset,
    strict_b64decode,
    tus_resumable_ok,
    upload_id_from_url,
)
from vidup_ingest.tus.metadata import encode_metadata, parse_metadata, parse_renditions, video_options
from vidup_ingest.tus.protocol import UploadInfo, check_creation_length, concat_final_id, plan_patch

ID = "0123456789abcdef0123456789abcdef"

# -- integers -------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=MAX_INT))
def test_int_header_roundtrip(n: int) -> None:
    assert parse_int_header("Upload-Length", str(n)) == n


@given(st.text(max_size=25))
def test_int_header_accepts_only_plain_digits(raw: str) -> None:
    stripped = raw.strip(" \t")
    ok = stripped.isascii() and stripped.isdigit() and 0 < len(stripped) <= 19 and int(stripped) <= MAX_INT
    try:
        value = parse_int_header("X", raw)
    except TusError as exc:
        assert exc.status == 400
        assert not ok
    else:
        assert ok and value == int(stripped)


@pytest.mark.parametrize("raw", ["-1", "+1", "1.0", "0x10", "1e3", "", " ", "١٢", "99999999999999999999",
                                 str(MAX_INT + 1)])
def test_int_header_rejects(raw: str) -> None:
    with pytest.raises(TusError) as exc:
        parse_upload_offset(raw)
    assert exc.value.status == 400


def test_missing_offset_is_400() -> None:
    with pytest.raises(TusError) as exc:
        parse_upload_offset(None)
    assert exc.value.status == 400


def test_defer_length_only_one() -> None:
    assert parse_defer_length("1") is True
    assert parse_defer_length(None) is False
    for bad in ("0", "true", "2", ""):
        with pytest.raises(TusError):
            parse_defer_length(bad)


def test_tus_resumable_and_content_type() -> None:
    assert tus_resumable_ok("1.0.0")
    assert not tus_resumable_ok(None) and not tus_resumable_ok("0.2.2") and not tus_resumable_ok("1.0")
    assert is_offset_stream("application/offset+octet-stream")
    assert is_offset_stream("Application/Offset+Octet-Stream; charset=binary")
    assert not is_offset_stream("application/octet-stream") and not is_offset_stream(None)


# -- checksum -------------------------------------------------------------------------------------


@given(st.binary(max_size=200), st.sampled_from(["sha1", "md5", "sha256"]))
def test_checksum_roundtrip(data: bytes, algorithm: str) -> None:
    digest = hashlib.new(algorithm, data).digest()
    parsed = parse_checksum(f"{algorithm} {base64.b64encode(digest).decode()}")
    assert parsed is not None and parsed.algorithm == algorithm and parsed.digest == digest


@pytest.mark.parametrize("raw", ["sha1", "sha1 ", "crc32 AAAAAA==", "sha1 not-base64!",
                                 "sha1 " + base64.b64encode(b"short").decode(), "sha1  x", "sha1 a b"])
def test_checksum_rejects(raw: str) -> None:
    with pytest.raises(TusError) as exc:
        parse_checksum(raw)
    assert exc.value.status == 400


@given(st.text(max_size=60))
def test_checksum_parser_never_crashes(raw: str) -> None:
    try:
        parse_checksum(raw)
    except TusError as exc:
        assert exc.status == 400


@given(st.binary(max_size=64))
def test_strict_b64_roundtrip(data: bytes) -> None:
    assert strict_b64decode(base64.b64encode(data).decode()) == data


@given(st.text(max_size=40))
def test_strict_b64_never_crashes(raw: str) -> None:
    out = strict_b64decode(raw)
    if out is not None:
        assert base64.b64encode(out).decode() == raw


# -- concat ---------------------------------------------------------------------------------------


def test_concat() -> None:
    assert parse_concat("partial") == Concat(final=False)
    assert parse_concat(f"final;/files/{ID} http://h/files/{ID}") == Concat(True, (f"/files/{ID}",
                                                                                   f"http://h/files/{ID}"))
    for bad in ("final;", "final", "partial;x", "both"):
        with pytest.raises(TusError):
            parse_concat(bad)
    assert upload_id_from_url(f"https://example.com/prefix/files/{ID}", "/files/") == ID
    for bad in ("/files/", "/files/xyz", f"/other/{ID}", f"/files/{ID}/more", "http://[::1"):
        with pytest.raises(TusError):
            upload_id_from_url(bad, "/files/")


@given(st.text(max_size=80))
def test_concat_parser_never_crashes(raw: str) -> None:
    try:
        parsed = parse_concat(raw)
    except TusError as exc:
        assert exc.status == 400
    else:
        assert parsed is not None and (not parsed.final or parsed.urls)


# -- metadata -------------------------------------------------------------------------------------

keys = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12)


@given(st.dictionaries(keys, st.binary(max_size=40), max_size=6))
def test_metadata_roundtrip(items: dict[str, bytes]) -> None:
    assert parse_metadata(encode_metadata(items)) == items


@given(st.text(max_size=100))
def test_metadata_parser_never_crashes(raw: str) -> None:
    try:
        parse_metadata(raw)
    except TusError as exc:
        assert exc.status == 400


@pytest.mark.parametrize("raw", ["a b c", "a notbase64!", "a YQ==,a YQ==", " ,a", "k\u00e9y YQ==", "a YQ",
                                 ",", "a,,b"])
def test_metadata_rejects(raw: str) -> None:
    with pytest.raises(TusError) as exc:
        parse_metadata(raw)
    assert exc.value.status == 400


def test_metadata_basics() -> None:
    assert parse_metadata(None) == {} and parse_metadata("") == {}
    assert parse_metadata("filename ZmlsZS5tcDQ=,is_confidential") == {"filename": b"file.mp4",
                                                                       "is_confidential": b""}


def test_video_options() -> None:
    opts = video_options({"filename": b"C:\\videos\\cat.mp4", "renditions": b"720,480"})
    assert opts.filename == "cat.mp4" and opts.renditions == (720, 480)
    assert video_options({}).renditions == (1080, 720, 480)
    for bad in (b"1080,1080", b"360", b"", b"720,", b"abc", b"\xff"):
        with pytest.raises(TusError) as exc:
            video_options({"renditions": bad})
        assert exc.value.status == 400
    with pytest.raises(TusError):
        video_options({"filename": b"\xff\xfe"})
    with pytest.raises(TusError):
        video_options({"filename": b"a\nb"})


@given(st.lists(st.sampled_from([1080, 720, 480]), min_size=1, max_size=3, unique=True))
def test_renditions_roundtrip(heights: list[int]) -> None:
    assert parse_renditions(",".join(map(str, heights))) == tuple(heights)


# -- rules ----------------------------------------------------------------------------------------


def info(**kw: object) -> UploadInfo:
    base: dict[str, object] = {"id": ID, "tenant": "t", "length": 100, "offset": 10, "expires_at": 2e9}
    base.update(kw)
    return UploadInfo(**base)  # type: ignore[arg-type]


def status_of(fn: object, *a: object, **kw: object) -> int:
    try:
        fn(*a, **kw)  # type: ignore[operator]
    except TusError as exc:
        return exc.status
    return 0


def test_creation_rules() -> None:
    assert status_of(check_creation_length, None, False, False, 10) == 400
    assert status_of(check_creation_length, 5, True, False, 10) == 400
    assert status_of(check_creation_length, 11, False, False, 10) == 413
    assert status_of(check_creation_length, 10, False, False, 10) == 0
    assert status_of(check_creation_length, None, True, False, 10) == 0
    assert status_of(check_creation_length, 5, False, True, 10) == 400
    assert status_of(check_creation_length, None, False, True, 10) == 0


def test_patch_rules() -> None:
    now = 1e9
    kw = {"new_length": None, "max_size": 1000, "now": now}
    assert status_of(plan_patch, info(), offset=11, content_length=1, **kw) == 409
    assert status_of(plan_patch, info(), offset=10, content_length=91, **kw) == 413
    assert plan_patch(info(), offset=10, content_length=90, **kw).max_bytes == 90
    assert status_of(plan_patch, info(expires_at=now - 1), offset=10, content_length=1, **kw) == 410
    assert status_of(plan_patch, info(concat="final"), offset=10, content_length=1, **kw) == 403
    deferred = info(length=None)
    assert plan_patch(deferred, offset=10, content_length=None, **kw).max_bytes == 990
    kw2 = {"max_size": 1000, "now": now}
    assert plan_patch(deferred, offset=10, new_length=50, content_length=40, **kw2).length == 50
    assert status_of(plan_patch, deferred, offset=10, new_length=5, content_length=0, **kw2) == 400
    assert status_of(plan_patch, deferred, offset=10, new_length=2000, content_length=0, **kw2) == 413
    assert status_of(plan_patch, info(), offset=10, new_length=99, content_length=0, **kw2) == 400


@given(length=st.integers(0, 10**6), offset=st.integers(0, 10**6), sent=st.integers(0, 10**6),
       claimed=st.integers(0, 10**6))
def test_patch_never_goes_past_length(length: int, offset: int, sent: int, claimed: int) -> None:
    if offset > length:
        offset = length
    i = info(length=length, offset=offset)
    try:
        plan = plan_patch(i, offset=claimed, new_length=None, content_length=sent, max_size=10**7, now=0)
    except TusError as exc:
        assert exc.status in (409, 413)
        assert claimed != offset or offset + sent > length
    else:
        assert claimed == offset and plan.start + plan.max_bytes == length and sent <= plan.max_bytes


def test_info_json_roundtrip_and_expiry() -> None:
    i = info(renditions=(720,), partial_urls=("a",), concat="final")
    assert UploadInfo.from_json(i.to_json()) == i
    assert info(offset=100).expired(3e9) is False  # finished uploads never expire
    assert info().expired(3e9) is True


def test_final_id_is_deterministic_and_a_dns_label() -> None:
    from vidup.resource import is_valid_name

    a = concat_final_id("t", [ID, ID[::-1]])
    assert a == concat_final_id("t", [ID, ID[::-1]])
    assert a != concat_final_id("u", [ID, ID[::-1]]) and a != concat_final_id("t", [ID[::-1], ID])
    assert is_valid_name(a)
