"""Probe parsing: recorded ffprobe JSON in, facts out; non-videos are refused with a clear reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vidup_transcoder.errors import InvalidMediaError
from vidup_transcoder.probe import parse_probe, rotation_of

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def test_rotated_phone_video_swaps_displayed_size() -> None:
    p = parse_probe(load("probe-rotated-90.json"))
    assert (p.stored_width, p.stored_height) == (1280, 720)
    assert (p.display_width, p.display_height) == (720, 1280)
    assert p.rotation in (90, 270)
    assert p.frame_rate == 25.0 and p.frame_rate_fraction == "25/1"
    assert p.duration_seconds == pytest.approx(3.0, abs=0.05)
    assert p.has_audio is False
    facts = p.facts()
    assert (facts.width, facts.height, facts.rotation) == (720, 1280, p.rotation)


def test_hevc_10bit() -> None:
    p = parse_probe(load("probe-hevc-10bit.json"))
    assert (p.video_codec, p.pixel_format) == ("hevc", "yuv420p10le")
    assert (p.display_width, p.display_height) == (960, 540)


def _video(**extra: Any) -> dict[str, Any]:
    stream = {"codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080,
              "avg_frame_rate": "30000/1001", "r_frame_rate": "30000/1001", "pix_fmt": "yuv420p"}
    stream.update(extra)
    return stream


@pytest.mark.parametrize(
    ("side_rotation", "tag", "expected"),
    [(-90, None, 90), (90, None, 270), (180, None, 180), (-180, None, 180), (0, None, 0), (None, "90", 90),
     (None, "270", 270), (None, None, 0)],
)
def test_rotation_normalised(side_rotation: int | None, tag: str | None, expected: int) -> None:
    stream: dict[str, Any] = {}
    if side_rotation is not None:
        stream["side_data_list"] = [{"side_data_type": "Display Matrix", "rotation": side_rotation}]
    if tag is not None:
        stream["tags"] = {"rotate": tag}
    assert rotation_of(stream) == expected


def test_anamorphic_pixels_use_display_width() -> None:
    data = {"streams": [_video(width=720, height=576, sample_aspect_ratio="64:45")], "format": {"duration": "2.0"}}
    p = parse_probe(data)
    assert (p.display_width, p.display_height) == (1024, 576)


def test_ntsc_rate_and_audio_and_stream_duration_fallback() -> None:
    data = {"streams": [_video(duration="12.5"), {"codec_type": "audio", "codec_name": "aac"}], "format": {}}
    p = parse_probe(data)
    assert p.frame_rate == pytest.approx(29.97, abs=0.001)
    assert p.frame_rate_fraction == "30000/1001"
    assert p.has_audio and p.duration_seconds == 12.5


def test_missing_duration_uses_measured() -> None:
    p = parse_probe({"streams": [_video()], "format": {"duration": "N/A"}}, measured_duration=7.25)
    assert p.duration_seconds == 7.25


def test_unknown_average_rate_falls_back_to_r_frame_rate() -> None:
    p = parse_probe({"streams": [_video(avg_frame_rate="0/0", r_frame_rate="25/1")], "format": {"duration": "1"}})
    assert p.frame_rate_fraction == "25/1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"streams": [], "format": {"duration": "3"}}, "no video stream"),
        ({"streams": [{"codec_type": "audio"}], "format": {"duration": "3"}}, "no video stream"),
        # an MP3 with cover art is not a video
        ({"streams": [{"codec_type": "audio"}, _video(disposition={"attached_pic": 1})],
          "format": {"duration": "3"}}, "no video stream"),
        ({"streams": [_video(width=0, height=0)], "format": {"duration": "3"}}, "picture size"),
        ({"streams": [_video()], "format": {}}, "no measurable duration"),
    ],
)
def test_not_a_playable_video(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidMediaError, match=message):
        parse_probe(data, "upload x")
