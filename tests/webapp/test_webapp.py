"""The web app, in Debian's Chromium, against the real stack: sign in, upload through the page's
tus client, watch the live status, play with hls.js and switch renditions, resume an interrupted
upload after a reload, and the error states a person meets (wrong key, not a video, too large)."""

from __future__ import annotations

import itertools
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, Request, Response, expect
from webapp_support import MAX_UPLOAD

from vidup.localstack.stack import Stack
from vidup.storage.layout import upload_relpath

pytestmark = pytest.mark.slow

#: Seconds a transcode of the sample may take on a 2-core machine (ultrafast preset).
TRANSCODE_TIMEOUT_MS = 300_000

#: Records every status text and progress value each card shows, as the page changes them, so a
#: test can check what a person saw between two polls (phases and progress that moved).
RECORDER = """
window.__vidupSeen = [];
const record = () => {
  for (const card of document.querySelectorAll('[data-testid=video-card]')) {
    const status = card.querySelector('[data-testid=video-status]');
    const bars = [...card.querySelectorAll('progress')].map((p) => Number(p.value));
    const entry = [card.dataset.filename || '', status ? status.textContent.trim() : '', bars.join(',')];
    const last = window.__vidupSeen[window.__vidupSeen.length - 1];
    if (!last || last.join('|') !== entry.join('|')) window.__vidupSeen.push(entry);
  }
};
document.addEventListener('DOMContentLoaded', () => {
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                      attributes: true});
});
"""


def sign_in(page: Page, stack: Stack, key: str | None = None) -> None:
    page.goto(stack.url + "/")
    page.get_by_test_id("api-key").fill(key if key is not None else stack.api_key)
    page.get_by_test_id("sign-in").click()


def signed_in(page: Page) -> None:
    expect(page.get_by_test_id("file-input")).to_be_enabled(timeout=15_000)


def card(page: Page, filename: str) -> Any:
    return page.locator(f'[data-testid=video-card][data-filename="{filename}"]').first


def server_offset(stack: Stack, upload_url: str) -> int:
    r = requests.head(upload_url, headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {stack.api_key}"},
                      timeout=30)
    assert r.status_code == 200, r.text
    return int(r.headers["Upload-Offset"])


def upload_path(stack: Stack, upload_url: str) -> Path:
    assert stack.settings is not None
    return stack.settings.storage_dir / upload_relpath(upload_url.rstrip("/").rsplit("/", 1)[1])


def stored(stack: Stack, upload_url: str) -> int:
    """Bytes of the upload the ingest has written so far (read from storage, not asked over HTTP)."""
    try:
        return upload_path(stack, upload_url).stat().st_size
    except FileNotFoundError:
        return 0


