"""The job on a real S3 bucket (SeaweedFS, as `vidup up --storage s3` runs it): the source comes
from ``uploads/<id>``, the package goes to ``outputs/<id>/`` with the master last and the right
Content-Types, and the scratch directory is empty afterwards, whether the job completed or failed."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import m3u8
import pytest
from boto3.exceptions import S3UploadFailedError
from transcoder_media import make_source

from vidup.localstack.s3_server import S3Server
from vidup.settings import Settings
from vidup.storage import FileBlobs, S3Blobs
from vidup.storage.s3 import make_client
from vidup.transcode_jobs import REASON_INVALID_MEDIA, TranscodeRequest
from vidup_transcoder.errors import TransientTranscodeError
from vidup_transcoder.job import run_transcode
from vidup_transcoder.limits import MediaLimits
from vidup_transcoder.package_store import (
    BucketPackageStore,
    VolumePackageStore,
    package_store_for,
    scratch_bytes,
)


@pytest.fixture
def bucket(s3_server: S3Server) -> S3Blobs:
    """The session's bucket under a prefix of this test's own."""
    plain = s3_server.blobs()
    return S3Blobs(plain.client, plain.bucket, prefix=f"t-{uuid.uuid4().hex[:8]}/")


def content_type(blobs: S3Blobs, key: str) -> str:
    return str(blobs.client.head_object(Bucket=blobs.bucket, Key=blobs.key(key))["ContentType"])


def test_the_store_follows_the_blobs(tmp_path: Path, bucket: S3Blobs) -> None:
    assert isinstance(package_store_for(FileBlobs(tmp_path), tmp_path), VolumePackageStore)
    assert isinstance(package_store_for(bucket, tmp_path), BucketPackageStore)


def fake_package(root: Path) -> Path:
    partial = root / "package"
    for rung in ("720p", "480p"):
        (partial / rung).mkdir(parents=True)
        (partial / rung / "index.m3u8").write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
        for n in range(3):
            (partial / rung / f"seg_{n:05d}.ts").write_bytes(bytes([n]) * 188 * 50)
    (partial / "poster.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (partial / ".master.m3u8.tmp").write_text("a leftover temp file is never published")
    (partial / "master.m3u8").write_text("#EXTM3U\n")
    return partial


def test_publish_replaces_a_package_master_last_with_content_types(tmp_path: Path, bucket: S3Blobs) -> None:
    # an older package of the same video, with a rung the new one does not have
    bucket.put_bytes("outputs/v/master.m3u8", b"#EXTM3U\nold\n")
    bucket.put_bytes("outputs/v/1080p/seg_00000.ts", b"old")
    bucket.put_bytes("outputs/v/720p/seg_00000.ts", b"old")
    bucket.put_bytes("outputs/v2/master.m3u8", b"another video")
    partial = fake_package(tmp_path)
    BucketPackageStore(bucket, tmp_path, threads=3).publish(partial, "outputs/v")

    keys = [k for k, _ in bucket.keys("outputs/v/")]
    assert keys == sorted([
        "outputs/v/master.m3u8", "outputs/v/poster.jpg",
        *(f"outputs/v/{r}/{f}" for r in ("480p", "720p")
          for f in ("index.m3u8", *(f"seg_{n:05d}.ts" for n in range(3)))),
    ])
    assert bucket.read_bytes("outputs/v/master.m3u8") == b"#EXTM3U\n"
    assert bucket.read_bytes("outputs/v/720p/seg_00002.ts") == bytes([2]) * 188 * 50
    assert bucket.read_bytes("outputs/v2/master.m3u8") == b"another video"
    assert content_type(bucket, "outputs/v/master.m3u8") == "application/vnd.apple.mpegurl"
    assert content_type(bucket, "outputs/v/480p/index.m3u8") == "application/vnd.apple.mpegurl"
    assert content_type(bucket, "outputs/v/480p/seg_00000.ts") == "video/mp2t"
    assert content_type(bucket, "outputs/v/poster.jpg") == "image/jpeg"


def test_a_failed_publish_raises_and_a_package_without_master_is_refused(
        tmp_path: Path, bucket: S3Blobs, s3_server: S3Server) -> None:
    partial = fake_package(tmp_path)
    # the same store, refusing every request (a rotated secret): the error goes up for a retry
    session = boto3.session.Session(aws_access_key_id=s3_server.access_key, aws_secret_access_key="wrong")
    refused = S3Blobs(make_client(s3_server.settings(Settings()), session), bucket.bucket, bucket.prefix)
    with pytest.raises(S3UploadFailedError):
        BucketPackageStore(refused, tmp_path).publish(partial, "outputs/v")
    (partial / "master.m3u8").unlink()
    with pytest.raises(TransientTranscodeError, match="no master"):
        BucketPackageStore(bucket, tmp_path).publish(partial, "outputs/v")
    assert list(bucket.keys("outputs/")) == []


def test_source_copies_live_in_scratch_until_discarded(tmp_path: Path, bucket: S3Blobs) -> None:
    store = BucketPackageStore(bucket, tmp_path)
    with pytest.raises(TransientTranscodeError, match="not in the bucket"):
        store.fetch_source("uploads/missing", "job-1", "upload missing")
    bucket.put_bytes("uploads/a", b"x" * 5000)
    source = store.fetch_source("uploads/a", "job-1", "upload a")
    assert source.read_bytes() == b"x" * 5000 and tmp_path in source.parents
    (store.new_partial("outputs/a", "job-1") / "master.m3u8").write_text("#EXTM3U\n")
    # another job's scratch (its name starts with this job's id) is not this job's
    other = BucketPackageStore(bucket, tmp_path).fetch_source("uploads/a", "job-10", "upload a")
    assert scratch_bytes(tmp_path) == 2 * 5000 + 8
    # a fresh store (the worker process, after a killed horse) finds the job's scratch by name
    removed = BucketPackageStore(bucket, tmp_path).discard("outputs/a", "job-1")
    assert len(removed) == 1 and not source.exists() and other.exists()


def test_transcode_reads_the_bucket_and_publishes_to_it(tmp_path: Path, bucket: S3Blobs) -> None:
    src = make_source(tmp_path / "media" / "clip.mp4", size="854x480", seconds=3)
    bucket.upload_file("uploads/vid", src)
    scratch = tmp_path / "scratch-root"
    req = TranscodeRequest("vid", "uploads/vid", "outputs/vid", [480], 2)
    result = run_transcode(req, scratch, "job-vid", None, preset="ultrafast", blobs=bucket)

    assert result.status == "completed", result.message
    assert result.master_playlist == "outputs/vid/master.m3u8" and result.poster == "outputs/vid/poster.jpg"
    master = m3u8.loads((bucket.read_bytes("outputs/vid/master.m3u8") or b"").decode())
    assert [p.uri for p in master.playlists] == ["480p/index.m3u8"]
    media = m3u8.loads((bucket.read_bytes("outputs/vid/480p/index.m3u8") or b"").decode())
    assert media.is_endlist and len(media.segments) == 2
    for seg in media.segments:
        assert (bucket.size(f"outputs/vid/480p/{seg.uri}") or 0) > 0
    assert (bucket.size("outputs/vid/poster.jpg") or 0) > 0
    # nothing stays behind locally, and nothing of the video was ever on a volume
    assert scratch_bytes(scratch) == 0
    assert not (scratch / "uploads").exists() and not (scratch / "outputs").exists()

    # a retry (a new generation) overwrites the package in place
    again = run_transcode(req, scratch, "job-vid-2", None, preset="ultrafast", blobs=bucket)
    assert again.status == "completed"
    assert [k for k, _ in bucket.keys("outputs/vid/")] == sorted(
        ["outputs/vid/master.m3u8", "outputs/vid/poster.jpg", "outputs/vid/480p/index.m3u8",
         *(f"outputs/vid/480p/{s.uri}" for s in media.segments)])


def test_media_refused_from_the_scratch_copy_leaves_nothing(tmp_path: Path, bucket: S3Blobs) -> None:
    """The hostile-media rules run on the scratch copy: a file FFmpeg cannot read is a permanent
    failure, a declared shape past the limits is refused from the probe, and neither leaves any
    object under outputs/ nor any scratch."""
    bucket.put_bytes("uploads/pdf", b"%PDF-1.4 definitely not a video\n" * 2000)
    scratch = tmp_path / "scratch-root"
    req = TranscodeRequest("pdf", "uploads/pdf", "outputs/pdf", [], 2)
    result = run_transcode(req, scratch, "job-pdf", None, preset="ultrafast", blobs=bucket)
    assert result.status == "failed" and result.reason == REASON_INVALID_MEDIA
    big = make_source(tmp_path / "media" / "long.mp4", size="320x240", seconds=2, audio=False)
    bucket.upload_file("uploads/big", big)
    req = TranscodeRequest("big", "uploads/big", "outputs/big", [], 2)
    refused = run_transcode(req, scratch, "job-big", None, preset="ultrafast",
                            limits=MediaLimits(max_duration_seconds=1), blobs=bucket)
    assert refused.status == "failed" and "VIDUP_MAX_DURATION_SECONDS" in (refused.message or "")
    # the output budget (RLIMIT_FSIZE and the guard's walk) binds the encode in scratch too
    outgrown = run_transcode(req, scratch, "job-big", None, preset="ultrafast",
                             limits=MediaLimits(output_base_bytes=20_000, output_bitrate_factor=0.01), blobs=bucket)
    assert outgrown.status == "failed" and outgrown.reason == REASON_INVALID_MEDIA, outgrown
    assert list(bucket.keys("outputs/")) == []
    assert scratch_bytes(scratch) == 0
