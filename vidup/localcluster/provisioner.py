"""A dynamic provisioner for the default StorageClass: each PersistentVolumeClaim gets a host-path
PersistentVolume in a directory of its own, deleted with the claim (what kind's local-path
provisioner and minikube's hostpath provisioner do). It runs as a host process beside the kubelet.

Run: ``python -m vidup.localcluster.provisioner --kubeconfig FILE --root DIR``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from vidup.localstack.controlplane import NODE_NAME

PROVISIONER = "vidup.local/hostpath"
STORAGE_CLASS = "standard"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
WANTS_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"

log = logging.getLogger("vidup.provisioner")


def volume_for(claim: dict[str, Any], root: Path) -> dict[str, Any]:
    """The PersistentVolume that satisfies ``claim`` (a pure function of the claim)."""
    meta, spec = claim["metadata"], claim["spec"]
    directory = root / f"{meta['namespace']}-{meta['name']}-{meta['uid']}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName") or STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
            "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}},
        },
    }


def wants_volume(claim: dict[str, Any]) -> bool:
    annotations = claim["metadata"].get("annotations") or {}
    return (
        (claim.get("status") or {}).get("phase") == "Pending"
        and not claim["spec"].get("volumeName")
        and annotations.get(WANTS_PROVISIONER) == PROVISIONER
        and SELECTED_NODE in annotations
    )


def sync(core: client.CoreV1Api, root: Path) -> None:
    """One pass: provision pending claims, delete released volumes (with their directories)."""
    api = core.api_client
    claims = api.sanitize_for_serialization(core.list_persistent_volume_claim_for_all_namespaces())["items"]
    volumes = api.sanitize_for_serialization(core.list_persistent_volume())["items"]
    existing = {v["metadata"]["name"] for v in volumes}
    for claim in claims:
        if wants_volume(claim):
            volume = volume_for(claim, root)
            if volume["metadata"]["name"] in existing:
                continue
            directory = Path(volume["spec"]["hostPath"]["path"])
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o777)  # any pod's uid may write, as with local-path volumes
            core.create_persistent_volume(volume)
            log.info("provisioned %s for %s/%s", volume["metadata"]["name"],
                     claim["metadata"]["namespace"], claim["metadata"]["name"])
    for volume in volumes:
        annotations = volume["metadata"].get("annotations") or {}
        phase = (volume.get("status") or {}).get("phase")
        if annotations.get(PROVISIONED_BY) == PROVISIONER and phase in ("Released", "Failed"):
            shutil.rmtree(volume["spec"]["hostPath"]["path"], ignore_errors=True)
            core.delete_persistent_volume(volume["metadata"]["name"])
            log.info("deleted %s", volume["metadata"]["name"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", required=True, help="directory that holds the volumes")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    core = client.CoreV1Api(config.new_client_from_config(config_file=args.kubeconfig))
    while True:
        try:
            sync(core, root)
        except Exception:  # the API server restarting must not end the provisioner
            log.exception("sync failed; retrying")
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