def test_signed_out_page_is_labelled_and_a_wrong_key_uploads_nothing(
        web_stack: Stack, page: Page, screenshots: Path) -> None:
    files_requests: list[str] = []
    page.on("request", lambda r: files_requests.append(r.url) if "/files/" in r.url else None)
    page.goto(web_stack.url + "/")
    expect(page.get_by_label("API key")).to_be_visible()
    # every form control and button has an accessible name
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, button, select')]
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                        && !el.getAttribute('aria-labelledby') && !(el.textContent || '').trim())
        .map((el) => el.outerHTML)""")
    assert unnamed == []
    page.screenshot(path=screenshots / "signed-out.png", full_page=True)

    # keyboard only: focus the field, type, Enter
    page.get_by_test_id("api-key").focus()
    page.keyboard.type("vk_this-is-not-a-key")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert").filter(has_text=re.compile("key", re.I))
    expect(alert).to_be_visible()
    expect(page.get_by_test_id("file-input")).not_to_be_enabled()
    assert not page.evaluate("sessionStorage.length && Object.values(sessionStorage).join().includes('vk_this')")
    assert files_requests == []
    assert page.get_by_test_id("video-card").count() == 0


def test_upload_watch_play_and_switch_to_480p(web_stack: Stack, browser: Browser, sample_1080p: Path,
                                              screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.add_init_script(RECORDER)
    page = context.new_page()
    requests_seen: list[tuple[float, str]] = []
    statuses: list[int] = []
    page.on("request", lambda r: requests_seen.append((time.monotonic(), r.url)))
    page.on("response", lambda r: statuses.append(r.status) if "/api/" in r.url or "/videos" in r.url else None)
    try:
        sign_in(page, web_stack)
        signed_in(page)
        page.get_by_test_id("file-input").set_input_files(sample_1080p)
        video = card(page, sample_1080p.name)
        expect(video).to_be_visible()
        status = video.get_by_test_id("video-status")
        expect(status).to_have_text(re.compile("Pending|Queued|Processing|Completed"), timeout=60_000)
        expect(status).to_have_text("Processing", timeout=TRANSCODE_TIMEOUT_MS)
        page.screenshot(path=screenshots / "processing.png", full_page=True)
        expect(status).to_have_text("Completed", timeout=TRANSCODE_TIMEOUT_MS)
        assert video.get_attribute("data-video-id")

        seen = [tuple(e) for e in page.evaluate("window.__vidupSeen") if e[0] == sample_1080p.name]
        phases = [s for _, s, _ in seen]
        assert phases[0] == "Uploading" and phases[-1] == "Completed", phases
        assert "Processing" in phases
        progress = [[int(v) for v in bars.split(",") if v] for _, s, bars in seen if s == "Processing"]
        transcode = [max(bars) for bars in progress if bars]
        assert len(set(transcode)) >= 2 and transcode == sorted(transcode), f"progress did not go up: {transcode}"

        # play it from its card: the poster first, then hls.js playback of a ladder rung
        video.get_by_role("button", name=re.compile("play", re.I)).click()
        player = page.get_by_test_id("player")
        expect(player).to_have_attribute("poster", re.compile(r"/poster\.jpg$"))
        page.wait_for_function("() => document.querySelector('[data-testid=player]').currentTime > 2",
                               timeout=60_000)
        height = page.evaluate("document.querySelector('[data-testid=player]').videoHeight")
        assert height in (1080, 720, 480)
        page.screenshot(path=screenshots / "playing.png", full_page=True)

        # the quality menu lists the ladder and really switches
        quality = page.get_by_test_id("quality")
        labels = [t.strip() for t in quality.locator("option").all_text_contents()]
        assert labels == ["Auto", "1080p", "720p", "480p"], labels
        chosen_at = time.monotonic()
        quality.select_option(label="480p")
        page.wait_for_function("() => document.querySelector('[data-testid=player]').videoHeight === 480",
                               timeout=60_000)
        after = [url for t, url in requests_seen if t >= chosen_at]
        assert any("/480p/" in url and url.endswith(".ts") for url in after), after
        # the short-lived browser token was renewed on the way, never refused
        assert sum(1 for _, url in requests_seen if url.endswith("/api/uploads")) >= 2
        assert 401 not in statuses
    finally:
        context.close()


def test_a_chunked_video_plays_across_its_chunk_joins_with_its_audio_group(
    web_stack: Stack, browser: Browser, sample_chunked: Path,
) -> None:
    """Four chunks stitched into one package, the sound as an EXT-X-MEDIA audio rendition: hls.js
    plays past the first join (10 s) with the audio decoded, as from a single-job encode."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    try:
        sign_in(page, web_stack)
        signed_in(page)
        page.get_by_test_id("file-input").set_input_files(sample_chunked)
        video = card(page, sample_chunked.name)
        expect(video.get_by_test_id("video-status")).to_have_text("Completed", timeout=TRANSCODE_TIMEOUT_MS)
        document = requests.get(f"{web_stack.url}/videos/{video.get_attribute('data-video-id')}",
                                headers={"Authorization": f"Bearer {web_stack.api_key}"}, timeout=30).json()
        assert document["chunks"] == {"total": 4, "completed": 4}, document
        video.get_by_role("button", name=re.compile("play", re.I)).click()
        page.wait_for_function("() => document.querySelector('[data-testid=player]').currentTime > 12",
                               timeout=90_000)
        player = "document.querySelector('[data-testid=player]')"
        assert page.evaluate(f"{player}.error") is None
        assert page.evaluate(f"{player}.webkitAudioDecodedByteCount") > 0, "no audio was decoded"
        assert any("/audio/seg_" in url for url in urls), [u for u in urls if ".ts" in u]
        assert any("/seg_00001.ts" in url and "/audio/" not in url for url in urls)  # past the first join
    finally:
        context.close()


