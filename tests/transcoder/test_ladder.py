"""Ladder choice for many source shapes: short-side heights, no upscaling, even dimensions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidup_transcoder.ladder import DEFAULT_HEIGHTS, RUNGS, choose_ladder, rung_for, scaled_size


def sizes(display_w: int, display_h: int, heights: tuple[int, ...] = DEFAULT_HEIGHTS) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in choose_ladder(display_w, display_h, heights)]


@pytest.mark.parametrize(
    ("w", "h", "expected"),
    [
        (1920, 1080, [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480)]),
        (1280, 720, [("720p", 1280, 720), ("480p", 854, 480)]),
        (854, 480, [("480p", 854, 480)]),
        (320, 240, [("240p", 320, 240)]),
        # portrait (or a rotated landscape as displayed): heights are the short side
        (1080, 1920, [("1080p", 1080, 1920), ("720p", 720, 1280), ("480p", 480, 854)]),
        (720, 1280, [("720p", 720, 1280), ("480p", 480, 854)]),
        # 4K gets the default top rung only (no 2160p unless asked)
        (3840, 2160, [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480)]),
        # odd dimensions: even output, never wider than the source
        (1281, 721, [("720p", 1280, 720), ("480p", 852, 480)]),
        (641, 363, [("362p", 640, 362)]),
        (33, 17, [("16p", 32, 16)]),
        # 4:3 and ultra-wide
        (1440, 1080, [("1080p", 1440, 1080), ("720p", 960, 720), ("480p", 640, 480)]),
        (2560, 1080, [("1080p", 2560, 1080), ("720p", 1706, 720), ("480p", 1138, 480)]),
        # between rungs: the taller rung is skipped, nothing is upscaled
        (1920, 1000, [("720p", 1382, 720), ("480p", 922, 480)]),
        # a source a pixel taller than the rung keeps its full width
        (1921, 1081, [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 852, 480)]),
    ],
)
def test_ladder_shapes(w: int, h: int, expected: list[tuple[str, int, int]]) -> None:
    assert sizes(w, h) == expected


def test_requested_rungs_are_honoured_and_sorted() -> None:
    assert sizes(3840, 2160, (480, 2160, 720)) == [("2160p", 3840, 2160), ("720p", 1280, 720), ("480p", 854, 480)]
    assert sizes(1920, 1080, (360,)) == [("360p", 640, 360)]


def test_empty_request_means_default_ladder() -> None:
    assert [r.name for r in choose_ladder(1920, 1080, [])] == ["1080p", "720p", "480p"]


def test_rate_control_follows_the_rung() -> None:
    top = choose_ladder(1920, 1080)[0].rung
    assert (top.video_kbps, top.maxrate_kbps, top.bufsize_kbps) == (5000, 5350, 7500)
    tiny = rung_for(240)
    assert tiny == RUNGS[240]
    odd = rung_for(362)
    assert RUNGS[360].video_kbps <= odd.video_kbps < RUNGS[480].video_kbps


def test_scaled_size_landscape_and_portrait() -> None:
    assert scaled_size(1920, 1080, 720) == (1280, 720)
    assert scaled_size(1080, 1920, 720) == (720, 1280)


@given(st.integers(2, 8000), st.integers(2, 8000))
def test_every_ladder_is_even_and_never_upscaled(w: int, h: int) -> None:
    ladder = choose_ladder(w, h)
    assert ladder
    for r in ladder:
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert r.width <= max(w, 2) and r.height <= max(h, 2)
        # orientation is preserved
        assert (r.width >= r.height) == (w >= h) or abs(w - h) <= 1
    heights = [min(r.width, r.height) for r in ladder]
    assert heights == sorted(heights, reverse=True)
