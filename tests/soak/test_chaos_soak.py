"""The bounded chaos soak: tens of interrupted, resumed uploads across two ingest replicas while
ingest replicas, workers and the operator are SIGKILLed and restarted at random and Redis is
restarted (empty) once; then every upload must be byte-identical, every video Completed exactly
once with one package, nothing orphaned, nothing stuck. The machinery is :mod:`vidup.soak`, which
``bench/soak`` runs for longer. ``VIDUP_SOAK_SEED`` replays a run's random choices (the timing of
a run is never quite the same)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vidup.soak.chaos import KINDS
from vidup.soak.client import CUT_MODES
from vidup.soak.run import SoakConfig, format_report, run_soak

pytestmark = pytest.mark.slow


def test_uploads_and_videos_survive_random_kills_of_every_component(tmp_path: Path) -> None:
    seed = os.environ.get("VIDUP_SOAK_SEED")
    config = SoakConfig(uploads=16, concurrency=4, kill_interval=(4.0, 8.0), redis_restarts=1,
                        seed=int(seed) if seed else None)
    report = run_soak(config, tmp_path / "soak")
    summary = format_report(report) + "\nchaos timeline:\n" + "\n".join(report.chaos.timeline)
    print(summary)
    assert not report.problems, summary
    assert (report.audit.duplicates, report.audit.losses, report.audit.orphans) == (0, 0, 0), summary
    assert report.audit.completed == len(report.records) + len(report.canaries), summary
    # the run really was rough: every kind of kill, the Redis restart, every kind of client cut-off
    assert all(report.chaos.kills[kind] >= 1 for kind in KINDS), summary
    assert report.chaos.redis_restarts == 1, summary
    assert all(sum(r.interruptions[mode] for r in report.records) > 0 for mode in CUT_MODES), summary
    assert sum(r.replica_switches for r in report.records) > 0, summary
