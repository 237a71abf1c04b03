"""The job against real FFmpeg on short lavfi sources: exact ladders, aligned keyframes, valid playlists."""

from __future__ import annotations

import os
from pathlib import Path

import m3u8
import pytest
from transcoder_media import ffmpeg, ffprobe_json, make_source, segment_starts, streams

from vidup.transcode_jobs import REASON_INVALID_MEDIA, TranscodeRequest, TranscodeResult
from vidup_transcoder.encoding import job_timeout_for
from vidup_transcoder.errors import TranscodeTimeoutError
from vidup_transcoder.job import run_transcode

SEGMENT = 2


def transcode(
    storage: Path, name: str, renditions: tuple[int, ...] = (1080, 720, 480), timeout_seconds: float | None = None
) -> TranscodeResult:
    req = TranscodeRequest(name, f"uploads/{name}", f"outputs/{name}", list(renditions), SEGMENT)
    return run_transcode(req, storage, f"job-{name}", None, timeout_seconds=timeout_seconds, preset="ultrafast")


def leftovers(storage: Path) -> list[str]:
    outputs = storage / "outputs"
    return sorted(p.name for p in outputs.iterdir() if p.name.startswith(".")) if outputs.exists() else []


def check_package(
    storage: Path, result: TranscodeResult, source_seconds: float, sizes: list[tuple[int, int]], audio: bool
) -> None:
    assert result.status == "completed", result.message
    out = storage / result.output_path
    master = m3u8.load(str(storage / result.master_playlist))
    assert master.is_variant
    assert [p.stream_info.resolution for p in master.playlists] == sizes
    assert [(r.width, r.height) for r in result.renditions] == sizes
    assert result.duration_seconds == pytest.approx(source_seconds, abs=0.5)
    starts_by_rung = []
    for variant, rendition in zip(master.playlists, result.renditions, strict=True):
        info = variant.stream_info
        assert variant.uri == rendition.playlist
        assert info.bandwidth == rendition.bandwidth and info.average_bandwidth == rendition.average_bandwidth
        assert info.bandwidth >= info.average_bandwidth > 0
        assert info.frame_rate and info.frame_rate > 0
        codecs = info.codecs.split(",")
        assert codecs[0].startswith("avc1.") and len(codecs[0]) == len("avc1.640028")
        assert (codecs[1:] == ["mp4a.40.2"]) if audio else (codecs[1:] == [])

        media_path = out / variant.uri
        media = m3u8.load(str(media_path))
        assert media.playlist_type == "vod" and media.is_endlist
        assert media.segments, f"{variant.uri} has no segments"
        for seg in media.segments:
            assert seg.duration <= SEGMENT + 0.05, f"{variant.uri} has a {seg.duration}s segment"
            assert round(seg.duration) <= media.target_duration
        assert sum(s.duration for s in media.segments) == pytest.approx(source_seconds, abs=0.5)
        # the declared peak is at least the rate of every segment long enough to count (RFC 8216 4.1)
        for seg in media.segments:
            if seg.duration >= 0.5 * media.target_duration:
                size = (media_path.parent / seg.uri).stat().st_size
                assert info.bandwidth >= size * 8 / seg.duration

        first = media_path.parent / media.segments[0].uri
        kinds = {s["codec_type"]: s for s in streams(first)}
        video = kinds["video"]
        assert (video["width"], video["height"]) == (rendition.width, rendition.height)
        assert video["codec_name"] == "h264" and video["pix_fmt"] == "yuv420p"
        assert "side_data_list" not in video or all(
            d.get("rotation", 0) == 0 for d in video["side_data_list"]
        ), "output must be upright, not carry a rotation"
        if audio:
            assert kinds["audio"]["codec_name"] == "aac" and kinds["audio"]["channels"] == 2
        else:
            assert "audio" not in kinds
        starts = segment_starts(media_path)
        starts_by_rung.append([round(t - starts[0], 3) for t in starts])
    # every rung cuts its segments at the same instants, so players can switch cleanly
    assert all(s == starts_by_rung[0] for s in starts_by_rung), starts_by_rung
    poster = ffprobe_json(storage / result.poster, "-show_streams")["streams"][0]
    assert poster["codec_name"] == "mjpeg" and (poster["width"], poster["height"]) == sizes[0]
    assert leftovers(storage) == []


def test_1080p_source_yields_three_aligned_renditions(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "hd", size="1920x1080", seconds=4, rate=24)
    result = transcode(tmp_path, "hd")
    check_package(tmp_path, result, 4.0, [(1920, 1080), (1280, 720), (854, 480)], audio=True)
    assert result.source is not None and (result.source.width, result.source.height) == (1920, 1080)
    assert sorted(os.listdir(tmp_path / "outputs" / "hd")) == ["1080p", "480p", "720p", "master.m3u8", "poster.jpg"]


def test_720p_source_yields_720p_and_480p_only(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "v720", size="1280x720", seconds=4)
    result = transcode(tmp_path, "v720")
    check_package(tmp_path, result, 4.0, [(1280, 720), (854, 480)], audio=True)
    assert [r.name for r in result.renditions] == ["720p", "480p"]


