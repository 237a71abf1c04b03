"""The end checks of a soak: what the client sent against what the stack kept and made.

Run once everything has settled (chaos stopped, every component up again, every video terminal).
Each broken promise becomes one readable line in :attr:`Audit.problems`; the counts the figures
show (losses, duplicates, orphans) are derived from the same checks, so a number and its
explanation never disagree.

* **Losses**: an upload the client could not finish, whose stored bytes differ from the source
  (sha256), or whose video is not ``Completed``.
* **Duplicates**: a resource the client did not cause, a video that *became* Completed more than
  once (the phase watch) or got more than one ``Completed`` Event, more than one package.
* **Orphans**: files in ``uploads/`` or ``outputs/`` that belong to nothing: staging or replaced
  package directories, temporary files, uploads nobody knows. An upload created by a request whose
  answer was lost (the client never learned its id) is expected, and counted apart.
* **Stuck**: a component not running, jobs left in the queue or started registry, locks held,
  FFmpeg processes still running.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidup.soak.client import UploadRecord
from vidup.storage.layout import MASTER_PLAYLIST

_JOB_OK = re.compile(r"Job OK\S*\s*\((vt-[^)]+)\)")


@dataclass
class Audit:
    problems: list[str] = field(default_factory=list)
    losses: int = 0
    duplicates: int = 0
    orphans: int = 0
    #: uploads made by a creation request whose answer the client never got (expected leftovers)
    unanswered_creations: int = 0
    completed: int = 0
    failed: int = 0
    attempts: Counter[int] = field(default_factory=Counter)
    bytes_stored: int = 0
    #: jobs a worker ran to success more than once (wasted work, not a duplicate video)
    repeated_runs: int = 0
    missing_completed_events: int = 0

    def problem(self, text: str) -> None:
        self.problems.append(text)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def times_completed(phases: list[str]) -> int:
    """How often a phase sequence (consecutive repeats folded) entered Completed."""
    return sum(1 for phase in phases if phase == "Completed")


def check_uploads(audit: Audit, records: Iterable[UploadRecord], resources: Mapping[str, dict[str, Any]],
                  storage: Path) -> None:
    """Every upload: finished, byte-identical, its one resource Completed."""
    for rec in records:
        label = f"upload #{rec.index} ({rec.source.label}, {rec.upload_id or 'never created'})"
        if not rec.finished or not rec.upload_id:
            audit.losses += 1
            audit.problem(f"LOSS {label}: the client did not finish: {rec.error}")
            continue
        data = storage / "uploads" / rec.upload_id
        if not data.is_file():
            audit.losses += 1
            audit.problem(f"LOSS {label}: no stored file")
            continue
        audit.bytes_stored += data.stat().st_size
        digest = sha256_of(data)
        if digest != rec.source.sha256:
            audit.losses += 1
            audit.problem(f"LOSS {label}: stored {data.stat().st_size} bytes with sha256 {digest[:12]}, "
                          f"the source has {rec.source.size} bytes, {rec.source.sha256[:12]}")
            continue
        body = resources.get(rec.upload_id)
        status = (body or {}).get("status") or {}
        if body is None:
            audit.losses += 1
            audit.problem(f"LOSS {label}: no VideoTranscode")
        elif status.get("phase") != "Completed":
            audit.losses += 1
            audit.problem(f"LOSS {label}: phase {status.get('phase')} ({status.get('reason')}: "
                          f"{status.get('message')}), attempts {status.get('attempts')}")


def check_resources(audit: Audit, records: Iterable[UploadRecord], resources: Mapping[str, dict[str, Any]],
                    phases: Mapping[str, list[str]], completed_events: Mapping[str, int]) -> None:
    """One resource per upload, each Completed exactly once."""
    known = {rec.upload_id for rec in records if rec.upload_id}
    for name, body in sorted(resources.items()):
        status = body.get("status") or {}
        phase = status.get("phase")
        audit.completed += phase == "Completed"
        audit.failed += phase == "Failed"
        if status.get("attempts") is not None:
            audit.attempts[int(status["attempts"])] += 1
        if name not in known:
            audit.duplicates += 1
            audit.problem(f"DUPLICATE VideoTranscode {name}: no upload of the client made it ({phase})")
            continue
        entered = times_completed(phases.get(name, []))
        events = completed_events.get(name, 0)
        if entered > 1 or events > 1:
            audit.duplicates += 1
            audit.problem(f"DUPLICATE {name}: became Completed {entered} times (phases {phases.get(name)}), "
                          f"{events} Completed events")
        if phase == "Completed" and events == 0:
            audit.missing_completed_events += 1


def check_package(out_dir: Path, status: Mapping[str, Any]) -> list[str]:
    """What is wrong with one video's HLS package (empty when it is whole)."""
    master = out_dir / MASTER_PLAYLIST
    if not master.is_file():
        return [f"no {MASTER_PLAYLIST}"]
    wrong: list[str] = []
    variants = [line.strip() for line in master.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    expected = len(((status.get("outputs") or {}).get("renditions")) or [])
    if not variants or len(variants) != expected:
        wrong.append(f"{len(variants)} variants in the master playlist, {expected} in the status")
    for uri in variants:
        playlist = out_dir / uri
        if not playlist.is_file():
            wrong.append(f"missing {uri}")
            continue
        text = playlist.read_text()
        if "#EXT-X-ENDLIST" not in text:
            wrong.append(f"{uri} has no ENDLIST")
        segments = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        missing = [s for s in segments if not (playlist.parent / s).is_file()]
        if not segments or missing:
            wrong.append(f"{uri}: {len(segments)} segments, missing {missing[:3]}")
    return wrong


def check_outputs(audit: Audit, resources: Mapping[str, dict[str, Any]], storage: Path) -> None:
    """One whole package per Completed video; nothing else in ``outputs/``."""
    outputs = storage / "outputs"
    entries = sorted(outputs.iterdir()) if outputs.is_dir() else []
    for entry in entries:
        if entry.name not in resources:
            audit.orphans += 1
            audit.problem(f"ORPHAN outputs/{entry.name}")
    for name, body in sorted(resources.items()):
        status = body.get("status") or {}
        if status.get("phase") != "Completed":
            continue
        wrong = check_package(outputs / name, status)
        if wrong:
            audit.problem(f"BROKEN PACKAGE outputs/{name}: {'; '.join(wrong)}")


def _upload_files(upload_id: str) -> set[str]:
    return {upload_id, f"{upload_id}.info", f"{upload_id}.offset"}


def check_upload_dir(audit: Audit, records: Iterable[UploadRecord], storage: Path) -> None:
    """Only the client's uploads, plus those of creation answers that were lost, in ``uploads/``."""
    uploads = storage / "uploads"
    records = list(records)
    expected: set[str] = set()
    for rec in records:
        if rec.upload_id:
            expected |= _upload_files(rec.upload_id)
    unanswered = {name for rec in records for name in rec.lost_creations}
    names = sorted(p.name for p in uploads.iterdir()) if uploads.is_dir() else []
    for name in names:
        if name in expected or not name.endswith(".info"):
            continue
        upload_id = name.removesuffix(".info")
        try:
            info = json.loads((uploads / name).read_text())
        except (OSError, ValueError):
            continue
        if info.get("filename") in unanswered and not info.get("completed_at"):
            audit.unanswered_creations += 1
            expected |= _upload_files(upload_id)
    for name in names:
        if name not in expected:
            audit.orphans += 1
            audit.problem(f"ORPHAN uploads/{name}")


def count_job_runs(log_paths: Iterable[Path]) -> Counter[str]:
    """Successful runs per RQ job id, from every worker's log."""
    runs: Counter[str] = Counter()
    for path in log_paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        runs.update(_JOB_OK.findall(text))
    return runs
