"""The VideoTranscode CRD against the real kube-apiserver: schema rules, status subresource, kubectl."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from vidup import resource
from vidup.localstack import binaries
from vidup.localstack.stack import Stack

NS = "default"


@pytest.fixture(scope="module")
def custom(kube: Stack) -> Iterator[client.CustomObjectsApi]:
    with kube.api_client() as api:
        yield client.CustomObjectsApi(api)


def valid_body(name: str | None = None) -> dict[str, Any]:
    spec = resource.VideoSpec(
        tenant="acme", source_path="uploads/abc", source_size=1234, filename="holiday.mp4",
        renditions=(1080, 720), segment_seconds=6,
    )
    return resource.VideoTranscodeObject(name or f"vt-{uuid.uuid4().hex[:12]}", NS, spec).to_body()


def create(custom: client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    return dict(custom.create_namespaced_custom_object(
        resource.GROUP, resource.VERSION, NS, resource.PLURAL, body))


def message_of(error: ApiException) -> str:
    """The API server's human message (the JSON body escapes quotes)."""
    return str(json.loads(error.body)["message"])


def rejection(custom: client.CustomObjectsApi, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as info:
        create(custom, body)
    assert info.value.status == 422, info.value.body
    return message_of(info.value)


def test_valid_resource_is_created_with_defaults(custom: client.CustomObjectsApi) -> None:
    body = valid_body()
    del body["spec"]["renditions"], body["spec"]["segmentSeconds"]
    created = create(custom, body)
    assert created["spec"]["renditions"] == [1080, 720, 480]
    assert created["spec"]["segmentSeconds"] == 10
    assert created["metadata"]["generation"] == 1
    assert resource.VideoSpec.from_spec(created["spec"]).filename == "holiday.mp4"


def _mutate(path: list[str], value: Any) -> dict[str, Any]:
    body = valid_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


_DELETE = object()

INVALID_SPECS = [
    (["spec", "tenant"], _DELETE, "spec.tenant: Required value"),
    (["spec", "tenant"], "Acme_Corp", "spec.tenant: Invalid value"),
    (["spec", "tenant"], "", "spec.tenant: Invalid value"),
    (["spec", "tenant"], "a" * 64, "spec.tenant: Too long"),
    (["spec", "source"], _DELETE, "spec.source: Required value"),
    (["spec", "source", "path"], _DELETE, "spec.source.path: Required value"),
    (["spec", "source", "path"], "", "spec.source.path: Invalid value"),
    (["spec", "source", "path"], "/etc/passwd", "source.path must be relative to the storage root"),
    (["spec", "source", "path"], "uploads/../../etc", "source.path must be relative to the storage root"),
    (["spec", "source", "size"], -1, "spec.source.size: Invalid value"),
    (["spec", "source", "size"], _DELETE, "spec.source.size: Required value"),
    (["spec", "source", "filename"], "x" * 256, "spec.source.filename: Too long"),
    (["spec", "renditions"], [2160], 'spec.renditions[0]: Unsupported value: 2160'),
    (["spec", "renditions"], [], "spec.renditions: Invalid value"),
    (["spec", "renditions"], [720, 720], "spec.renditions[1]: Duplicate value"),
    (["spec", "renditions"], [1080, 720, 480, 480], "spec.renditions: Too many"),
    (["spec", "segmentSeconds"], 1, "spec.segmentSeconds: Invalid value"),
    (["spec", "segmentSeconds"], 31, "spec.segmentSeconds: Invalid value"),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID_SPECS, ids=[m for _, _, m in INVALID_SPECS])
def test_invalid_spec_is_rejected_with_the_schema_message(
    custom: client.CustomObjectsApi, path: list[str], value: Any, message: str
) -> None:
    assert message in rejection(custom, _mutate(path, value))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tenant", "other", "tenant is immutable"),
        ("source", {"path": "uploads/other", "size": 1}, "source is immutable"),
    ],
)
def test_identity_fields_are_immutable(
    custom: client.CustomObjectsApi, field: str, value: Any, message: str
) -> None:
    body = create(custom, valid_body())
    name = body["metadata"]["name"]
    with pytest.raises(ApiException) as info:
        custom.patch_namespaced_custom_object(
            resource.GROUP, resource.VERSION, NS, resource.PLURAL, name, {"spec": {field: value}})
    assert info.value.status == 422
    assert message in message_of(info.value)
    # Renditions may change: that is a new generation for the operator to act on.
    patched = custom.patch_namespaced_custom_object(
        resource.GROUP, resource.VERSION, NS, resource.PLURAL, name, {"spec": {"renditions": [480]}})
    assert patched["metadata"]["generation"] == 2


