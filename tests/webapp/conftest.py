"""The web app in real Chromium (Debian's, driven by Playwright) against the whole local stack
`vidup up` starts: control plane, Redis, ingest, operator and two FFmpeg workers.

Screenshots of the main states go to ``build/screenshots/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from playwright.sync_api import Browser, Page
from webapp_support import MAX_UPLOAD, TOKEN_TTL

from vidup.localstack.docker_engine import REPO_ROOT
from vidup.localstack.stack import Stack
from vidup_ingest.webapp.routes import STATIC_DIR

SCREENSHOTS = REPO_ROOT / "build" / "screenshots"


@pytest.fixture(scope="session")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (STATIC_DIR / "index.html").is_file():
        pytest.fail("the web app is not built: `make webapp` (which `make test` runs) builds it")
    stack = Stack(tmp_path_factory.mktemp("webapp-stack"), workers=2, extra_env={
        "VIDUP_X264_PRESET": "ultrafast",
        "VIDUP_MAX_UPLOAD_SIZE": str(MAX_UPLOAD),
        "VIDUP_TOKEN_TTL_SECONDS": str(TOKEN_TTL),
    })
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser profile per test (its own sessionStorage and tus URL storage)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    yield p
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webapp-media")


@pytest.fixture(scope="session")
def sample_1080p(media: Path) -> Path:
    """Twenty seconds of 1920x1080 test pattern with a tone: three rungs, two HLS segments each."""
    path = media / "sample-1080p.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25:duration=20",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=20", "-c:v", "libx264",
         "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
         "-movflags", "+faststart", str(path)],
        check=True,
    )
    return path
