"""The soak's judge, judged: each kind of broken promise is caught and counted where it belongs.

A soak that never fails proves nothing unless its checks would see the failures; these feed the
audit (:mod:`vidup.soak.audit`) hand-made states of storage and resources. Pure: no services.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vidup.soak import audit
from vidup.soak.client import UploadRecord
from vidup.soak.media import Source

DATA = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


def source(tmp_path: Path) -> Source:
    path = tmp_path / "source.mp4"
    path.write_bytes(DATA)
    return Source(path, 2, 0, len(DATA), hashlib.sha256(DATA).hexdigest())


def record(tmp_path: Path, index: int, upload_id: str, finished: bool = True) -> UploadRecord:
    return UploadRecord(index, source(tmp_path), upload_id=upload_id, finished=finished)


def store_upload(storage: Path, upload_id: str, data: bytes = DATA, **info: Any) -> None:
    uploads = storage / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    (uploads / upload_id).write_bytes(data)
    (uploads / f"{upload_id}.offset").write_bytes(b"\0" * 16)
    (uploads / f"{upload_id}.info").write_text(json.dumps({"id": upload_id, **info}))


def completed(name: str, renditions: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {
        "phase": "Completed", "attempts": 1, "jobId": f"vt-{name}-g1",
        "outputs": {"renditions": [{"name": f"r{i}"} for i in range(renditions)]},
    }}


def store_package(storage: Path, name: str, variants: int = 1, endlist: bool = True) -> Path:
    out = storage / "outputs" / name
    out.mkdir(parents=True)
    lines = ["#EXTM3U"]
    for i in range(variants):
        (out / f"r{i}").mkdir()
        (out / f"r{i}" / "seg0.ts").write_bytes(b"G" * 188)
        (out / f"r{i}" / "index.m3u8").write_text(
            "#EXTM3U\n#EXTINF:2.0,\nseg0.ts\n" + ("#EXT-X-ENDLIST\n" if endlist else ""))
        lines += ["#EXT-X-STREAM-INF:BANDWIDTH=1", f"r{i}/index.m3u8"]
    (out / "master.m3u8").write_text("\n".join(lines) + "\n")
    return out


def test_a_whole_run_passes(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    records = [record(tmp_path, 0, "aa"), record(tmp_path, 1, "bb")]
    resources = {"aa": completed("aa"), "bb": completed("bb")}
    for name in ("aa", "bb"):
        store_upload(storage, name, completed_at=1.0)
        store_package(storage, name)
    result = audit.Audit()
    audit.check_uploads(result, records, resources, storage)
    audit.check_resources(result, records, resources, {"aa": ["Queued", "Completed"], "bb": ["Completed"]},
                          {"aa": 1, "bb": 1})
    audit.check_outputs(result, resources, storage)
    audit.check_upload_dir(result, records, storage)
    assert result.problems == []
    assert (result.losses, result.duplicates, result.orphans, result.completed) == (0, 0, 0, 2)
    assert result.bytes_stored == 2 * len(DATA) and result.attempts == {1: 2}


def test_losses_unfinished_corrupt_missing_or_failed(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    store_upload(storage, "corrupt", DATA[:-1] + b"X")
    store_upload(storage, "failed")
    store_upload(storage, "orphaned")
    records = [record(tmp_path, 0, "gone", finished=False), record(tmp_path, 1, "corrupt"),
               record(tmp_path, 2, "failed"), record(tmp_path, 3, "orphaned")]
    resources = {"failed": {"status": {"phase": "Failed", "reason": "TranscodeFailed", "attempts": 3}}}
    result = audit.Audit()
    audit.check_uploads(result, records, resources, storage)
    assert result.losses == 4
    assert [p.split(":")[0] for p in result.problems] == [
        "LOSS upload #0 (2s/noise0, gone)", "LOSS upload #1 (2s/noise0, corrupt)",
        "LOSS upload #2 (2s/noise0, failed)", "LOSS upload #3 (2s/noise0, orphaned)"]


def test_duplicates_a_stranger_resource_a_second_completion_or_event(tmp_path: Path) -> None:
    records = [record(tmp_path, 0, "aa"), record(tmp_path, 1, "bb")]
    resources = {"aa": completed("aa"), "bb": completed("bb"), "cc": completed("cc")}
    phases = {"aa": ["Processing", "Completed", "Processing", "Completed"], "bb": ["Completed"]}
    result = audit.Audit()
    audit.check_resources(result, records, resources, phases, {"bb": 2})
    assert result.duplicates == 3, result.problems
    assert audit.times_completed(phases["aa"]) == 2


def test_missing_completed_event_is_counted_not_judged(tmp_path: Path) -> None:
    """Events are best effort (an operator killed between the status patch and the Event)."""
    result = audit.Audit()
    audit.check_resources(result, [record(tmp_path, 0, "aa")], {"aa": completed("aa")}, {"aa": ["Completed"]}, {})
    assert (result.problems, result.missing_completed_events) == ([], 1)


def test_broken_packages_and_orphan_outputs(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    resources = {"noendlist": completed("noendlist"), "short": completed("short", renditions=2),
                 "nomaster": completed("nomaster")}
    store_package(storage, "noendlist", endlist=False)
    store_package(storage, "short", variants=1)
    (storage / "outputs" / "nomaster").mkdir()
    (storage / "outputs" / ".noendlist.partial.vt-x-g1.abc").mkdir()
    (storage / "outputs" / "stranger").mkdir()
    result = audit.Audit()
    audit.check_outputs(result, resources, storage)
    assert result.orphans == 2
    broken = sorted(p.split(":")[0] for p in result.problems if p.startswith("BROKEN"))
    assert broken == ["BROKEN PACKAGE outputs/noendlist", "BROKEN PACKAGE outputs/nomaster",
                      "BROKEN PACKAGE outputs/short"]
    segment = storage / "outputs" / "noendlist" / "r0" / "seg0.ts"
    segment.unlink()
    assert any("missing" in w for w in audit.check_package(storage / "outputs" / "noendlist",
                                                           resources["noendlist"]["status"]))


def test_upload_dir_orphans_and_the_expected_leftover_of_a_lost_creation_answer(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    rec = record(tmp_path, 0, "aa")
    rec.lost_creations = ["soak-0-lost.mp4"]
    store_upload(storage, "aa", completed_at=1.0)
    store_upload(storage, "bb", b"", filename="soak-0-lost.mp4")  # created, answer lost: expected
    store_upload(storage, "cc", b"", filename="someone-else.mp4")  # nobody's: an orphan
    (storage / "uploads" / "aa.info.123.456.tmp").write_text("{}")  # a save cut short: an orphan
    result = audit.Audit()
    audit.check_upload_dir(result, [rec], storage)
    assert result.unanswered_creations == 1
    assert sorted(result.problems) == ["ORPHAN uploads/aa.info.123.456.tmp", "ORPHAN uploads/cc",
                                       "ORPHAN uploads/cc.info", "ORPHAN uploads/cc.offset"]


def test_job_runs_are_counted_from_worker_logs(tmp_path: Path) -> None:
    log = tmp_path / "worker-0.log"
    log.write_text("05:43:41 Worker worker-1: transcode: \x1b[34mJob OK\x1b[39;49;00m (vt-a-g1)\n"
                   "05:43:42 Worker worker-1: transcode: Job OK (vt-b-g1)\n")
    (tmp_path / "worker-1.log").write_text("05:44:00 Worker worker-2: transcode: Job OK (vt-a-g1)\n")
    assert audit.count_job_runs([log, tmp_path / "worker-1.log", tmp_path / "missing.log"]) == {
        "vt-a-g1": 2, "vt-b-g1": 1}
