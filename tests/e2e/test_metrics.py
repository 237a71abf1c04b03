"""Prometheus metrics on the whole local stack: every component's endpoint (VIDUP_METRICS_URLS)
answers in the text format, read with the official parser, and one upload plus its transcode move
the counters and histograms by exactly what happened, with no video id in any label."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from e2e_support import make_clip, start_stack, wait_for_phase
from prometheus_client.parser import text_string_to_metric_families
from tusclient import client as tus_client

from vidup.localstack.stack import Stack

pytestmark = pytest.mark.slow

CHUNK = 256 * 1024
#: One parsed scrape: (sample name, sorted label pairs) -> value.
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`vidup up` with one worker (its metrics alone must show the encode) and x264's fastest preset."""
    yield from start_stack(tmp_path_factory.mktemp("metrics-stack"), workers=1)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seconds of 1280x720 with a tone: two rungs (720p, 480p)."""
    return make_clip(tmp_path_factory.mktemp("media") / "sample.mp4")


def scrape(url: str) -> Scrape:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def scrape_all(stack: Stack) -> dict[str, Scrape]:
    return {name: scrape(url) for name, url in stack.metrics_urls.items()}


def total(scrapes: dict[str, Scrape], component: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``, over the component's
    processes (e.g. every worker: any of them may have run the job)."""
    return sum(
        value
        for process, samples in scrapes.items() if process.startswith(component)
        for (sample, pairs), value in samples.items()
        if sample == name and labels.items() <= dict(pairs).items()
    )


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_metrics_follow_one_upload_and_transcode(stack: Stack, sample: Path) -> None:
    urls = stack.user_env()["VIDUP_METRICS_URLS"].split()
    assert sorted(stack.metrics_urls) == ["ingest-0", "operator-0", "worker-0"]
    assert urls == list(stack.metrics_urls.values())
    assert not any(url.startswith(stack.url) for url in urls)  # never the app's (ingress-routed) port

    def all_answer() -> bool:
        try:
            scrape_all(stack)
        except requests.RequestException:
            return False
        return True

    wait_for(all_answer, "every metrics endpoint to answer")
    wait_for(lambda: total(scrape_all(stack), "operator", "vidup_operator_leader") == 1, "an operator to lead")
    before = scrape_all(stack)

    size = sample.stat().st_size
    tus = tus_client.TusClient(f"{stack.url}/files/", headers={"Authorization": f"Bearer {stack.api_key}"})
    uploader = tus.uploader(str(sample), chunk_size=CHUNK, metadata={"filename": sample.name})
    uploader.upload()
    video_id = str(uploader.request.response_headers["video-location"]).rsplit("/", 1)[-1]
    obj = wait_for_phase(stack, video_id)
    assert obj["status"]["phase"] == "Completed", obj["status"]

    # The worker records its encode once the work-horse has exited, maybe just after the operator
    # saw the result; the operator's view of the phase follows its own status write.
    def settled() -> bool:
        now = scrape_all(stack)
        encodes = "vidup_worker_encodes_total"
        return (total(now, "worker", encodes) > total(before, "worker", encodes)
                and total(now, "operator", "vidup_operator_resources", phase="Completed")
                > total(before, "operator", "vidup_operator_resources", phase="Completed"))

    wait_for(settled, "the worker and the operator to count the transcode")
    after = scrape_all(stack)

    def delta(component: str, name: str, **labels: str) -> float:
        return total(after, component, name, **labels) - total(before, component, name, **labels)

    # ingest
    patches = math.ceil(size / CHUNK)
    assert delta("ingest", "vidup_ingest_uploads_created_total") == 1
    assert delta("ingest", "vidup_ingest_uploads_finished_total") == 1
    assert delta("ingest", "vidup_ingest_uploads_terminated_total") == 0
    assert delta("ingest", "vidup_ingest_received_bytes_total") == size
    assert delta("ingest", "vidup_ingest_request_duration_seconds_count",
                 route="/files/<upload_id>", method="PATCH", status="204") == patches
    assert delta("ingest", "vidup_ingest_request_duration_seconds_bucket",
                 route="/files/<upload_id>", method="PATCH", status="204", le="+Inf") == patches
    assert delta("ingest", "vidup_ingest_request_duration_seconds_sum",
                 route="/files/<upload_id>", method="PATCH", status="204") > 0
    assert delta("ingest", "vidup_ingest_request_duration_seconds_count",
                 route="/files/", method="POST", status="201") == 1
    assert after["ingest-0"][("vidup_ingest_uploads_in_progress", ())] == 0
    assert delta("ingest", "vidup_ingest_handover_failures_total") == 0
    assert delta("ingest", "vidup_ingest_rate_limited_total") == 0

    # operator
    assert delta("operator", "vidup_operator_transitions_total", from_phase="New", to_phase="Queued") == 1
    assert delta("operator", "vidup_operator_transitions_total", to_phase="Completed") == 1
    assert delta("operator", "vidup_operator_transitions_total", to_phase="Failed") == 0
    assert delta("operator", "vidup_operator_upload_to_start_seconds_count") == 1
    assert delta("operator", "vidup_operator_upload_to_start_seconds_sum") >= 0
    assert delta("operator", "vidup_operator_start_to_complete_seconds_count") == 1
    assert delta("operator", "vidup_operator_start_to_complete_seconds_sum") > 0
    assert delta("operator", "vidup_operator_retries_total") == 0
    assert delta("operator", "vidup_operator_requeues_total") == 0
    assert delta("operator", "vidup_operator_resources", phase="Completed") == 1
    assert stack.settings is not None
    queue = (("queue", stack.settings.queue),)
    assert after["operator-0"][("vidup_operator_queue_depth", queue)] == 0
    assert after["operator-0"][("vidup_operator_queue_oldest_age_seconds", queue)] == 0
    assert total(after, "operator", "vidup_operator_leader") == 1

    # worker: two rungs (720p, 480p)
    assert delta("worker", "vidup_worker_encodes_total", rungs="2", outcome="completed") == 1
    assert delta("worker", "vidup_worker_encodes_total") == 1
    assert delta("worker", "vidup_worker_encode_seconds_count", rungs="2") == 1
    assert delta("worker", "vidup_worker_encode_seconds_sum", rungs="2") > 0
    assert delta("worker", "vidup_worker_realtime_factor_count", rungs="2") == 1
    assert delta("worker", "vidup_worker_realtime_factor_sum", rungs="2") > 0
    assert delta("worker", "vidup_worker_failures_total") == 0
    assert delta("worker", "vidup_worker_ffmpeg_peak_memory_bytes_count") == 1
    assert delta("worker", "vidup_worker_ffmpeg_peak_memory_bytes_sum") > 1 << 20
    assert after["worker-0"][("vidup_worker_encodes_running", ())] == 0

    # low cardinality: the video (= upload) id is in no label, anywhere
    for process, samples in after.items():
        for name, pairs in samples:
            assert not any(video_id in value for _, value in pairs), (process, name, pairs)