STATUS = {
    "phase": "Processing",
    "progress": 42,
    "jobId": "vt-x-g1",
    "attempts": 1,
    "startedAt": "2026-11-25T10:00:00Z",
    "message": "transcoding",
    "source": {"durationSeconds": 12.5, "width": 1920, "height": 1080, "hasAudio": True},
    "outputs": {"summary": "1080p,720p"},
    "conditions": [{
        "type": "Ready", "status": "False", "reason": "Processing", "message": "transcoding",
        "lastTransitionTime": "2026-11-25T10:00:00Z", "observedGeneration": 1,
    }],
    "observedGeneration": 1,
}


def test_status_subresource_patch_keeps_generation(custom: client.CustomObjectsApi) -> None:
    body = create(custom, valid_body())
    name = body["metadata"]["name"]
    patched = custom.patch_namespaced_custom_object_status(
        resource.GROUP, resource.VERSION, NS, resource.PLURAL, name, {"status": STATUS})
    assert patched["status"]["progress"] == 42
    assert patched["metadata"]["generation"] == 1
    # Writes to status through the main resource are ignored: only the status subresource counts.
    custom.patch_namespaced_custom_object(
        resource.GROUP, resource.VERSION, NS, resource.PLURAL, name, {"status": {"progress": 99}})
    fetched = custom.get_namespaced_custom_object(resource.GROUP, resource.VERSION, NS, resource.PLURAL, name)
    assert fetched["status"]["progress"] == 42


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"progress": 101}, "status.progress: Invalid value"),
        ({"phase": "Done"}, 'status.phase: Unsupported value: "Done"'),
    ],
)
def test_invalid_status_is_rejected(custom: client.CustomObjectsApi, patch: dict[str, Any], message: str) -> None:
    name = create(custom, valid_body())["metadata"]["name"]
    with pytest.raises(ApiException) as info:
        custom.patch_namespaced_custom_object_status(
            resource.GROUP, resource.VERSION, NS, resource.PLURAL, name, {"status": patch})
    assert info.value.status == 422
    assert message in message_of(info.value)


def test_kubectl_get_prints_the_printer_columns(kube: Stack, custom: client.CustomObjectsApi) -> None:
    name = create(custom, valid_body())["metadata"]["name"]
    status = copy.deepcopy(STATUS)
    status["chunks"] = {"total": 10, "completed": 3, "seconds": 60, "summary": "3/10", "failures": {"c0004": 1}}
    custom.patch_namespaced_custom_object_status(
        resource.GROUP, resource.VERSION, NS, resource.PLURAL, name, {"status": status})
    kubectl = str(binaries.expected().kubectl)
    out = subprocess.run(
        [kubectl, "--kubeconfig", str(kube.kubeconfig), "get", "videotranscodes", name],
        capture_output=True, text=True, check=True,
    ).stdout
    header, row = out.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "CHUNKS", "RENDITIONS", "DURATION", "AGE"]
    assert row.split()[:6] == [name, "Processing", "42", "3/10", "1080p,720p", "12.5"]
    # The short name and the category reach the same resource.
    for what in ("vt", "vidup"):
        listed = subprocess.run(
            [kubectl, "--kubeconfig", str(kube.kubeconfig), "get", what, "-o", "name"],
            capture_output=True, text=True, check=True,
        ).stdout
        assert f"videotranscode.vidup.io/{name}" in listed.split()
    wide = subprocess.run(
        [kubectl, "--kubeconfig", str(kube.kubeconfig), "get", "vt", name, "-o", "wide"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert wide.splitlines()[0].split() == [
        "NAME", "TENANT", "PHASE", "PROGRESS", "CHUNKS", "RENDITIONS", "DURATION", "ATTEMPTS", "AGE"]
    assert wide.splitlines()[1].split()[1] == "acme"
