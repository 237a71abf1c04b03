"""Rendering the chart with the built helm, and the values table the README must carry."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import yaml

from vidup.localstack import binaries
from vidup.localstack.docker_engine import REPO_ROOT

CHART = REPO_ROOT / "charts" / "vidup"
README = REPO_ROOT / "README.md"
TABLE_START = "<!-- values table: generated from charts/vidup/values.schema.json; tests/chart checks it -->"
TABLE_END = "<!-- end of values table -->"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(binaries.expected().helm), *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {done.stderr}")
    return done


def render(*sets: str, namespace: str = "vidup") -> list[dict[str, Any]]:
    """``helm template`` with ``--set`` pairs; the rendered objects (tests included)."""
    args = ["template", "vidup", str(CHART), "--namespace", namespace]
    for pair in sets:
        args += ["--set", pair]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def leaves(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every documented value: a schema property without sub-properties, with its dotted key."""
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
    """The README's values table, made from the schema (descriptions, types) and values.yaml."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, spec in leaves(schema()):
        kind = spec.get("type", "")
        kind = "/".join(kind) if isinstance(kind, list) else kind
        rows.append(f"| `{key}` | {kind} | {_default(values, key)} | {spec.get('description', '')} |")
    return "\n".join(rows)


def readme_table() -> str:
    text = README.read_text()
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


if __name__ == "__main__":  # print the table to paste into the README
    print(values_table())
