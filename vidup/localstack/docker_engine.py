"""A private Docker engine and locally made base image, so the project's Dockerfiles are built and
run for real on machines without an image registry.

The engine gets its own socket and exec root per run; its data root (images, layer cache) is kept
in the vidup cache so the base image and build layers are made once per machine. When
``debian:bookworm-slim`` is missing (no registry to pull from) it is made with debootstrap from the
machine's own Debian mirror; on a user's machine the same Dockerfiles simply pull the official one.
A base made here also carries this machine's certificate authorities (and pip's pointer to them),
so that builds behind a TLS-inspecting egress proxy reach PyPI exactly as the host does.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vidup.localstack import binaries
from vidup.localstack.processes import ManagedProcess, wait_until

BASE_IMAGE = "debian:bookworm-slim"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The one path containerd's runc shim does not take from the configuration: its sockets. Both the
#: Docker engine's containerd and the local cluster's leave them there.
SHIM_SOCKET_DIR = Path("/run/containerd/s")


def debian_mirror() -> str:
    """The mirror apt already uses here (deb822 or one-line sources), else Debian's default."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.MULTILINE) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+bookworm", text, re.MULTILINE
        )
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


@dataclass
class DockerEngine:
    run_dir: Path
    process: ManagedProcess | None = None

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def docker(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", self.host, *args], capture_output=True, text=True, check=check, timeout=timeout
        )

    def start(self) -> DockerEngine:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise RuntimeError("dockerd is not installed (apt-get install docker.io)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data_root = binaries.cache_root() / "docker-data"
        argv = [
            dockerd, "-H", self.host, "--data-root", str(data_root), "--exec-root", str(self.run_dir / "exec"),
            "--pidfile", str(self.run_dir / "dockerd.pid"), "--bridge", "none", "--iptables=false",
            "--ip-forward=false",  # leave the host's sysctls alone (builds use the host network)
        ]
        self.process = ManagedProcess("dockerd", argv, self.run_dir / "logs" / "dockerd.log").start()
        wait_until(lambda: self._ping(), 60, "dockerd to answer")
        return self

    def _ping(self) -> bool:
        assert self.process is not None
        self.process.check_running()
        return self.docker("version", check=False, timeout=10).returncode == 0

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    def ensure_base_image(self) -> None:
        if self.has_image(BASE_IMAGE):
            return
        with tempfile.TemporaryDirectory(prefix="vidup-rootfs-") as tmp:
            rootfs = Path(tmp)
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
                check=True, capture_output=True, timeout=900,
            )
            _copy_host_trust(rootfs)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(
                ["docker", "-H", self.host, "import", "-", BASE_IMAGE],
                stdin=tar.stdout, check=True, capture_output=True, timeout=600,
            )
            tar.wait()

    def build(self, dockerfile: Path, tag: str, context: Path = REPO_ROOT) -> None:
        """``docker build``; vidup's images use the repository root as context (they share the core)."""
        done = self.docker("build", "--network", "host", "-f", str(dockerfile), "-t", tag, str(context),
                           check=False)
        if done.returncode != 0:
            raise RuntimeError(f"docker build of {dockerfile} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=20)
        # dockerd leaves its network-namespace bind mounts behind under the exec root.
        for mount in mounts_under(self.run_dir):
            subprocess.run(["umount", "--lazy", mount], capture_output=True, check=False)
        remove_stale_shim_sockets()


def _copy_host_trust(rootfs: Path) -> None:
    """Give a locally made base this machine's CAs and point pip at them (see the module docstring)."""
    if HOST_EXTRA_CAS.is_dir():
        target = rootfs / HOST_EXTRA_CAS.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for cert in HOST_EXTRA_CAS.glob("*.crt"):
            shutil.copy(cert, target / cert.name)
    if HOST_CA_BUNDLE.is_file():
        bundle = rootfs / HOST_CA_BUNDLE.relative_to("/")
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(HOST_CA_BUNDLE, bundle)
        (rootfs / "etc" / "pip.conf").write_text(f"[global]\ncert = {HOST_CA_BUNDLE}\n")


def mounts_under(directory: Path) -> list[str]:
    """Mount points inside ``directory``, deepest first (each once, however often it is stacked)."""
    prefix = str(directory.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    return sorted(set(points), key=len, reverse=True)


def remove_stale_shim_sockets() -> None:
    """Delete shim sockets nothing listens on any more (the shims are gone), then the directories
    ``/run/containerd/s`` and ``/run/containerd`` if that left them empty."""
    if not SHIM_SOCKET_DIR.is_dir():
        return
    for path in SHIM_SOCKET_DIR.iterdir():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink(missing_ok=True)
    for directory in (SHIM_SOCKET_DIR, SHIM_SOCKET_DIR.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()
