"""Every image the cluster runs, made here (nothing is pulled): the pod sandbox's pause image, the
cluster's own CoreDNS and Traefik, and the images the Helm chart defaults to (vidup's three and
Redis), built by the project's private Docker engine and loaded into the node's containerd under
exactly the chart's default names, the way ``kind load docker-image`` does.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from vidup.localcluster import runtime
from vidup.localstack import binaries
from vidup.localstack.binaries import NodeBinaries
from vidup.localstack.docker_engine import REPO_ROOT, DockerEngine

CHART_DIR = REPO_ROOT / "charts" / "vidup"
COREDNS_IMAGE = f"vidup.local/coredns:{binaries.COREDNS_VERSION}"
TRAEFIK_IMAGE = f"vidup.local/traefik:{binaries.TRAEFIK_VERSION}"
#: vidup's components and their Dockerfiles (build context: the repository root).
DOCKERFILES = {
    "ingest": "ingest/Dockerfile",
    "operator": "operator/Dockerfile",
    "worker": "transcoder-image/Dockerfile",
}
PAUSE_SOURCE = Path(__file__).with_name("pause.c")

#: Redis from Debian's package, shaped like the official image where the chart relies on it:
#: ``redis-server`` on PATH, the redis user as uid/gid 999, data in /data.
REDIS_DOCKERFILE = """FROM debian:bookworm-slim
RUN groupadd --system --gid 999 redis \\
 && useradd --system --uid 999 --gid redis --home-dir /data --shell /usr/sbin/nologin redis \\
 && apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
"""


def chart_values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART_DIR / "values.yaml").read_text()))


def app_version() -> str:
    return str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"])


def chart_default_images() -> dict[str, str]:
    """``{component: image}`` as the chart's default values name them (vidup's three and Redis)."""
    values = chart_values()
    images = {}
    for component in (*DOCKERFILES, "redis"):
        image = values[component]["image"]
        images[component] = f"{image['repository']}:{image.get('tag') or app_version()}"
    return images


@contextmanager
def _context(files: dict[str, bytes | Path], dockerfile: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vidup-image-") as tmp:
        root = Path(tmp)
        (root / "Dockerfile").write_text(dockerfile)
        for name, content in files.items():
            if isinstance(content, Path):
                shutil.copy(content, root / name)
            else:
                (root / name).write_bytes(content)
        yield root


def _scratch_image(engine: DockerEngine, tag: str, binary: Path, name: str, user: str) -> None:
    dockerfile = f'FROM scratch\nCOPY {name} /{name}\nUSER {user}\nENTRYPOINT ["/{name}"]\n'
    with _context({name: binary}, dockerfile) as context:
        engine.build(context / "Dockerfile", tag, context)


def build_pause(engine: DockerEngine) -> None:
    """A static pause binary (680 KB) in a scratch image: the sandbox every pod starts with."""
    with tempfile.TemporaryDirectory(prefix="vidup-pause-") as tmp:
        binary = Path(tmp) / "pause"
        subprocess.run(["gcc", "-static", "-Os", "-o", str(binary), str(PAUSE_SOURCE)], check=True)
        _scratch_image(engine, runtime.PAUSE_IMAGE, binary, "pause", "65535:65535")


def build_all(engine: DockerEngine, tools: NodeBinaries) -> list[str]:
    """Build (layer cache makes repeats quick) every image the cluster loads; returns their tags."""
    engine.ensure_base_image()
    build_pause(engine)
    _scratch_image(engine, COREDNS_IMAGE, tools.coredns, "coredns", "0:0")
    _scratch_image(engine, TRAEFIK_IMAGE, tools.traefik, "traefik", "65532:65532")
    defaults = chart_default_images()
    with _context({}, REDIS_DOCKERFILE) as context:
        engine.build(context / "Dockerfile", defaults["redis"], context)
    for component, dockerfile in DOCKERFILES.items():
        engine.build(REPO_ROOT / dockerfile, defaults[component])
    return [runtime.PAUSE_IMAGE, COREDNS_IMAGE, TRAEFIK_IMAGE, *defaults.values()]


def load(engine: DockerEngine, tags: list[str], paths: runtime.RuntimePaths, tools: NodeBinaries) -> None:
    """``docker save | ctr images import``: shared layers travel once; names are kept as tagged."""
    save = subprocess.Popen(["docker", "-H", engine.host, "save", *tags], stdout=subprocess.PIPE)
    try:
        runtime.ctr(paths, tools, "images", "import", "-", stdin=save.stdout)
    finally:
        if save.stdout:
            save.stdout.close()
        if save.wait() != 0:
            raise RuntimeError(f"docker save {' '.join(tags)} failed")
