"""The soak's figures as text: one line per figure, then every problem the audit found."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vidup.soak.client import CUT_MODES

if TYPE_CHECKING:  # run imports this module; only the type is needed here
    from vidup.soak.run import SoakReport


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _to_completed(report: SoakReport) -> str:
    """Seconds from an upload's last byte to its video's Completed: a component that recovers
    slowly (a back-off, a missed wake-up) shows here even when nothing is lost."""
    timed = sorted((report.completed_at[r.upload_id] - r.finished_at, r.upload_id) for r in report.records
                   if r.finished and r.upload_id in report.completed_at)
    if not timed:
        return "-"
    waits = [wait for wait, _ in timed]
    p95 = waits[min(len(waits) - 1, round(0.95 * (len(waits) - 1)))]
    return (f"median {waits[len(waits) // 2]:.1f} s, p95 {p95:.1f} s, max {waits[-1]:.1f} s "
            f"({timed[-1][1]})")


def format_report(report: SoakReport) -> str:
    recs, audit, chaos = report.records, report.audit, report.chaos
    cut = {mode: sum(r.interruptions[mode] for r in recs) for mode in CUT_MODES}
    attempts = ", ".join(f"{count} with {n}" for n, count in sorted(audit.attempts.items())) or "-"
    sizes = [s.size / 1e6 for s in report.sources]
    rows = [
        ("uploads", f"{sum(r.finished for r in recs)} finished of {len(recs)}, "
                    f"{min(sizes):.1f}-{max(sizes):.1f} MB each (+{len(report.canaries)} clean canary "
                    "uploads after the chaos)"),
        ("client cut-offs", f"{sum(cut.values())} of {sum(r.patches for r in recs)} PATCHes "
                            f"(close {cut['close']}, reset {cut['reset']}, stall {cut['stall']}); "
                            f"{sum(r.resumes for r in recs)} resumes, "
                            f"{sum(r.replica_switches for r in recs)} of them on the other replica"),
        ("server-side failures", f"{sum(r.server_failures for r in recs)} requests refused, reset or failed; "
                                 f"{sum(len(r.lost_creations) for r in recs)} creation answers lost"),
        ("kills (SIGKILL)", ", ".join(f"{kind} {chaos.kills.get(kind, 0)}" for kind in ("ingest", "worker", "operator"))
                            + f"; Redis restarts {chaos.redis_restarts}"),
        ("bytes", f"sent {_mib(sum(r.bytes_sent for r in recs))} (resends included), "
                  f"sources {_mib(sum(r.source.size for r in recs))}, stored {_mib(audit.bytes_stored)} "
                  "(canaries included), all sha256-identical"
                  if not audit.losses else f"sent {_mib(sum(r.bytes_sent for r in recs))}, see losses"),
        ("videos", f"{audit.completed} Completed, {audit.failed} Failed; attempts: {attempts}; "
                   f"{audit.repeated_runs} jobs ran to the end more than once"),
        ("last byte -> Completed", _to_completed(report)),
        ("duplicates", f"{audit.duplicates} (target 0)"),
        ("losses", f"{audit.losses} (target 0)"),
        ("orphan files", f"{audit.orphans} (target 0); {audit.unanswered_creations} empty uploads left by "
                         "lost creation answers (expected)"),
        ("crashes", f"{len(chaos.crashes)} components exited without being killed (target 0)"),
        ("stuck", "; ".join(line.splitlines()[0] for line in report.stuck) or "nothing"),
    ]
    width = max(len(name) for name, _ in rows)
    head = (f"chaos soak: seed {report.seed}, {report.seconds:.0f} s, {report.config.ingest_replicas} ingest "
            f"replicas, {report.config.workers} workers, {report.config.concurrency} clients")
    lines = [head] + [f"  {name:<{width}}  {value}" for name, value in rows]
    if report.problems:
        lines += ["problems:"] + [f"  - {p}" for p in report.problems]
    return "\n".join(lines)
