"""Hostile media: sources that would exhaust a worker's memory, CPU or disk, and files that are not
media at all, end ``Failed``/``InvalidMedia`` with a message that says why -- decided from the probe
where the headers give it away, otherwise by the limits FFmpeg runs under.

Everything runs real FFmpeg on files generated here (kilobytes to a few megabytes each). "Within
bounded time" is shown without timing anything: every job runs with a 60-second budget it would
report as a TranscodeTimeoutError, so an InvalidMedia result means it ended inside it.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import signal
import uuid
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import redis
from hostile_media import (
    clip,
    declare_duration,
    faststart_clip,
    header_then_garbage,
    many_streams,
    peak_children_rss_mib,
    png,
    png_stream_in_matroska,
    sparse,
)
from rq import Queue, Retry, Worker
from rq.job import JobStatus
from transcoder_media import make_source

from vidup.localstack.components import worker_process
from vidup.localstack.processes import wait_until
from vidup.transcode_jobs import JOB_FUNCTION, REASON_INVALID_MEDIA, TranscodeRequest, TranscodeResult
from vidup_transcoder import admission, command
from vidup_transcoder.errors import InvalidMediaError
from vidup_transcoder.job import run_transcode
from vidup_transcoder.ladder import choose_ladder
from vidup_transcoder.limits import (
    GIB,
    MIB,
    MediaLimits,
    cgroup_memory_limit,
    default_ffmpeg_memory,
    parse_bytes,
)
from vidup_transcoder.output_guard import OutputGuard, tree_bytes
from vidup_transcoder.probe import Probe
from vidup_transcoder.rlimits import ChildLimits, exceeded_limit

#: The job's own wall-clock budget in these tests: a hang would surface as TranscodeTimeoutError.
JOB_BUDGET_SECONDS = 60


# -- pure limit checks ---------------------------------------------------------------------------------


def probe_of(w: int = 1920, h: int = 1080, fps: float = 30.0, seconds: float = 60.0, streams: int = 2,
             fmt: str = "mov,mp4,m4a,3gp,3g2,mj2", average: float | None = None) -> Probe:
    rate = f"{round(fps * 1000)}/1000"
    return Probe(
        duration_seconds=seconds, stored_width=w, stored_height=h, display_width=w, display_height=h, rotation=0,
        frame_rate=fps, frame_rate_fraction=rate, video_codec="h264", pixel_format="yuv420p", has_audio=True,
        average_frame_rate=fps if average is None else average, stream_count=streams, format_name=fmt,
    )


@pytest.mark.parametrize(
    "source",
    [
        probe_of(),
        probe_of(seconds=4 * 3600, fps=60),  # 4 h of 1080p60
        probe_of(3840, 2160, fps=30, seconds=4 * 3600),  # 4 h of 4K30
        probe_of(3840, 2160, fps=60, seconds=3600),
        probe_of(7680, 4320, fps=30, seconds=3600),  # an hour of 8K30: exactly at the budget
        probe_of(8192, 4320, fps=24, seconds=600),  # DCI 8K
        probe_of(4320, 7680, fps=30, seconds=60),  # portrait 8K
        probe_of(1920, 1080, fps=240, seconds=30),  # phone slow motion
        # browser MediaRecorder WebM: no average rate, a 1 kHz timestamp grid as r_frame_rate
        probe_of(1280, 720, fps=1000, seconds=3600, fmt="matroska,webm", average=0.0),
        probe_of(1920, 1080, streams=32),
        probe_of(320, 240, fps=0.0005, seconds=4 * 3600, average=0.0005),  # two frames hours apart
        probe_of(640, 480, fps=25, seconds=10, fmt="jpeg_pipe"),  # a raw Motion JPEG stream
    ],
    ids=["1080p", "4h-1080p60", "4h-4k30", "1h-4k60", "1h-8k30", "dci-8k", "portrait-8k", "240fps", "webm",
         "32-streams", "sparse", "raw-mjpeg"],
)
def test_ordinary_sources_are_admitted(source: Probe) -> None:
    admission.check_source(source, MediaLimits(), "upload ok")


@pytest.mark.parametrize(
    ("source", "phrase"),
    [
        (probe_of(16000, 16000), "16000x16000 frames; at most 8192 pixels a side"),
        (probe_of(8000, 5000), "40.0 megapixels); at most 35.4 megapixels"),
        (probe_of(fps=100000), "declares 100000 frames per second; at most 240"),
        (probe_of(seconds=1e9), "declares a duration of 277777 h 46 min; at most 4 h"),
        (probe_of(seconds=4 * 3600 + 1), "at most 4 h are accepted (VIDUP_MAX_DURATION_SECONDS)"),
        (probe_of(streams=200), "has 200 streams; at most 32"),
        (probe_of(7680, 4320, fps=60, seconds=3600), "would decode 7,166 gigapixels"),
        (probe_of(fmt="png_pipe", fps=25, seconds=0.04), "is a still picture (png_pipe), not a video"),
    ],
    ids=["side", "pixels", "fps", "absurd-duration", "duration", "streams", "8k60-hour", "image"],
)
def test_hostile_declarations_are_refused_with_the_limit_named(source: Probe, phrase: str) -> None:
    with pytest.raises(InvalidMediaError) as caught:
        admission.check_source(source, MediaLimits(), "upload bad")
    assert phrase in str(caught.value) and str(caught.value).startswith("upload bad ")


def test_a_zero_limit_is_switched_off() -> None:
    off = MediaLimits(max_frame_pixels=0, max_frame_side=0, max_frame_rate=0, max_duration_seconds=0,
                      max_streams=0, max_decoded_gigapixels=0)
    admission.check_source(probe_of(16000, 16000, fps=100000, seconds=1e9, streams=500), off, "upload any")


def test_decoded_pixels_count_the_frames_the_fps_filter_makes() -> None:
    # two 8K frames an hour apart are sampled at 1 fps: 3600 frames are scaled from 8K
    sparse_8k = probe_of(7680, 4320, fps=2 / 3600, seconds=3600, average=2 / 3600)
    assert admission.decoded_gigapixels(sparse_8k) == pytest.approx(7680 * 4320 * 3600 / 1e9)
    assert command.output_frame_rate("1/1800") == 1
    assert command.output_frame_rate("2/5") == 1


def test_output_budget_follows_the_ladder_and_the_duration() -> None:
    ladder = choose_ladder(1920, 1080)
    limits = MediaLimits()
    one_hour = admission.output_budget_bytes(3600, ladder, True, limits)
    assert one_hour is not None
    # 1080p+720p+480p maxrates (5350+2996+1498) + 3x128k audio, twice, plus 64 MiB
    assert one_hour == 64 * MIB + int(2 * (5350 + 2996 + 1498 + 3 * 128) * 1000 / 8 * 3600)
    assert admission.output_budget_bytes(7200, ladder, True, limits) > one_hour  # type: ignore[operator]
    assert admission.output_budget_bytes(60, ladder, True, MediaLimits(output_base_bytes=0,
                                                                       output_bitrate_factor=0)) is None
    assert admission.cpu_budget_seconds(10, MediaLimits()) == 300 + 60 * 10
    assert admission.cpu_budget_seconds(10, MediaLimits(cpu_base_seconds=0, cpu_per_source_second=0)) is None


def test_a_package_much_shorter_than_declared_is_refused() -> None:
    admission.check_complete(5.6, 6.0, "upload ok")  # a last partial segment is normal
    admission.check_complete(3590.0, 3600.0, "upload ok")
    with pytest.raises(InvalidMediaError, match=r"only 2\.0 s of the 6\.0 s it declares"):
        admission.check_complete(2.0, 6.0, "upload cut")
    with pytest.raises(InvalidMediaError, match="truncated"):
        admission.check_complete(1800.0, 3600.0, "upload cut")


def test_memory_limit_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parse_bytes("4Gi") == 4 * GIB and parse_bytes("3584Mi") == 3584 * MIB and parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="byte count"):
        parse_bytes("4GB")
    # the container's limit (cgroup v2, v1) keeps FFmpeg's below it, with room for the worker
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "memory.max").write_text(f"{4 * GIB}\n")
    assert cgroup_memory_limit(tmp_path / "v2") == 4 * GIB
    (tmp_path / "v1" / "memory").mkdir(parents=True)
    (tmp_path / "v1" / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory_limit(tmp_path / "v1") is None
    (tmp_path / "v2" / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path / "v2") is None
    assert cgroup_memory_limit(tmp_path / "none") is None
    assert default_ffmpeg_memory(None) == 4 * GIB
    assert default_ffmpeg_memory(4 * GIB) == 4 * GIB - 512 * MIB
    assert default_ffmpeg_memory(16 * GIB) == 4 * GIB
    assert default_ffmpeg_memory(300 * MIB) == 256 * MIB
    # and from the environment, like every other knob
    monkeypatch.setenv("VIDUP_FFMPEG_MEMORY_LIMIT", "3Gi")
    monkeypatch.setenv("VIDUP_MAX_FRAME_RATE", "120")
    monkeypatch.setenv("VIDUP_MAX_STREAMS", "8")
    monkeypatch.setenv("VIDUP_FFMPEG_THREADS", "4")
    limits = MediaLimits.from_env()
    assert (limits.ffmpeg_memory_bytes, limits.max_frame_rate, limits.max_streams) == (3 * GIB, 120.0, 8)
    assert limits.max_duration_seconds == 4 * 3600  # unset: the default
    assert (limits.ffmpeg_thread_cap(cpus=32), limits.ffmpeg_thread_cap(cpus=4)) == (4, None)
    assert MediaLimits(ffmpeg_threads=0).ffmpeg_thread_cap(cpus=64) is None


def _chart_support() -> Any:
    path = Path(__file__).parents[1] / "chart" / "chart_support.py"
    spec = importlib.util.spec_from_file_location("chart_support_for_limits", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_charts_worker_gets_the_same_limits_as_the_code_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # the chart states every default itself (its README table shows them); they must not drift
    chart = _chart_support()
    worker = next(o for o in chart.render() if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("worker"))
    env = {e["name"]: e["value"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
    names = [n for n in env if n.startswith(("VIDUP_MAX_", "VIDUP_FFMPEG_", "VIDUP_OUTPUT_"))]
    assert len(names) == 12, names
    for name in names:
        monkeypatch.setenv(name, env[name])
    assert env["VIDUP_FFMPEG_MEMORY_LIMIT"] == "auto"
    from_chart = MediaLimits.from_env()
    assert from_chart == MediaLimits(ffmpeg_memory_bytes=from_chart.ffmpeg_memory_bytes)
    assert from_chart.ffmpeg_memory_bytes == default_ffmpeg_memory(cgroup_memory_limit())


def test_thread_cap_reaches_decoder_filters_and_every_encoder() -> None:
    plan = command.EncodePlan(Path("in"), Path("out"), choose_ladder(1920, 1080), 10, Fraction(30), True,
                              threads=8)
    argv = command.build_ffmpeg_command(plan)
    assert argv[argv.index("-filter_complex_threads") + 1] == "8"
    assert argv.index("-threads") < argv.index("-i")  # an input option: the decoder's
    assert argv.count("-threads") == 1 + 3  # and one per rendition's encoders
    no_cap = command.build_ffmpeg_command(command.EncodePlan(Path("in"), Path("out"), choose_ladder(640, 360), 10,
                                                             Fraction(30), True))
    assert "-threads" not in no_cap and "-filter_complex_threads" not in no_cap


def test_which_limit_a_child_ran_into() -> None:
    limits = ChildLimits(memory_bytes=512 * MIB, cpu_seconds=100, file_size_bytes=10 * MIB)
    assert "512 MiB of memory" in str(exceeded_limit(limits, 1, 2.0, True))
    assert "512 MiB of memory" in str(exceeded_limit(limits, 0, 2.0, True))  # frames dropped, exit 0
    assert "100 CPU-seconds" in str(exceeded_limit(limits, 255, 100.2, False))
    assert "100 CPU-seconds" in str(exceeded_limit(limits, -signal.SIGKILL, 110.0, False))
    assert exceeded_limit(limits, 255, 3.0, False) is None  # a plain SIGTERM, not the CPU limit
    assert "10 MiB output limit" in str(exceeded_limit(limits, -signal.SIGXFSZ, 1.0, False))
    assert exceeded_limit(limits, 1, 1.0, False) is None
    assert exceeded_limit(ChildLimits(), 1, 1.0, True) is None  # no limit set: a real ENOMEM, transient


def test_output_guard_adds_up_the_staging_tree(tmp_path: Path) -> None:
    (tmp_path / "720p").mkdir()
    (tmp_path / "720p" / "seg_00000.ts").write_bytes(bytes(600))
    (tmp_path / "master.m3u8").write_bytes(bytes(100))
    assert tree_bytes(tmp_path) == 700
    now = [0.0]
    guard = OutputGuard(tmp_path, 1000, "upload big", 1.0, interval=1.0, clock=lambda: now[0])
    guard.check()
    (tmp_path / "720p" / "seg_00001.ts").write_bytes(bytes(600))
    guard.check()  # within the interval: not measured again
    now[0] = 1.5
    with pytest.raises(InvalidMediaError, match=r"more than the 1000 bytes of output its declared 1\.0 s allow"):
        guard.check()
    OutputGuard(tmp_path, None, "upload any", 1.0).check(force=True)  # no budget, no check


# -- the job on hostile files, real FFmpeg ---------------------------------------------------------------


def run_job(storage: Path, name: str, limits: MediaLimits | None = None, renditions: tuple[int, ...] = (1080, 720, 480),
            segment: int = 2, preset: str = "ultrafast") -> TranscodeResult:
    req = TranscodeRequest(name, f"uploads/{name}", f"outputs/{name}", list(renditions), segment)
    return run_transcode(req, storage, f"job-{name}", None, timeout_seconds=JOB_BUDGET_SECONDS, preset=preset,
                         limits=limits or MediaLimits())


def assert_invalid(storage: Path, name: str, result: TranscodeResult, *phrases: str) -> None:
    assert (result.status, result.reason) == ("failed", REASON_INVALID_MEDIA), result
    assert f"upload {name}" in result.message
    assert not phrases or any(p in result.message for p in phrases), result.message
    assert str(storage) not in result.message, "storage paths are not for the uploader's eyes"
    outputs = storage / "outputs"
    assert not outputs.exists() or list(outputs.iterdir()) == [], "no package and no staging may be left"


def _text(path: Path) -> None:
    path.write_text("hello, this is a text file with an .mp4 name, not a video\n" * 20)


def _huge_png(path: Path) -> None:
    path.write_bytes(png(16384, 16384))


def _photo(path: Path) -> None:
    path.write_bytes(png(640, 480))


def _image_sequence(path: Path) -> None:
    path.write_bytes(png(16000, 16000) * 3)


def _forty_megapixels(path: Path) -> None:
    png_stream_in_matroska(path, [png(8000, 5000)])


def _100000_fps(path: Path) -> None:
    clip(path, size="64x64", seconds=0.01, rate=100000)


def _absurd_duration(path: Path) -> None:
    declare_duration(clip(path, container="matroska"), 1e9)


def _28_hours(path: Path) -> None:
    sparse(path, 100000)


def _hour_of_8k60(path: Path) -> None:
    declare_duration(clip(path, size="7680x4320", seconds=0.05, rate=60, container="matroska"), 3600)


def _200_streams(path: Path) -> None:
    many_streams(path, 200)


def _truncated(path: Path) -> None:
    whole = faststart_clip(path.with_name("whole.mp4"))
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _header_then_garbage(path: Path) -> None:
    header_then_garbage(faststart_clip(path.with_name("whole.mp4")), path)


def _matroska_header_then_garbage(path: Path) -> None:
    whole = clip(path.with_name("whole.mkv"), seconds=4, container="matroska")
    data = whole.read_bytes()
    path.write_bytes(data[:4000] + random.Random(17).randbytes(len(data) - 4000))


HOSTILE: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("text-named-mp4", _text, ("is not a readable video: Invalid data found when processing input",)),
    ("png-16384-square", _huge_png, ("without a picture size (Picture size 16384x16384 is invalid)",)),
    ("photo-named-mp4", _photo, ("is a still picture (png_pipe), not a video",)),
    ("16000-square-image-sequence", _image_sequence, ("has 16000x16000 frames; at most 8192 pixels a side",)),
    ("40-megapixel-frames", _forty_megapixels, ("(40.0 megapixels); at most 35.4 megapixels",)),
    ("100000-fps", _100000_fps, ("declares 100000 frames per second; at most 240",)),
    ("absurd-declared-duration", _absurd_duration, ("declares a duration of 277777 h 46 min; at most 4 h",)),
    ("28-hours-in-2-frames", _28_hours, ("declares a duration of 27 h 46 min; at most 4 h",)),
    ("hour-of-8k60", _hour_of_8k60, ("would decode 7,166 gigapixels (7680x4320, 1 h)",)),
    ("200-streams", _200_streams, ("has 200 streams; at most 32",)),
    ("truncated-faststart-mp4", _truncated, ("decodes to only 2.0 s of the 6.0 s it declares",)),
    ("mp4-header-then-garbage", _header_then_garbage, ("could not be decoded", "truncated or damaged")),
    ("mkv-header-then-garbage", _matroska_header_then_garbage, ("could not be decoded", "truncated or damaged")),
]


@pytest.mark.parametrize(("name", "build", "phrases"), HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_file_ends_invalid_media(tmp_path: Path, name: str, build: Callable[[Path], None],
                                         phrases: tuple[str, ...]) -> None:
    (tmp_path / "uploads").mkdir()
    build(tmp_path / "uploads" / name)
    result = run_job(tmp_path, name)
    assert_invalid(tmp_path, name, result, *phrases)
    assert TranscodeResult.from_dict(result.to_dict()) == result


def growing_stream(path: Path) -> Path:
    """Three 64x64 frames, then two of 16000x16000 RGBA (1 GB each decoded): the probe sees 64x64."""
    return png_stream_in_matroska(path, [png(64, 64)] * 3 + [png(16000, 16000, channels=4)] * 2)


def test_memory_limit_binds_ffmpeg_and_the_worker_stays_small(tmp_path: Path) -> None:
    # Unlimited, this file takes FFmpeg to 2 GiB resident; held to 512 MiB its allocations fail
    # and the job fails for good. Run in a fresh interpreter so the peak RSS of its children is
    # the probe's and FFmpeg's alone.
    (tmp_path / "uploads").mkdir()
    growing_stream(tmp_path / "uploads" / "grows")
    code = f"""
