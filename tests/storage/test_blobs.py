"""The Blobs interface behaves the same on the shared volume and in a real S3 bucket (SeaweedFS)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from vidup.localstack.s3_server import S3Server
from vidup.storage import BlobNotFound, Blobs, FileBlobs, S3Blobs


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Blobs:
    if request.param == "file":
        return FileBlobs(tmp_path / "root")
    server: S3Server = request.getfixturevalue("s3_server")
    plain = server.blobs()
    return S3Blobs(plain.client, plain.bucket, prefix=f"t-{uuid.uuid4().hex[:8]}/")


def test_put_read_size_and_delete(blobs: Blobs) -> None:
    assert blobs.size("outputs/v1/master.m3u8") is None
    assert blobs.read_bytes("outputs/v1/master.m3u8") is None
    blobs.put_bytes("outputs/v1/master.m3u8", b"#EXTM3U\n", "application/vnd.apple.mpegurl")
    assert blobs.size("outputs/v1/master.m3u8") == 8
    assert blobs.read_bytes("outputs/v1/master.m3u8") == b"#EXTM3U\n"
    blobs.delete("outputs/v1/master.m3u8")
    blobs.delete("outputs/v1/master.m3u8")  # twice is fine
    assert blobs.size("outputs/v1/master.m3u8") is None


def test_ranges_stream_the_bytes_asked_for(blobs: Blobs) -> None:
    data = os.urandom(100_000)
    blobs.put_bytes("uploads/abc", data)
    whole = blobs.open_range("uploads/abc")
    with whole.body:
        assert (whole.body.read(), whole.size, whole.length, whole.start) == (data, len(data), len(data), 0)
    part = blobs.open_range("uploads/abc", 10, 19)
    with part.body:
        assert (part.body.read(), part.length, part.size) == (data[10:20], 10, len(data))
    tail = blobs.open_range("uploads/abc", 99_990)
    with tail.body:
        assert tail.body.read() == data[99_990:]
    assert whole.etag and whole.etag == blobs.open_range("uploads/abc").etag
    with pytest.raises(ValueError):
        blobs.open_range("uploads/abc", 200_000)
    with pytest.raises(BlobNotFound):
        blobs.open_range("uploads/missing")


def test_files_go_up_and_come_down_whole(blobs: Blobs, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    blobs.upload_file("outputs/v2/720p/seg_00000.ts", src, "video/mp2t")
    dest = tmp_path / "dest.bin"
    blobs.download_file("outputs/v2/720p/seg_00000.ts", dest)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(BlobNotFound):
        blobs.download_file("outputs/v2/none", tmp_path / "none")


def test_prefixes_list_and_delete_only_their_keys(blobs: Blobs) -> None:
    for key in ("outputs/a/master.m3u8", "outputs/a/720p/seg_00000.ts", "outputs/ab/master.m3u8",
                "outputs/b/master.m3u8"):
        blobs.put_bytes(key, key.encode())
    assert [k for k, _ in blobs.keys("outputs/a/")] == ["outputs/a/720p/seg_00000.ts", "outputs/a/master.m3u8"]
    assert [k for k, _ in blobs.keys("outputs/a")] == [
        "outputs/a/720p/seg_00000.ts", "outputs/a/master.m3u8", "outputs/ab/master.m3u8"]
    assert blobs.delete_prefix("outputs/a/") == 2
    assert [k for k, _ in blobs.keys("outputs/")] == ["outputs/ab/master.m3u8", "outputs/b/master.m3u8"]


def test_keys_cannot_escape_the_root(blobs: Blobs) -> None:
    for bad in ("../etc/passwd", "outputs/../../x", "/abs"):
        with pytest.raises(ValueError):
            blobs.put_bytes(bad, b"x")


def _disk_bytes(root: Path) -> int:
    return sum(os.stat(os.path.join(d, f)).st_blocks * 512 for d, _, files in os.walk(root) for f in files)


def test_vacuum_gives_deleted_objects_space_back(tmp_path: Path) -> None:
    """SeaweedFS keeps deleted objects on disk until a vacuum: ``S3Server.vacuum`` (what the
    upload bench runs between runs) waits for the deletes to reach the volumes, then frees them."""
    server = S3Server(tmp_path).start()
    try:
        blobs = server.blobs("vacuum/")
        for i in range(4):
            blobs.client.put_object(Bucket=blobs.bucket, Key=f"vacuum/{i}", Body=os.urandom(16 << 20))
        blobs.delete_prefix("")
        data = tmp_path / "s3" / "data"
        assert _disk_bytes(data) > 64 << 20  # deleted, still on disk
        server.vacuum()
        assert _disk_bytes(data) < 8 << 20
    finally:
        server.stop()
