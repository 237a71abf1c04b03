"""The finalizer's removal through the configured store: the same call on the volume and in a real
S3 bucket (SeaweedFS) removes one video's package and nothing of any other video."""

from __future__ import annotations

import uuid
from pathlib import Path

from vidup.localstack.s3_server import S3Server
from vidup.settings import Settings
from vidup.storage import FileBlobs, S3Blobs
from vidup_operator.outputs import remove_video_outputs


def test_bucket_outputs_go_by_prefix(s3_server: S3Server) -> None:
    plain = s3_server.blobs()
    blobs = S3Blobs(plain.client, plain.bucket, prefix=f"t-{uuid.uuid4().hex[:8]}/")
    mine = ["outputs/vid/master.m3u8", "outputs/vid/480p/index.m3u8", "outputs/vid/480p/seg_00000.ts"]
    theirs = ["outputs/vid-2/master.m3u8", "outputs/vidx/master.m3u8", "uploads/vid"]
    for key in mine + theirs:
        blobs.put_bytes(key, b"x")
    settings = s3_server.settings(Settings())
    assert remove_video_outputs(settings, "vid", blobs) == ["3 objects under outputs/vid/"]
    assert [k for k, _ in blobs.keys("")] == sorted(theirs)
    assert remove_video_outputs(settings, "vid", blobs) == []


def test_volume_outputs_keep_the_staging_rules(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    for name in ("vid", ".vid.partial.vt-1-g1.abc", "vid-2"):
        (outputs / name).mkdir(parents=True)
        (outputs / name / "master.m3u8").write_text("#EXTM3U\n")
    removed = remove_video_outputs(Settings(storage_dir=tmp_path), "vid", FileBlobs(tmp_path))
    assert sorted(Path(p).name for p in removed) == [".vid.partial.vt-1-g1.abc", "vid"]
    assert [p.name for p in outputs.iterdir()] == ["vid-2"]
