"""`make demo`: start the whole local stack, show the resources, stop it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from vidup.localstack import binaries
from vidup.localstack.stack import Stack


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vidup-demo-") as tmp:
        stack = Stack(Path(tmp), workers=2).start()
        try:
            print(f"vidup demo: stack is up, ingest at {stack.url}", flush=True)
            subprocess.run(
                [str(binaries.expected().kubectl), "--kubeconfig", str(stack.kubeconfig),
                 "get", "videotranscodes"],
                check=True,
            )
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
