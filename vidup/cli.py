"""The `vidup` command: run the local stack (`up`, `env`, `down`), the local Kubernetes cluster
(`cluster up | env | down`), build their binaries, and upload videos."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from vidup import upload_client
from vidup.localcluster import cluster as local_cluster
from vidup.localstack import binaries
from vidup.localstack.stack import ALL_COMPONENTS, Stack, default_runs_root, read_state, stop_from_state
from vidup.settings import STORAGE_KINDS, Settings


def _current_pointer() -> Path:
    return binaries.cache_root() / "current-run"


def _find_run_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    pointer = _current_pointer()
    if not pointer.exists():
        raise SystemExit("no vidup stack is running (start one with `vidup up --detach`)")
    return Path(pointer.read_text().strip())


def cmd_up(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else default_runs_root() / time.strftime("%Y%m%d-%H%M%S")
    components = tuple(c for c in ALL_COMPONENTS if c not in (args.without or []))
    print(f"vidup: starting the local stack; logs in {run_dir}/logs", file=sys.stderr, flush=True)
    stack = Stack(run_dir, workers=args.workers, components=components, storage=args.storage).start()
    _current_pointer().parent.mkdir(parents=True, exist_ok=True)
    _current_pointer().write_text(str(run_dir))
    print(f"vidup: ready. run directory: {run_dir}", file=sys.stderr)
    for key, value in stack.user_env().items():
        shown = value if key != "VIDUP_TOKEN" else value[:8] + "…"
        print(f"  {key}={shown}", file=sys.stderr)
    print('  point your shell at it: eval "$(vidup env)"', file=sys.stderr)
    if stack.url:
        print(f"  in a browser: open {stack.url}/ and paste the API key ($VIDUP_TOKEN after eval)",
              file=sys.stderr)
    sys.stderr.flush()
    if args.detach:
        return 0
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("vidup: running; Ctrl-C stops everything", file=sys.stderr, flush=True)
    try:
        while not stopping:
            for process in stack.processes:
                if not process.running():
                    print(f"vidup: {process.name} exited; see {process.log_path}", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        print("vidup: stopping", file=sys.stderr, flush=True)
        stack.stop()
        if _current_pointer().exists() and _current_pointer().read_text().strip() == str(run_dir):
            _current_pointer().unlink()
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    state = read_state(_find_run_dir(args.run_dir))
    for key, value in state["env"].items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    run_dir = _find_run_dir(args.run_dir)
    stopped = stop_from_state(run_dir)
    if not args.run_dir and _current_pointer().exists():
        _current_pointer().unlink()
    print(f"vidup: stopped {len(stopped)} processes of {run_dir}", file=sys.stderr)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.s3:
        print(f"weed: {binaries.build_s3(force=args.force)}")
        return 0
    if args.node:
        tools: object = binaries.build_node(force=True) if args.force else binaries.ensure_node()
    else:
        tools = binaries.build(force=True) if args.force else binaries.ensure()
    for name, path in vars(tools).items():
        print(f"{name}: {path}")
    return 0


def cmd_cluster_up(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else local_cluster.default_run_dir()
    local_cluster.Cluster(run_dir, args.ingress_port).up()
    print('vidup: cluster ready; point your shell at it: eval "$(vidup cluster env)"', file=sys.stderr)
    return 0


def cmd_cluster_env(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else local_cluster.default_run_dir()
    if not local_cluster.running(run_dir):
        raise SystemExit("no vidup cluster is running (start one with `vidup cluster up`)")
    for key, value in local_cluster.read_state(run_dir)["env"].items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_cluster_load(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else local_cluster.default_run_dir()
    if not local_cluster.running(run_dir):
        raise SystemExit("no vidup cluster is running (start one with `vidup cluster up`)")
    local_cluster.Cluster(run_dir).load_images()
    print("vidup: images rebuilt and loaded; restart pods to use them (kubectl rollout restart)", file=sys.stderr)
    return 0


def cmd_cluster_down(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else local_cluster.default_run_dir()
    local_cluster.down(run_dir)
    print(f"vidup: cluster at {run_dir} is down", file=sys.stderr)
    return 0


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text}")
    return value


def cmd_upload(args: argparse.Namespace) -> int:
    return upload_client.run(args.file, args.url, args.token, args.wait, args.json, args.timeout,
                             chunk_size=max(1, int(args.chunk_mib * (1 << 20))))


def cmd_top(args: argparse.Namespace) -> int:
    from vidup import top

    if args.redis_url and not args.run_dir:  # a cluster (or any vidup): Redis + a kubeconfig
        source = top.Source(args.redis_url, args.kubeconfig or os.environ.get("KUBECONFIG"),
                            args.namespace or os.environ.get("VIDUP_NAMESPACE", "default"),
                            args.queue or os.environ.get("VIDUP_QUEUE", Settings.queue), label=args.redis_url)
    else:
        source = top.source_from_state(_find_run_dir(args.run_dir))
    return top.run(source, once=args.once, interval=args.interval, as_json=args.json, failures=args.failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidup", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack (control plane, Redis, ingest, operator, workers)")
    up.add_argument("--detach", action="store_true", help="return once everything is ready")
    up.add_argument("--workers", type=int, default=2, help="FFmpeg worker processes (default 2)")
    up.add_argument("--run-dir", help="where logs and state go (default: a new dir under the cache)")
    up.add_argument("--without", action="append", choices=ALL_COMPONENTS, help="leave a component out")
    up.add_argument("--storage", choices=STORAGE_KINDS, default="file",
                    help="file: the run's storage directory (default); s3: a local SeaweedFS bucket")
    up.set_defaults(func=cmd_up)

    env = sub.add_parser("env", help='print export lines for the running stack: eval "$(vidup env)"')
    env.add_argument("--run-dir")
    env.set_defaults(func=cmd_env)

    down = sub.add_parser("down", help="stop the running stack")
    down.add_argument("--run-dir")
    down.set_defaults(func=cmd_down)

    build = sub.add_parser("build", help="build (or find cached) etcd, kube-apiserver, kubectl and helm")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("--node", action="store_true",
                       help="also the node: kubelet, kube-proxy, containerd, runc, CNI, CoreDNS, Traefik")
    build.add_argument("--s3", action="store_true", help="only SeaweedFS, the local S3 server (`up --storage s3`)")
    build.set_defaults(func=cmd_build)

    cluster = sub.add_parser("cluster", help="a real one-node Kubernetes cluster as local processes")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    cluster_up = cluster_sub.add_parser("up", help="start it (returns when pods, DNS and the ingress work)")
    cluster_up.add_argument("--ingress-port", type=int, default=30080,
                            help="the ingress controller's port on 127.0.0.1 (default 30080)")
    cluster_up.add_argument("--run-dir", help="where its state and logs go (default: <cache>/cluster)")
    cluster_up.set_defaults(func=cmd_cluster_up)
    cluster_env = cluster_sub.add_parser("env", help='print export lines: eval "$(vidup cluster env)"')
    cluster_env.add_argument("--run-dir")
    cluster_env.set_defaults(func=cmd_cluster_env)
    cluster_load = cluster_sub.add_parser(
        "load", help="rebuild the images and load them into the running cluster (as `kind load docker-image`)")
    cluster_load.add_argument("--run-dir")
    cluster_load.set_defaults(func=cmd_cluster_load)
    cluster_down = cluster_sub.add_parser("down", help="stop it and remove everything it made")
    cluster_down.add_argument("--run-dir")
    cluster_down.set_defaults(func=cmd_cluster_down)

    upload = sub.add_parser("upload", help="upload a video over TUS (resumable); --wait follows its transcode")
    upload.add_argument("file")
    upload.add_argument("--url", help="the ingest's URL (default: $VIDUP_URL)")
    upload.add_argument("--token", help="API key or upload token (default: $VIDUP_TOKEN)")
    upload.add_argument("--wait", action="store_true", help="follow the video until COMPLETED or FAILED")
    upload.add_argument("--json", action="store_true", help="print the final status document as JSON")
    upload.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    upload.add_argument("--chunk-mib", type=_positive_float, default=8.0,
                        help="MiB per PATCH (default 8); lower it behind a proxy that limits request bodies")
    upload.set_defaults(func=cmd_upload)

    top = sub.add_parser("top", help="a live view: queue depth, workers busy/idle, videos by phase, failures")
    top.add_argument("--run-dir", help="a local stack's run directory (default: the running one)")
    top.add_argument("--redis-url", default=os.environ.get("VIDUP_REDIS_URL"),
                     help="watch a cluster instead: its Redis (e.g. through kubectl port-forward); "
                          "default $VIDUP_REDIS_URL")
    top.add_argument("--kubeconfig", help="with --redis-url: the cluster (default $KUBECONFIG)")
    top.add_argument("--namespace", help="with --redis-url: where the VideoTranscodes are (default: default)")
    top.add_argument("--queue", help="with --redis-url: the transcode queue (default: transcode)")
    top.add_argument("--once", action="store_true", help="print one snapshot and exit (1 if a part was unreachable)")
    top.add_argument("--json", action="store_true", help="the snapshot as JSON")
    top.add_argument("--interval", type=_positive_float, default=2.0, help="seconds between refreshes (default 2)")
    top.add_argument("--failures", type=int, default=5, help="how many recent failures to show (default 5)")
    top.set_defaults(func=cmd_top)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
