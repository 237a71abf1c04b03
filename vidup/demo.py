"""`make demo`: the whole product in one run, on this machine.

Starts the local stack with two FFmpeg workers (the same code as `vidup up`), makes a short 1080p
sample with FFmpeg's test sources, uploads it with `vidup upload --wait` exactly as a user would
(a separate process with `vidup env`'s variables), then shows `kubectl get videotranscodes`, the
master playlist URL and the renditions, and stops everything.

``VIDUP_DEMO_SECONDS`` sets the sample's length (default 12); ``VIDUP_X264_PRESET`` is passed on
to the workers (the default keeps the demo quick).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vidup.localstack import binaries
from vidup.localstack.stack import Stack


def make_sample(path: Path, seconds: int) -> None:
    """1920x1080 at 30 fps: a moving test pattern with a clock and a 440 Hz tone."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
         "-shortest", "-movflags", "+faststart", str(path)],
        check=True,
    )


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    seconds = int(os.environ.get("VIDUP_DEMO_SECONDS", "12"))
    preset = os.environ.get("VIDUP_X264_PRESET", "veryfast")
    with tempfile.TemporaryDirectory(prefix="vidup-demo-") as tmp:
        run_dir = Path(tmp)
        banner("starting the local stack: kube-apiserver + etcd, Redis, ingest, operator, 2 FFmpeg workers")
        stack = Stack(run_dir / "stack", workers=2, extra_env={"VIDUP_X264_PRESET": preset}).start()
        try:
            print(f"ingest at {stack.url}; logs in {run_dir / 'stack' / 'logs'}", flush=True)
            sample = run_dir / "sample-1080p.mp4"
            banner(f"making a {seconds}-second 1080p sample with ffmpeg (testsrc2 + sine)")
            make_sample(sample, seconds)
            print(f"{sample.name}: {sample.stat().st_size / 1e6:.1f} MB", flush=True)

            banner("vidup upload --wait --json sample-1080p.mp4")
            env = {**os.environ, **stack.user_env(), "VIDUP_CACHE_DIR": str(run_dir / "cache")}
            upload = subprocess.run(
                [sys.executable, "-m", "vidup.cli", "upload", str(sample), "--wait", "--json"],
                env=env, stdout=subprocess.PIPE, text=True,
            )
            doc = json.loads(upload.stdout) if upload.stdout.strip() else {}

            banner("kubectl get videotranscodes -o wide")
            subprocess.run([str(binaries.expected().kubectl), "--kubeconfig", str(stack.kubeconfig),
                            "get", "videotranscodes", "-o", "wide"], check=True)

            if upload.returncode != 0 or doc.get("status") != "COMPLETED":
                banner(f"the video did not complete (exit {upload.returncode})")
                print(json.dumps(doc, indent=2) if doc else "(no status document)", flush=True)
                return 1
            banner(f"video {doc['id']}: {doc['status']}, {doc['duration']} s")
            print(f"master playlist: {doc['master_playlist_url']}")
            print(f"poster:          {doc['poster_url']}")
            print("renditions:")
            for r in doc["renditions"]:
                print(f"  {r['name']:>6}  {r['width']}x{r['height']}  {r['bandwidth'] / 1e6:5.2f} Mbit/s peak  "
                      f"{r['playlist_url']}")
            print("\n(the URLs stop working when the demo's stack stops; `vidup up` keeps one running)", flush=True)
            return 0
        finally:
            banner("stopping the stack")
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