def test_an_upload_cut_by_a_reload_resumes_where_the_server_stopped(
        web_stack: Stack, browser: Browser, media: Path, screenshots: Path) -> None:
    data = os.urandom(24 * 1024 * 1024)
    source = media / "interrupted.bin"
    source.write_bytes(data)
    context = browser.new_context()
    page = context.new_page()
    upload_urls: list[str] = []
    patches: list[tuple[int, Response]] = []  # (page load number, answered PATCH)
    failed: list[tuple[int, Request]] = []
    load = [0]
    page.on("response", lambda r: upload_urls.append(r.headers["location"])
            if r.request.method == "POST" and r.status == 201 and "/files/" in r.url else None)
    page.on("response", lambda r: patches.append((load[0], r)) if r.request.method == "PATCH" else None)
    page.on("requestfailed", lambda r: failed.append((load[0], r)) if r.method == "PATCH" else None)
    try:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                      "uploadThroughput": 3 * 1024 * 1024})
        sign_in(page, web_stack)
        signed_in(page)
        page.get_by_test_id("file-input").set_input_files(source)
        # watch the bytes land in storage, not HEAD: a HEAD would take the upload over from the browser
        assert web_stack.settings is not None
        deadline = time.monotonic() + 60
        while not upload_urls or stored(web_stack, upload_urls[0]) < 8 * 1024 * 1024:
            assert time.monotonic() < deadline, f"the upload did not progress: {upload_urls}"
            page.wait_for_timeout(100)  # lets Playwright deliver the page's events
        page.screenshot(path=screenshots / "uploading.png", full_page=True)
        url = upload_urls[0]

        page.reload()  # cuts the PATCH in flight
        kept = server_offset(web_stack, url)
        while (now := server_offset(web_stack, url)) != kept:  # the server settles what it stored
            kept = now
            page.wait_for_timeout(500)
        assert 8 * 1024 * 1024 <= kept < len(data)
        signed_in(page)  # the key is still in this tab's sessionStorage
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                      "uploadThroughput": -1})
        load[0] = 1  # the cut PATCH has failed by now; nothing is sent until the file is picked again
        page.get_by_test_id("file-input").set_input_files(source)
        expect(card(page, source.name).get_by_test_id("video-status")).not_to_have_text(
            re.compile("Uploading|Paused"), timeout=60_000)

        assert len(upload_urls) == 1, "the reload started a new upload instead of resuming"
        assert server_offset(web_stack, url) == len(data)
        # after the reload: PATCHes from the server's offset, each answered, back to back, so every
        # remaining byte was sent exactly once (a chunk sent twice would restart below an answer)
        resumed = [r for n, r in patches if n == 1]
        assert [r for n, r in failed if n == 1] == []
        ranges = [(int(r.request.headers["upload-offset"]), int(r.headers["upload-offset"])) for r in resumed]
        assert all(r.status == 204 for r in resumed)
        assert ranges[0][0] == kept and ranges[-1][1] == len(data), ranges
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(ranges)), ranges
        assert upload_path(web_stack, url).read_bytes() == data
    finally:
        context.close()


def test_a_file_that_is_not_a_video_shows_invalid_media(web_stack: Stack, page: Page, media: Path) -> None:
    source = media / "notes.mp4"
    source.write_bytes(b"these are meeting notes, not a video\n" * 20_000)
    sign_in(page, web_stack)
    signed_in(page)
    page.get_by_test_id("file-input").set_input_files(source)
    video = card(page, source.name)
    expect(video.get_by_test_id("video-status")).to_have_text("Failed", timeout=TRANSCODE_TIMEOUT_MS)
    expect(video).to_contain_text("InvalidMedia")


def test_a_file_over_the_limit_is_refused_with_a_clear_message(web_stack: Stack, page: Page, media: Path) -> None:
    source = media / "huge.mp4"
    with source.open("wb") as f:
        f.truncate(MAX_UPLOAD + 1)
    sign_in(page, web_stack)
    signed_in(page)
    page.get_by_test_id("file-input").set_input_files(source)
    expect(card(page, source.name)).to_contain_text(re.compile(r"larger than|too large|limit", re.I))


def test_phone_width_has_no_horizontal_scroll(web_stack: Stack, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        sign_in(page, web_stack)
        signed_in(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
    finally:
        context.close()
