"""The autoscaler's rule, pure (vidup_operator.autoscaler.decide): one worker per queued or running
job within the bounds, up at once, down only after the quiet period, never below the running jobs;
and its knobs refuse impossible bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidup_operator.autoscaler import Backlog, Move, decide, wanted
from vidup_operator.config import AutoscaleConfig

QUIET = 120.0


@st.composite
def situations(draw: st.DrawFn) -> tuple[Backlog, int, int, int, float]:
    low = draw(st.integers(0, 5))
    high = draw(st.integers(max(1, low), 12))
    backlog = Backlog(queued=draw(st.integers(0, 40)), running=draw(st.integers(0, 15)))
    current = draw(st.integers(0, 20))
    quiet_for = draw(st.floats(0, 2 * QUIET, allow_nan=False))
    return backlog, current, low, high, quiet_for


@given(situations())
def test_the_result_stays_within_the_bounds(case: tuple[Backlog, int, int, int, float]) -> None:
    backlog, current, low, high, quiet_for = case
    assert low <= decide(backlog, current, low, high, quiet_for, QUIET).replicas <= high


@given(situations())
def test_never_below_the_running_jobs(case: tuple[Backlog, int, int, int, float]) -> None:
    backlog, current, low, high, quiet_for = case
    assert decide(backlog, current, low, high, quiet_for, QUIET).replicas >= min(backlog.running, high)


@given(situations())
def test_up_is_at_once_and_down_only_after_the_quiet_period(case: tuple[Backlog, int, int, int, float]) -> None:
    backlog, current, low, high, quiet_for = case
    want = wanted(backlog, low, high)
    scale = decide(backlog, current, low, high, quiet_for, QUIET)
    if current > high:
        assert (scale.replicas, scale.move) == (high, Move.DOWN)  # the bounds are not subject to quiet
    elif want > current:
        assert (scale.replicas, scale.move) == (want, Move.UP)
    elif want == current:
        assert (scale.replicas, scale.move) == (current, Move.HOLD)
    elif quiet_for < QUIET:
        assert (scale.replicas, scale.move) == (current, Move.WAIT)
    else:
        assert (scale.replicas, scale.move) == (want, Move.DOWN)


@given(situations())
def test_a_decision_is_stable_once_applied(case: tuple[Backlog, int, int, int, float]) -> None:
    """Applied and looked at again with the same backlog, nothing moves (no flapping)."""
    backlog, current, low, high, quiet_for = case
    first = decide(backlog, current, low, high, quiet_for, QUIET)
    if first.move in (Move.UP, Move.DOWN) and low <= first.replicas:
        again = decide(backlog, first.replicas, low, high, 0.0, QUIET)
        assert again.replicas == first.replicas
        assert again.move in (Move.HOLD, Move.WAIT) or first.replicas == high


def test_each_job_wants_a_worker_up_to_the_maximum() -> None:
    assert decide(Backlog(12, 0), 1, 1, 4, 0, QUIET).replicas == 4
    assert decide(Backlog(2, 1), 1, 1, 4, 0, QUIET).replicas == 3
    assert decide(Backlog(0, 0), 0, 0, 4, 0, QUIET).replicas == 0  # scaled to zero stays there
    assert decide(Backlog(1, 0), 0, 0, 4, 0, QUIET).replicas == 1  # and one upload wakes a worker


def test_scale_down_waits_for_the_quiet_period_and_keeps_the_busy_workers() -> None:
    idle_but_fresh = decide(Backlog(0, 2), 4, 1, 4, QUIET - 1, QUIET)
    assert (idle_but_fresh.replicas, idle_but_fresh.move) == (4, Move.WAIT)
    assert "1s more of quiet" in idle_but_fresh.reason
    quiet = decide(Backlog(0, 2), 4, 1, 4, QUIET, QUIET)
    assert (quiet.replicas, quiet.move) == (2, Move.DOWN)  # two jobs still run: two workers stay
    assert "0 queued + 2 running" in quiet.reason
    assert decide(Backlog(0, 0), 4, 1, 4, QUIET, QUIET).replicas == 1


def test_out_of_bounds_replicas_come_back_at_once() -> None:
    assert decide(Backlog(0, 0), 0, 1, 4, 0, QUIET).replicas == 1
    assert decide(Backlog(9, 0), 9, 1, 4, 0, QUIET).replicas == 4


@pytest.mark.parametrize(("env", "complaint"), [
    ({"VIDUP_AUTOSCALE_MIN": "5", "VIDUP_AUTOSCALE_MAX": "4"}, "0 <= min <= max"),
    ({"VIDUP_AUTOSCALE_MIN": "-1"}, "0 <= min <= max"),
    ({"VIDUP_AUTOSCALE_MIN": "0", "VIDUP_AUTOSCALE_MAX": "0"}, "max >= 1"),
    ({"VIDUP_AUTOSCALE_INTERVAL_SECONDS": "0"}, "INTERVAL"),
])
def test_impossible_knobs_fail_the_start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], complaint: str) -> None:
    monkeypatch.setenv("VIDUP_AUTOSCALE_DEPLOYMENT", "vidup-worker")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=complaint):
        AutoscaleConfig.from_env()


def test_knobs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not AutoscaleConfig.from_env().enabled
    for name, value in {"VIDUP_AUTOSCALE_DEPLOYMENT": "vidup-worker", "VIDUP_AUTOSCALE_MIN": "1",
                        "VIDUP_AUTOSCALE_MAX": "4", "VIDUP_AUTOSCALE_QUIET_SECONDS": "20",
                        "VIDUP_AUTOSCALE_INTERVAL_SECONDS": "2"}.items():
        monkeypatch.setenv(name, value)
    assert AutoscaleConfig.from_env() == AutoscaleConfig("vidup-worker", 1, 4, 20.0, 2.0)
