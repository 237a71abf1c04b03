"""Chunked transcoding against real FFmpeg: chunks, audio and stitch give one continuous package."""

from __future__ import annotations

import time
import uuid
from itertools import pairwise
from pathlib import Path

import m3u8
import pytest
from chunked_support import SEGMENT, chunked_transcode, concat_decode, psnr, request, run, span
from transcoder_media import make_source, segment_starts, streams

from vidup import chunking
from vidup.localstack.s3_server import S3Server
from vidup.storage import FileBlobs, S3Blobs
from vidup.transcode_jobs import KIND_CHUNK, KIND_STITCH, TranscodeRequest
from vidup_transcoder.chunked import PieceClaim
from vidup_transcoder.errors import TransientTranscodeError
from vidup_transcoder.job import run_transcode
from vidup_transcoder.package_store import scratch_bytes


def check_stitched(storage: Path, name: str, seconds: float, sizes: list[tuple[int, int]], audio: bool,
                   rate: float, same_end: bool = True) -> None:
    """``same_end``: the source's video lasts as long as its audio (a VFR source made by dropping
    frames ends on its last kept frame, before its audio, in a single job too)."""
    out = storage / "outputs" / name
    master = m3u8.load(str(out / "master.m3u8"))
    assert [p.stream_info.resolution for p in master.playlists] == sizes
    assert bool(master.media) == audio
    if audio:
        (group,) = master.media
        assert (group.type, group.group_id, group.uri, group.default) == ("AUDIO", "aud", "audio/index.m3u8", "YES")
    starts_by_rung = []
    frame = 1 / rate
    for variant in master.playlists:
        info = variant.stream_info
        assert info.bandwidth >= info.average_bandwidth > 0
        assert info.frame_rate == pytest.approx(rate, abs=0.01)
        codecs = info.codecs.split(",")
        assert codecs[0].startswith("avc1.") and codecs[1:] == (["mp4a.40.2"] if audio else [])
        assert (info.audio == "aud") if audio else not info.audio
        path = out / variant.uri
        media = m3u8.load(str(path))
        assert media.playlist_type == "vod" and media.is_endlist
        assert sum(s.duration for s in media.segments) == pytest.approx(seconds, abs=0.5)
        for seg in media.segments:
            assert seg.duration <= SEGMENT + 0.05 and round(seg.duration) <= media.target_duration
            if seg.duration >= 0.5 * media.target_duration:
                assert info.bandwidth >= (path.parent / seg.uri).stat().st_size * 8 / seg.duration
        first = streams(path.parent / media.segments[0].uri)
        assert [(s["codec_type"], s["width"], s["height"]) for s in first] == [("video", *info.resolution)]
        starts = segment_starts(path)  # also: every segment opens on a keyframe
        starts_by_rung.append([round(t - starts[0], 3) for t in starts])
        # continuous video timestamps across every segment (and so every chunk) join
        spans = span(path, "v:0")
        for (_, end), (nxt, _) in pairwise(spans):
            assert abs(nxt - end) <= frame + 1e-3, (variant.uri, end, nxt)
    assert all(s == starts_by_rung[0] for s in starts_by_rung)
    if audio:
        audio_spans = span(out / "audio" / "index.m3u8", "a:0")
        video_spans = span(out / master.playlists[0].uri, "v:0")
        assert abs(audio_spans[0][0] - video_spans[0][0]) <= frame
        if same_end:
            assert abs(audio_spans[-1][1] - video_spans[-1][1]) <= frame
        for (_, end), (nxt, _) in pairwise(audio_spans):
            assert abs(nxt - end) < 0.001


def test_chunked_package_matches_a_single_job(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "long", size="1920x1080", seconds=17, rate=30)
    chunks, result = chunked_transcode(tmp_path, "long")
    assert chunks == 4 and result.status == "completed", result.message
    assert result.duration_seconds == pytest.approx(17.0, abs=0.05)
    assert result.source is not None and result.source.has_audio
    assert [r.name for r in result.renditions] == ["1080p", "720p", "480p"]
    check_stitched(tmp_path, "long", 17.0, [(1920, 1080), (1280, 720), (854, 480)], audio=True, rate=30)
    # the pieces stay for the operator to delete once Completed is recorded; no claim outlives its run
    parts = tmp_path / "parts" / "long" / "job-long"
    assert sorted(p.parent.name for p in parts.glob(f"*/{chunking.DONE_MARKER}")) == [
        "audio", "c0000", "c0001", "c0002", "c0003"]
    assert not list(parts.rglob(chunking.CLAIM))
    # the same source in one job: the chunked 1080p rung looks the same
    single_req = TranscodeRequest("one", "uploads/long", "outputs/one", [1080], SEGMENT)
    single = run_transcode(single_req, tmp_path, "job-one", None, preset="ultrafast")
    assert single.status == "completed"
    a = concat_decode(tmp_path / "outputs" / "long" / "1080p" / "index.m3u8", tmp_path / "chunked.mkv")
    b = concat_decode(tmp_path / "outputs" / "one" / "1080p" / "index.m3u8", tmp_path / "single.mkv")
    chunked_vs_single = psnr(a, b)
    assert chunked_vs_single > 35, chunked_vs_single
    source = tmp_path / "uploads" / "long"
    assert abs(psnr(a, source) - psnr(b, source)) <= 0.5


