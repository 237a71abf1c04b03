"""Rendering the chart with the built helm and kubectl, and the values table the READMEs carry.

``python tests/chart/chart_support.py`` prints the values table to paste between the markers of
the project README and the chart's README.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from vidup.localstack import binaries
from vidup.localstack.docker_engine import REPO_ROOT

CHART = REPO_ROOT / "charts" / "vidup"
#: The READMEs that carry the values table, each between the two markers.
READMES = (REPO_ROOT / "README.md", CHART / "README.md")
TABLE_START = "<!-- values table: generated from charts/vidup/values.schema.json; tests/chart checks it -->"
TABLE_END = "<!-- end of values table -->"
#: The value sets rendered for every check and dry-run against the API server.
VALUE_SETS = {
    "defaults": [],
    "external-redis": ["redis.enabled=false", "externalRedis.existingSecret=managed-redis"],
    "existing-claim-and-secret": ["storage.existingClaim=shared-videos", "auth.existingSecret=vidup-keys"],
    "s3": ["storage.type=s3", "storage.s3.bucket=videos", "storage.s3.endpoint=http://seaweedfs:8333",
           "storage.s3.existingSecret=vidup-s3"],
    "autoscaling-and-httproute": ["worker.autoscaling.enabled=true", "httpRoute.enabled=true",
                                  "httpRoute.parentRefs[0].name=traefik", "httpRoute.parentRefs[0].namespace=traefik",
                                  "ingress.enabled=false"],
    "operator-autoscaling-and-service-monitor": ["worker.autoscaling.operator.enabled=true",
                                                 "metrics.serviceMonitor.enabled=true"],
}


def helm(*args: str, check: bool = True, kubeconfig: Path | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [str(binaries.expected().helm), *args]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {done.stderr}")
    return done


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(binaries.expected().kubectl), "--kubeconfig", str(kubeconfig), *args],
                          input=stdin, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
    return done


def set_args(sets: list[str] | tuple[str, ...]) -> list[str]:
    return [arg for pair in sets for arg in ("--set", pair)]


def template(*sets: str, namespace: str = "vidup", extra: tuple[str, ...] = ()) -> str:
    """``helm template`` with ``--set`` pairs: the manifest text (tests included)."""
    return helm("template", "vidup", str(CHART), "--namespace", namespace, *extra, *set_args(sets)).stdout


def render(*sets: str, namespace: str = "vidup", extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rendered objects of :func:`template`."""
    return [doc for doc in yaml.safe_load_all(template(*sets, namespace=namespace, extra=extra)) if doc]


def schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def leaves(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every documented value: a schema property without sub-properties, with its dotted key.

    Values that pass straight into Kubernetes objects (security contexts, resources, affinity...)
    are validated through ``definitions`` (``allOf: [{$ref}]``) and documented as one row."""
    for name, spec in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        if "properties" in spec:
            yield from leaves(spec, key + ".")
        else:
            yield key, spec


def _default(values: dict[str, Any], key: str) -> str:
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return f"`{json.dumps(node)}`"


def values_table() -> str:
    """The READMEs' values table, made from the schema (descriptions, types) and values.yaml."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, spec in leaves(schema()):
        kind = spec.get("type", "")
        kind = "/".join(kind) if isinstance(kind, list) else kind
        rows.append(f"| `{key}` | {kind} | {_default(values, key)} | {spec.get('description', '')} |")
    return "\n".join(rows)


def readme_table(readme: Path) -> str:
    text = readme.read_text()
    assert TABLE_START in text and TABLE_END in text, f"{readme} has no values table markers"
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


if __name__ == "__main__":
    print(values_table())
