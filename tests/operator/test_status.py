"""Status shapes: conditions per the API conventions, summaries, outputs removal paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from vidup_operator.outputs import leftovers, remove_outputs
from vidup_operator.status import ready_condition, rfc3339, summary

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_rfc3339_is_second_precision_utc() -> None:
    assert rfc3339(datetime(2026, 5, 1, 12, 0, 0, 987654, tzinfo=UTC)) == "2026-05-01T12:00:00Z"
    assert rfc3339(datetime(2026, 5, 1, 12, 0, 0)) == "2026-05-01T12:00:00Z"


def test_summary_is_tallest_first_without_duplicates() -> None:
    assert summary([480, 1080, 720, 480]) == "1080p,720p,480p"
    assert summary([]) == ""


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    first = ready_condition(None, ready=False, reason="Queued", message="q", generation=1, now=T0)
    later = ready_condition(first, ready=False, reason="Processing", message="p", generation=1,
                            now=T0 + timedelta(seconds=30))
    assert later[0]["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    assert (later[0]["reason"], later[0]["message"]) == ("Processing", "p")
    flipped = ready_condition(later, ready=True, reason="Transcoded", message="done", generation=2,
                              now=T0 + timedelta(seconds=60))
    assert flipped[0]["status"] == "True"
    assert flipped[0]["lastTransitionTime"] == "2026-05-01T12:01:00Z"
    assert flipped[0]["observedGeneration"] == 2


def test_other_condition_types_are_kept() -> None:
    other = {"type": "Other", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "t"}
    result = ready_condition([other], ready=True, reason="Transcoded", message="", generation=1, now=T0)
    assert [c["type"] for c in result] == ["Ready", "Other"]


def test_removing_outputs_takes_the_package_and_interrupted_staging_but_not_other_videos(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    mine = [outputs / "vid", outputs / ".vid.partial.vt-1-g1.abc", outputs / ".vid.old.def"]
    theirs = [outputs / "vid-2", outputs / ".vid-2.partial.vt-2-g1.abc", outputs / "vidx"]
    for path in mine + theirs:
        (path / "480p").mkdir(parents=True)
        (path / "480p" / "index.m3u8").write_text("#EXTM3U\n")
    assert sorted(leftovers(tmp_path, "vid")) == sorted(mine)
    assert sorted(remove_outputs(tmp_path, "vid")) == sorted(mine)
    assert not any(p.exists() for p in mine) and all(p.exists() for p in theirs)
    assert remove_outputs(tmp_path, "vid") == []
    assert remove_outputs(tmp_path / "nowhere", "vid") == []
