"""The progress parser fed with FFmpeg's recorded ``-progress`` output."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidup_transcoder.progress import ProgressParser, parse_out_time

RECORDED = (Path(__file__).parent / "data" / "progress-5s.txt").read_text().splitlines()


def run(parser: ProgressParser, lines: list[str], step: float) -> list[int]:
    out = []
    for i, line in enumerate(lines):
        value = parser.feed(line, now=i * step)
        if value is not None:
            out.append(value)
    return out


def test_recorded_output_gives_increasing_percentages_ending_at_100() -> None:
    values = run(ProgressParser(duration_seconds=5.0, min_interval=0.0), RECORDED, step=0.0)
    assert values == [1, 22, 37, 58, 76, 94, 100]


def test_rate_limit_drops_updates_but_never_the_end() -> None:
    # all lines arrive within 0.1 s: only the first update and the final 100 get through
    values = run(ProgressParser(duration_seconds=5.0, min_interval=0.25), RECORDED, step=0.001)
    assert values == [1, 100]


def test_never_more_than_one_update_per_percent() -> None:
    lines = []
    for us in range(0, 10_000_000, 10_000):  # 1000 blocks, 10 ms of video each
        lines += [f"out_time_us={us}", "progress=continue"]
    lines.append("progress=end")
    values = run(ProgressParser(duration_seconds=10.0, min_interval=0.0), lines, step=0.0)
    assert values == [*list(range(0, 100)), 100]


def test_out_time_ms_is_microseconds_and_out_time_text_is_understood() -> None:
    assert parse_out_time("out_time_ms", "2500000") == 2.5
    assert parse_out_time("out_time_us", "N/A") is None
    assert parse_out_time("out_time", "00:01:02.500000") == pytest.approx(62.5)
    assert parse_out_time("out_time", "-00:00:00.040000") == 0.0
    assert parse_out_time("frame", "12") is None


def test_time_past_duration_is_capped_below_100_until_end() -> None:
    p = ProgressParser(duration_seconds=2.0, min_interval=0.0)
    assert run(p, ["out_time_us=9000000", "progress=continue", "progress=end"], step=1.0) == [99, 100]


def test_garbage_and_zero_duration() -> None:
    p = ProgressParser(duration_seconds=0.0, min_interval=0.0)
    assert run(p, ["", "nonsense", "out_time_us=100", "progress=continue", "progress=end"], 1.0) == [0, 100]