import json
from pathlib import Path
from vidup.transcode_jobs import TranscodeRequest
from vidup_transcoder.job import run_transcode
from vidup_transcoder.limits import MediaLimits
req = TranscodeRequest("grows", "uploads/grows", "outputs/grows", [1080, 720, 480], 2)
result = run_transcode(req, Path({str(tmp_path)!r}), "job-grows", None, timeout_seconds={JOB_BUDGET_SECONDS},
                       preset="ultrafast", limits=MediaLimits(ffmpeg_memory_bytes=512 * 1024**2))
print(json.dumps(result.to_dict()))
"""
    out, peak_mib = peak_children_rss_mib(code, {})
    result = TranscodeResult.from_dict(json.loads(out))
    assert_invalid(tmp_path, "grows", result, "decoding needed more than the 512 MiB of memory it may use")
    assert peak_mib < 512, f"an FFmpeg child reached {peak_mib:.0f} MiB resident"


def test_cpu_limit_binds_ffmpeg(tmp_path: Path) -> None:
    # the whole encode takes several CPU-seconds; FFmpeg stops on SIGXCPU after one (exit 255, which
    # only counts as the CPU limit together with the CPU time it had really used)
    make_source(tmp_path / "uploads" / "busy", size="1920x1080", seconds=4, audio=False)
    result = run_job(tmp_path, "busy", MediaLimits(cpu_base_seconds=1, cpu_per_source_second=0), preset="veryfast")
    assert_invalid(tmp_path, "busy", result, "decoding needed more than the 1 CPU-seconds it may use")


def _lying_short(path: Path) -> None:
    """30 s of video in a Matroska file that declares 1 s."""
    declare_duration(clip(path, seconds=30, container="matroska"), 1.0)


def test_file_size_limit_binds_each_output_file(tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    _lying_short(tmp_path / "uploads" / "liar")
    limits = MediaLimits(output_base_bytes=256 * 1024, output_bitrate_factor=0)
    # one 240p rung, 10-second segments: the first segment outgrows 256 KiB and FFmpeg gets SIGXFSZ
    result = run_job(tmp_path, "liar", limits, renditions=(240,), segment=10)
    assert_invalid(tmp_path, "liar", result, "an output file grew past the 256 KiB output limit")


def test_output_guard_stops_a_package_that_outgrows_its_declared_duration(tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    _lying_short(tmp_path / "uploads" / "liar")
    limits = MediaLimits(output_base_bytes=256 * 1024, output_bitrate_factor=0)
    # 2-second segments each stay under the per-file limit; together they outgrow the budget
    result = run_job(tmp_path, "liar", limits, renditions=(240,), segment=2)
    assert_invalid(tmp_path, "liar", result, "produced more than the 256 KiB of output its declared 1.0 s allow")


def test_ordinary_source_completes_under_limits_and_the_thread_cap(tmp_path: Path) -> None:
    make_source(tmp_path / "uploads" / "fine", size="640x360", seconds=3)
    limits = MediaLimits(ffmpeg_memory_bytes=1 * GIB, ffmpeg_threads=1)  # 1 thread per stage: the cap applies
    result = run_job(tmp_path, "fine", limits)
    assert result.status == "completed", result.message
    assert [r.name for r in result.renditions] == ["360p"]


# -- through RQ: a real worker process survives and does not retry ---------------------------------------

_INDEXES = itertools.count(random.randint(1_000, 9_000_000))


def test_worker_survives_hostile_uploads_and_never_retries_them(redis_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    (storage / "uploads").mkdir(parents=True)
    growing_stream(storage / "uploads" / "grows")
    many_streams(storage / "uploads" / "streams", 200)
    queue_name = f"hostile-{uuid.uuid4().hex[:8]}"
    env = {"VIDUP_REDIS_URL": redis_url, "VIDUP_QUEUE": queue_name, "VIDUP_STORAGE_DIR": str(storage),
           "VIDUP_X264_PRESET": "ultrafast", "VIDUP_FFMPEG_MEMORY_LIMIT": "512Mi",
           "VIDUP_WORKER_SWEEP_SECONDS": "1"}
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=connection)
    worker = worker_process(tmp_path, env, next(_INDEXES)).start()
    try:
        wait_until(lambda: worker.name in {w.name for w in Worker.all(queue=queue)}, 30, "the worker to register")
        jobs = []
        for name in ("grows", "streams"):
            req = TranscodeRequest(name, f"uploads/{name}", f"outputs/{name}", [1080, 720, 480], 2)
            jobs.append(queue.enqueue(JOB_FUNCTION, req.to_dict(), job_timeout=JOB_BUDGET_SECONDS,
                                      retry=Retry(max=2, interval=1)))
        ended = (JobStatus.FINISHED, JobStatus.FAILED)
        wait_until(lambda: all(j.get_status(refresh=True) in ended for j in jobs), 120, "both jobs to end",
                   interval=0.2)
        assert [j.get_status() for j in jobs] == [JobStatus.FINISHED] * 2, worker.log_tail(40)
        results = []
        for j in jobs:
            value = j.return_value(refresh=True)
            assert isinstance(value, dict), value
            results.append(TranscodeResult.from_dict(value))
        grows, streams = results
        assert (grows.reason, streams.reason) == (REASON_INVALID_MEDIA, REASON_INVALID_MEDIA)
        assert "512 MiB of memory" in grows.message and "200 streams" in streams.message
        assert all(j.retries_left == 2 for j in jobs), "a permanent failure must not spend a retry"
        worker.check_running()  # the worker (and its work-horse's parent) lived through both
    finally:
        worker.stop(grace=5)
        connection.close()
