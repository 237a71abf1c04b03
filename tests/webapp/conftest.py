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
        # 10 s chunks from 30 s on: the 20 s sample is one job, sample_chunked is four chunks
        "VIDUP_CHUNK_SECONDS": "10",
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


def tone_clip(path: Path, size: str, seconds: int) -> Path:
    """testsrc2 with a 440 Hz tone, H.264 + AAC, moov first (as a browser upload would be)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}", "-c:v", "libx264",
         "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
         "-movflags", "+faststart", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="session")
def sample_1080p(media: Path) -> Path:
    """Twenty seconds of 1920x1080 test pattern with a tone: three rungs, two HLS segments each."""
    return tone_clip(media / "sample-1080p.mp4", "1920x1080", 20)


@pytest.fixture(scope="session")
def sample_chunked(media: Path) -> Path:
    """Forty seconds of 854x480 with a tone: encoded as four 10 s chunks and an audio rendition."""
    return tone_clip(media / "sample-chunked.mp4", "854x480", 40)