def test_tiny_source_yields_one_rendition_at_its_own_size(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "tiny", size="320x240", seconds=3, rate=25)
    result = transcode(tmp_path, "tiny")
    check_package(tmp_path, result, 3.0, [(320, 240)], audio=True)


def test_portrait_source_yields_portrait_renditions(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "tall", size="720x1280", seconds=4)
    result = transcode(tmp_path, "tall")
    check_package(tmp_path, result, 4.0, [(720, 1280), (480, 854)], audio=True)


def test_rotated_phone_video_is_turned_upright(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "rot", size="1280x720", seconds=3, rotate=90)
    result = transcode(tmp_path, "rot")
    check_package(tmp_path, result, 3.0, [(720, 1280), (480, 854)], audio=True)
    assert result.source is not None and result.source.rotation in (90, 270)


def test_source_without_audio(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "mute", size="854x480", seconds=3, audio=False)
    result = transcode(tmp_path, "mute")
    check_package(tmp_path, result, 3.0, [(854, 480)], audio=False)
    assert result.source is not None and not result.source.has_audio


def test_odd_dimensions_in_a_non_h264_codec(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "odd", size="1280x720", seconds=3, rate=25,
                vfilter="scale=1281:721,setsar=1,format=yuv444p", vcodec=("-c:v", "ffv1"), container="matroska")
    result = transcode(tmp_path, "odd")
    check_package(tmp_path, result, 3.0, [(1280, 720), (852, 480)], audio=True)


def test_hevc_10bit_source_becomes_8bit_h264(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "hevc", size="960x540", seconds=3, rate=25,
                vcodec=("-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
                        "-x265-params", "log-level=error", "-tag:v", "hvc1"))
    result = transcode(tmp_path, "hevc")
    check_package(tmp_path, result, 3.0, [(854, 480)], audio=True)
    assert result.source is not None
    assert (result.source.video_codec, result.source.pixel_format) == ("hevc", "yuv420p10le")


def test_variable_frame_rate_source(tmp_path: Path) -> None:
    # drop frames irregularly and keep the gaps in the timestamps: a true VFR file
    make_source(tmp_path / "uploads" / "vfr", size="1280x720", seconds=4,
                vfilter="select='not(mod(n\\,3))+eq(mod(n\\,7)\\,1)'",
                extra=("-fps_mode", "vfr"))
    result = transcode(tmp_path, "vfr")
    check_package(tmp_path, result, 4.0, [(1280, 720), (854, 480)], audio=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (os.urandom(256 * 1024), "not a readable video"),
        (b"", "empty"),
    ],
    ids=["random-bytes", "empty"],
)
def test_unplayable_files_fail_permanently_and_leave_nothing(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "bad").write_bytes(content)
    result = transcode(tmp_path, "bad")
    assert result.status == "failed"
    assert result.reason == REASON_INVALID_MEDIA
    assert message in result.message and "upload bad" in result.message
    assert not (tmp_path / "outputs" / "bad").exists()
    assert leftovers(tmp_path) == []
    # and the result round-trips through the contract
    assert TranscodeResult.from_dict(result.to_dict()) == result


def test_audio_only_and_truncated_files_fail_permanently(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    # audio only: a perfectly fine file, but not a video
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac", str(uploads / "song.m4a"))
    (uploads / "song").write_bytes((uploads / "song.m4a").read_bytes())
    result = transcode(tmp_path, "song")
    assert (result.status, result.reason) == ("failed", REASON_INVALID_MEDIA)
    assert "no video stream" in result.message
    # truncated beyond repair: the first half of an MP4 whose index (moov) is at the end
    make_source(uploads / "whole.mp4", size="640x360", seconds=3)
    data = (uploads / "whole.mp4").read_bytes()
    (uploads / "cut").write_bytes(data[: len(data) // 2])
    result = transcode(tmp_path, "cut")
    assert (result.status, result.reason) == ("failed", REASON_INVALID_MEDIA)
    assert result.message
    assert leftovers(tmp_path) == [] and not (tmp_path / "outputs" / "cut").exists()


def test_timeout_is_enforced_inside_the_job_and_cleans_up(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "slow", size="1920x1080", seconds=4)
    with pytest.raises(TranscodeTimeoutError, match="budget"):
        transcode(tmp_path, "slow", timeout_seconds=0.5)
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "outputs" / "slow").exists()


def test_job_timeout_grows_with_duration() -> None:
    assert job_timeout_for(0) >= 60
    assert job_timeout_for(3600) > job_timeout_for(60) > job_timeout_for(0)


def test_retranscode_replaces_the_previous_package(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "again", size="640x360", seconds=2)
    first = transcode(tmp_path, "again", renditions=(360,))
    assert [r.name for r in first.renditions] == ["360p"]
    second = transcode(tmp_path, "again", renditions=(240,))
    assert [r.name for r in second.renditions] == ["240p"]
    assert sorted(os.listdir(tmp_path / "outputs" / "again")) == ["240p", "master.m3u8", "poster.jpg"]
    assert leftovers(tmp_path) == []
