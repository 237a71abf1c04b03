"""Starting and stopping the whole local stack leaves nothing behind, whether driven from Python
(the test fixtures) or from the `vidup` command (people)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from vidup.localstack import binaries
from vidup.localstack.processes import pid_alive, port_open
from vidup.localstack.stack import Stack, read_state


def _ports(stack: Stack) -> list[int]:
    assert stack.control_plane is not None and stack.redis is not None
    ports = [stack.control_plane.etcd_port, stack.control_plane.apiserver_port, stack.redis.port]
    if stack.url:
        ports.append(int(stack.url.rsplit(":", 1)[1]))
    return ports


def _descendants(pids: list[int]) -> list[int]:
    """Every process whose process group is one of ``pids`` (each child leads its own group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) in pids:
                    found.append(int(entry.name))
            except ProcessLookupError:
                continue
    return found


def test_stack_starts_and_stops_twice_leaving_nothing(tmp_path: Path) -> None:
    for round_ in range(2):
        stack = Stack(tmp_path / f"round-{round_}", workers=2).start()
        pids, ports = stack.all_pids(), _ports(stack)
        assert all(pid_alive(pid) for pid in pids)
        assert all(port_open(port) for port in ports)
        names = {p.name for p in stack.processes}
        assert {"ingest-0", "operator-0", "worker-0", "worker-1"} <= names
        groups = _descendants(pids)
        assert len(groups) >= len(pids)
        stack.stop()
        assert [pid for pid in groups if pid_alive(pid)] == []
        assert [port for port in ports if port_open(port)] == []


def _vidup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidup.cli", *args], capture_output=True, text=True, env=env, timeout=300,
    )


def test_cli_up_detach_env_down(tmp_path: Path) -> None:
    env = {**os.environ, "VIDUP_CACHE_DIR": str(binaries.cache_root()), "HOME": str(tmp_path)}
    run_dir = tmp_path / "run"
    up = _vidup("up", "--detach", "--workers", "1", "--run-dir", str(run_dir), env=env)
    assert up.returncode == 0, up.stderr
    assert str(run_dir) in up.stderr
    state = read_state(run_dir)
    try:
        exported = _vidup("env", "--run-dir", str(run_dir), env=env)
        assert exported.returncode == 0, exported.stderr
        shell = f'{exported.stdout}\n"{binaries.expected().kubectl}" get videotranscodes 2>&1; echo "URL=$VIDUP_URL"'
        out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, check=True).stdout
        assert "No resources found in default namespace." in out
        assert f"URL={state['env']['VIDUP_URL']}" in out
        assert "export VIDUP_TOKEN=" in exported.stdout
        assert shlex.split(exported.stdout.split("KUBECONFIG=")[1].split("\n")[0])[0] == str(run_dir / "kubeconfig")
        logs = {p.name for p in (run_dir / "logs").iterdir()}
        assert {"etcd.log", "kube-apiserver.log", "redis.log", "ingest-0.log", "operator-0.log", "worker-0.log"} <= logs
    finally:
        down = _vidup("down", "--run-dir", str(run_dir), env=env)
    assert down.returncode == 0, down.stderr
    groups = _descendants(state["pids"])
    assert groups == []
    assert not (run_dir / "stack.json").exists()


def test_cli_up_storage_s3_exports_the_bucket_and_down_stops_the_s3_server(tmp_path: Path) -> None:
    """`vidup up --storage s3` runs a real S3 server; `vidup env` hands its endpoint, bucket and
    credentials (AWS_* as every S3 tool reads them) to a shell, and `vidup down` stops it too."""
    env = {**os.environ, "VIDUP_CACHE_DIR": str(binaries.cache_root()), "HOME": str(tmp_path)}
    run_dir = tmp_path / "run"
    up = _vidup("up", "--detach", "--storage", "s3", "--without", "operator", "--without", "worker",
                "--run-dir", str(run_dir), env=env)
    assert up.returncode == 0, up.stderr
    state = read_state(run_dir)
    try:
        exported = _vidup("env", "--run-dir", str(run_dir), env=env)
        assert exported.returncode == 0, exported.stderr
        values = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1)
                      for line in exported.stdout.splitlines())
        assert values["VIDUP_STORAGE"] == "s3"
        assert values["VIDUP_S3_BUCKET"] and values["VIDUP_S3_ENDPOINT"].startswith("http://127.0.0.1:")
        assert values["VIDUP_STORAGE_DIR"] == str(run_dir / "storage")
        assert values["AWS_ACCESS_KEY_ID"] and values["AWS_SECRET_ACCESS_KEY"]
        # The exported variables alone reach the bucket, through the code every component uses.
        probe = ("from vidup.settings import Settings; from vidup.storage import open_blobs; "
                 "b = open_blobs(Settings.from_env()); b.put_bytes('probe', b'ok'); print(b.read_bytes('probe'))")
        shell = f"{exported.stdout}\n{shlex.quote(sys.executable)} -c {shlex.quote(probe)}"
        out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, check=True).stdout
        assert out.strip() == "b'ok'"
        assert "s3.log" in {p.name for p in (run_dir / "logs").iterdir()}
    finally:
        down = _vidup("down", "--run-dir", str(run_dir), env=env)
    assert down.returncode == 0, down.stderr
    assert _descendants(state["pids"]) == []
