"""Master playlist maths: RFC 8216 peak bit rate over runs of segments, averages, CODECS, rendering."""

from __future__ import annotations

from pathlib import Path

import m3u8

from vidup_transcoder.master_playlist import (
    Segment,
    Variant,
    average_bandwidth,
    h264_codec_string,
    parse_media_playlist,
    peak_bandwidth,
    render_master,
    write_atomically,
)

FFMPEG_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXTINF:2.000000,
seg_00000.ts
#EXTINF:2.000000,
seg_00001.ts
#EXTINF:1.000000,
seg_00002.ts
#EXT-X-ENDLIST
"""


def test_parse_media_playlist() -> None:
    assert parse_media_playlist(FFMPEG_PLAYLIST) == (
        2, [("seg_00000.ts", 2.0), ("seg_00001.ts", 2.0), ("seg_00002.ts", 1.0)]
    )


def seg(duration: float, kbytes: int) -> Segment:
    return Segment("s.ts", duration, kbytes * 1000)


def test_peak_is_the_densest_run_between_half_and_one_and_a_half_targets() -> None:
    # target 10 s: single 10 s segments qualify; a 4 s burst alone (0.4 x target) does not,
    # but together with its neighbour (4 + 10 = 14 s <= 15 s) it does.
    segments = [seg(10, 1000), seg(4, 1500), seg(10, 1000), seg(10, 2000)]
    # runs: [10]=800k, [4,10]=(1500+1000)*8/14=1428.6k, [10,4]=2500*8/14, [10]=1.6M
    assert peak_bandwidth(segments, 10) == 1_600_000
    segments = [seg(10, 1000), seg(4, 3500), seg(10, 1000)]
    assert peak_bandwidth(segments, 10) == 2_571_429  # (3500 + 1000) * 8000 / 14, rounded up


def test_short_clip_without_a_qualifying_run_uses_its_average() -> None:
    segments = [seg(3, 300)]
    assert peak_bandwidth(segments, 10) == average_bandwidth(segments) == 800_000


def test_average_bandwidth() -> None:
    assert average_bandwidth([seg(2, 500), seg(2, 1500)]) == 4_000_000
    assert average_bandwidth([]) == 0


def test_codec_string_from_sps_bytes() -> None:
    assert h264_codec_string(100, 0, 40) == "avc1.640028"
    assert h264_codec_string(66, 0xC0, 31) == "avc1.42c01f"


def test_rendered_master_parses_with_m3u8_and_carries_every_attribute(tmp_path: Path) -> None:
    variants = [
        Variant("1080p/index.m3u8", 5_600_000, 5_100_000, 1920, 1080, "avc1.640028,mp4a.40.2", 29.97),
        Variant("480p/index.m3u8", 1_600_000, 1_400_000, 854, 480, "avc1.64001f,mp4a.40.2", 29.97),
    ]
    path = tmp_path / "master.m3u8"
    write_atomically(path, render_master(variants))
    assert [p.name for p in tmp_path.iterdir()] == ["master.m3u8"]
    master = m3u8.load(str(path))
    assert master.is_variant
    first = master.playlists[0]
    assert first.uri == "1080p/index.m3u8"
    assert first.stream_info.bandwidth == 5_600_000
    assert first.stream_info.average_bandwidth == 5_100_000
    assert first.stream_info.resolution == (1920, 1080)
    assert first.stream_info.codecs == "avc1.640028,mp4a.40.2"
    assert first.stream_info.frame_rate == 29.97
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in path.read_text()
