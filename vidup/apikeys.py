"""API keys per tenant, stored hashed.

The file (or the Kubernetes Secret key mounted as a file) is JSON:
``{"keys": [{"tenant": "demo", "sha256": "<hex digest of the key>"}]}``. Only digests are stored,
so a leaked file does not leak keys; keys are long random tokens, so a plain SHA-256 is enough.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "vk_" + secrets.token_urlsafe(32)


def write_api_keys_file(path: Path, keys: dict[str, str]) -> None:
    """Write ``{tenant: plain key}`` as a hashed keys file."""
    doc = {"keys": [{"tenant": tenant, "sha256": hash_api_key(key)} for tenant, key in keys.items()]}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def load_api_keys_file(path: Path) -> dict[str, str]:
    """``{sha256 digest: tenant}`` from a keys file."""
    doc = json.loads(path.read_text())
    return {entry["sha256"]: entry["tenant"] for entry in doc.get("keys", [])}