def test_a_done_chunk_is_not_encoded_again(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "again", size="640x360", seconds=13, rate=25, audio=False)
    req = request("again", KIND_CHUNK, 13.0, 1, [360])
    first = run(tmp_path, req, "c0001")
    assert first.status == "completed"
    piece = tmp_path / req.parts_path / "c0001"
    files = {p: p.stat().st_mtime_ns for p in piece.rglob("*") if p.is_file()}
    assert (piece / chunking.DONE_MARKER) in files and len(files) == 3  # two segments and the marker
    started = time.monotonic()
    second = run(tmp_path, req, "c0001")
    assert second == first
    assert time.monotonic() - started < 5  # no FFmpeg ran (an encode of the chunk would be the bulk)
    assert {p: p.stat().st_mtime_ns for p in piece.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize("kind", ["rotated", "vfr", "mute"])
def test_awkward_sources_come_out_right_chunked(tmp_path: Path, kind: str) -> None:
    source = tmp_path / "uploads" / kind
    if kind == "rotated":
        make_source(source, size="1280x720", seconds=13, rate=30, rotate=90)
        sizes, audio = [(720, 1280), (480, 854)], True
    elif kind == "vfr":
        make_source(source, size="1280x720", seconds=13, vfilter="select='not(mod(n\\,3))+eq(mod(n\\,7)\\,1)'",
                    extra=("-fps_mode", "vfr"))
        sizes, audio = [(1280, 720), (854, 480)], True
    else:
        make_source(source, size="854x480", seconds=13, audio=False)
        sizes, audio = [(854, 480)], False
    chunks, result = chunked_transcode(tmp_path, kind)
    assert chunks == 3 and result.status == "completed", result.message
    assert result.source is not None and result.source.has_audio == audio
    if kind == "rotated":
        assert result.source.rotation in (90, 270)
    rate = result.renditions and float(m3u8.load(str(tmp_path / result.master_playlist)).playlists[0]
                                       .stream_info.frame_rate or 0)
    check_stitched(tmp_path, kind, 13.0, sizes, audio, float(rate), same_end=kind != "vfr")


def test_whole_job_answers_chunked_for_a_long_source_and_encodes_a_short_one(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "big", size="320x240", seconds=17, rate=10)
    whole = run(tmp_path, request("big"))
    assert (whole.status, whole.chunks) == ("chunked", 4)
    assert whole.source is not None and whole.source.duration_seconds == pytest.approx(17, abs=0.1)
    assert not (tmp_path / "outputs" / "big").exists()
    make_source(tmp_path / "uploads" / "small", size="320x240", seconds=9, rate=10)
    small = run(tmp_path, request("small"))
    assert small.status == "completed" and small.chunks == 0
    assert (tmp_path / small.master_playlist).is_file()


def test_a_stitch_waits_for_every_piece(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "early", size="320x240", seconds=13, rate=10)
    with pytest.raises(TransientTranscodeError, match="c0000 of upload early is not done"):
        run(tmp_path, request("early", KIND_STITCH, 13.0, renditions=[240]), chunking.STITCH)
    assert not (tmp_path / "outputs" / "early").exists()


def test_the_claim_is_fresh_while_a_piece_runs_and_gone_after(tmp_path: Path) -> None:
    blobs = FileBlobs(tmp_path)
    key = "parts/v/job/c0000/" + chunking.CLAIM
    with PieceClaim(blobs, key, "job_c0000", interval=0.05):
        first = blobs.read_bytes(key)
        assert chunking.claim_is_fresh(first, time.time())
        deadline = time.monotonic() + 5
        while blobs.read_bytes(key) == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert blobs.read_bytes(key) != first  # refreshed
    assert blobs.read_bytes(key) is None


def test_chunked_transcode_against_a_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    plain = s3_server.blobs()
    bucket = S3Blobs(plain.client, plain.bucket, prefix=f"t-{uuid.uuid4().hex[:8]}/")
    src = make_source(tmp_path / "media" / "clip.mp4", size="640x360", seconds=13, rate=25)
    bucket.upload_file("uploads/bkt", src)
    scratch = tmp_path / "scratch-root"
    chunks, result = chunked_transcode(scratch, "bkt", [360], blobs=bucket)
    assert chunks == 3 and result.status == "completed", result.message
    master = m3u8.loads((bucket.read_bytes("outputs/bkt/master.m3u8") or b"").decode())
    assert [m.uri for m in master.media] == ["audio/index.m3u8"]
    for playlist in ("360p/index.m3u8", "audio/index.m3u8"):
        media = m3u8.loads((bucket.read_bytes(f"outputs/bkt/{playlist}") or b"").decode())
        assert media.is_endlist and sum(s.duration for s in media.segments) == pytest.approx(13, abs=0.1)
        folder = playlist.split("/")[0]
        assert all((bucket.size(f"outputs/bkt/{folder}/{s.uri}") or 0) > 0 for s in media.segments)
    keys = [key for key, _size in bucket.keys("parts/")]
    assert keys and not [k for k in keys if k.endswith(chunking.CLAIM)], keys
    assert scratch_bytes(scratch) == 0
