"""The built FFmpeg command: one process, one split filter graph, aligned keyframes, HLS VOD outputs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from vidup_transcoder.command import (
    EncodePlan,
    build_ffmpeg_command,
    build_poster_command,
    filter_graph,
    h264_level,
    output_frame_rate,
    x264_preset,
)
from vidup_transcoder.ladder import choose_ladder


def plan(has_audio: bool = True, w: int = 1920, h: int = 1080) -> EncodePlan:
    return EncodePlan(
        source=Path("src/in.mov"), out_dir=Path("out"), renditions=choose_ladder(w, h), segment_seconds=10,
        frame_rate=Fraction(30000, 1001), has_audio=has_audio, preset="veryfast",
    )


def outputs(argv: list[str]) -> list[list[str]]:
    """Split argv into per-output argument groups (each starts at a -map of a filter label)."""
    groups: list[list[str]] = []
    for i, arg in enumerate(argv):
        if arg == "-map" and argv[i + 1].startswith("[v"):
            groups.append([])
        if groups:
            groups[-1].append(arg)
    return groups


def opt(group: list[str], name: str) -> list[str]:
    return [group[i + 1] for i, a in enumerate(group[:-1]) if a == name]


def test_filter_graph_decodes_once_and_splits_to_every_rung() -> None:
    assert filter_graph(plan()) == (
        "[0:v:0]fps=30000/1001,split=3[s0][s1][s2];"
        "[s0]scale=w=1920:h=1080,format=yuv420p,setsar=1[v0];"
        "[s1]scale=w=1280:h=720,format=yuv420p,setsar=1[v1];"
        "[s2]scale=w=854:h=480,format=yuv420p,setsar=1[v2]"
    )


def test_one_process_with_one_hls_output_per_rung() -> None:
    argv = build_ffmpeg_command(plan())
    assert argv[0] == "ffmpeg"
    assert argv.count("-i") == 1 and argv.count("-filter_complex") == 1
    assert opt(argv, "-progress") == ["pipe:1"] and "-nostdin" in argv
    groups = outputs(argv)
    assert [g[1] for g in groups] == ["[v0]", "[v1]", "[v2]"]
    expected_levels = ["4.0", "3.1", "3.1"]
    expected_rates = [("5000k", "5350k", "7500k"), ("2800k", "2996k", "4200k"), ("1400k", "1498k", "2100k")]
    for g, name, level, rates in zip(groups, ["1080p", "720p", "480p"], expected_levels, expected_rates, strict=True):
        assert opt(g, "-c:v") == ["libx264"] and opt(g, "-profile:v") == ["high"]
        assert opt(g, "-level:v") == [level]
        assert (opt(g, "-b:v")[0], opt(g, "-maxrate")[0], opt(g, "-bufsize")[0]) == rates
        assert opt(g, "-force_key_frames") == ["expr:gte(t,n_forced*10)"]
        assert opt(g, "-sc_threshold") == ["0"]
        assert opt(g, "-map")[1] == "0:a:0" and opt(g, "-c:a") == ["aac"] and opt(g, "-ac") == ["2"]
        assert opt(g, "-f") == ["hls"] and opt(g, "-hls_time") == ["10"]
        assert opt(g, "-hls_playlist_type") == ["vod"]
        assert opt(g, "-hls_segment_filename") == [str(Path("out") / name / "seg_%05d.ts")]
        assert g[-1] == str(Path("out") / name / "index.m3u8")


def test_no_audio_means_no_audio_mapping() -> None:
    argv = build_ffmpeg_command(plan(has_audio=False))
    assert "0:a:0" not in argv and "-c:a" not in argv


def test_single_tiny_rendition() -> None:
    p = EncodePlan(Path("a"), Path("o"), choose_ladder(320, 240), 4, Fraction(25), True)
    assert filter_graph(p) == "[0:v:0]fps=25/1,split=1[s0];[s0]scale=w=320:h=240,format=yuv420p,setsar=1[v0]"
    assert opt(build_ffmpeg_command(p), "-force_key_frames") == ["expr:gte(t,n_forced*4)"]


@pytest.mark.parametrize(
    ("w", "h", "fps", "maxrate", "level"),
    [(1920, 1080, 30, 5350, "4.0"), (1920, 1080, 60, 5350, "4.2"), (1280, 720, 30, 2996, "3.1"),
     (1280, 720, 60, 2996, "3.2"), (854, 480, 30, 1498, "3.1"), (640, 360, 30, 856, "3.0"),
     (3840, 2160, 30, 17976, "5.1"), (320, 240, 25, 428, "1.3"), (1920, 1080, 30, 30000, "4.1")],
)
def test_lowest_h264_level_that_fits(w: int, h: int, fps: float, maxrate: int, level: str) -> None:
    assert h264_level(w, h, fps, maxrate) == level


@pytest.mark.parametrize(
    ("source", "expected"),
    [("30/1", Fraction(30)), ("30000/1001", Fraction(30000, 1001)), ("2999/100", Fraction(30)),
     ("2987/100", Fraction(30000, 1001)),
     ("120/1", Fraction(60)), ("240/1", Fraction(60)), ("90/1", Fraction(45)), ("0/0", Fraction(30)),
     ("780/59", Fraction(780, 59)), ("25/1", Fraction(25))],
)
def test_output_frame_rate(source: str, expected: Fraction) -> None:
    assert output_frame_rate(source) == expected


def test_preset_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDUP_X264_PRESET", raising=False)
    assert x264_preset() == "veryfast"
    monkeypatch.setenv("VIDUP_X264_PRESET", "ultrafast")
    assert x264_preset() == "ultrafast"


def test_poster_command_seeks_before_input_and_writes_one_frame() -> None:
    argv = build_poster_command(Path("in.mp4"), Path("o/poster.jpg"), 1280, 720, 2.5)
    assert argv.index("-ss") < argv.index("-i")
    assert opt(argv, "-frames:v") == ["1"] and argv[-1] == str(Path("o/poster.jpg"))
