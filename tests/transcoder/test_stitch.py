"""The pure parts of the stitch: markers, concatenated playlists, the master with an audio group."""

from __future__ import annotations

from fractions import Fraction

import pytest

from vidup_transcoder.chunk_command import chunk_frames
from vidup_transcoder.master_playlist import AudioRendition, Segment, Variant, parse_media_playlist, render_master
from vidup_transcoder.stitch import (
    PieceMarker,
    PieceRendition,
    concatenate,
    render_media_playlist,
    target_duration,
)


def segs(first: int, *durations: float) -> list[Segment]:
    return [Segment(f"seg_{first + i:05d}.ts", d, 1000 + i) for i, d in enumerate(durations)]


def test_marker_round_trips() -> None:
    marker = PieceMarker("c0001", "chunk", 4.0, 4.0, 2, [PieceRendition("720p", 1280, 720, segs(2, 2.0, 2.0))],
                         "30000/1001")
    assert PieceMarker.from_json(marker.to_json()) == marker
    assert marker.rendition("720p").segments[1].uri == "seg_00003.ts"
    with pytest.raises(KeyError):
        marker.rendition("1080p")


def test_concatenation_keeps_chunk_order_and_refuses_duplicates() -> None:
    joined = concatenate([segs(0, 2.0, 2.0), segs(2, 2.002, 1.968), segs(4, 1.5)])
    assert [s.uri for s in joined] == [f"seg_{i:05d}.ts" for i in range(5)]
    with pytest.raises(ValueError, match="twice"):
        concatenate([segs(0, 2.0, 2.0), segs(1, 2.0)])


def test_media_playlist_is_vod_with_the_rounded_target() -> None:
    joined = concatenate([segs(0, 2.0, 2.4), segs(2, 2.6, 0.5)])
    text = render_media_playlist(joined)
    assert target_duration(joined) == 3
    target, pairs = parse_media_playlist(text)
    assert target == 3 and pairs == [(s.uri, s.duration) for s in joined]
    for tag in ("#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS", "#EXT-X-ENDLIST"):
        assert tag in text.splitlines()
    with pytest.raises(ValueError):
        render_media_playlist([])


def test_master_names_the_audio_group_only_with_audio() -> None:
    variants = [Variant("720p/index.m3u8", 3_000_000, 2_500_000, 1280, 720, "avc1.64001f,mp4a.40.2", 30.0)]
    text = render_master(variants, AudioRendition("audio/index.m3u8"))
    assert ('#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="Audio",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",'
            'URI="audio/index.m3u8"') in text
    assert 'CODECS="avc1.64001f,mp4a.40.2",AUDIO="aud"' in text
    silent = render_master([Variant("480p/index.m3u8", 1, 1, 854, 480, "avc1.64001f", 25.0)], None)
    assert "EXT-X-MEDIA" not in silent and "AUDIO=" not in silent


def test_chunk_frames_round_to_the_nearest_frame() -> None:
    assert chunk_frames(4.0, Fraction(30)) == 120
    assert chunk_frames(4.0, Fraction(30000, 1001)) == 120  # 119.88
    assert chunk_frames(10.0, Fraction(24000, 1001)) == 240  # 239.76
    assert chunk_frames(0.01, Fraction(1)) == 1
