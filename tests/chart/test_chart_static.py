"""The chart, statically: lint, the schema refuses bad values at every level, every object is
labelled and every pod locked down, RBAC is exactly what the README lists, the Secret holds only
digests, the settings reach every component, S3 storage mounts no shared volume and needs a bucket
and a Secret while file storage renders as before, autoscaling renders one scaler (the operator's
adds one RBAC rule for the worker Deployment's scale, and excludes the HPA and KEDA), metrics ports
and Services stay off the ingress with ServiceMonitors only where their API exists, and both READMEs
carry the values table the schema defines. Against a real API server: test_chart_api_server.py;
on a real node: tests/cluster."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from chart_support import CHART, READMES, VALUE_SETS, helm, leaves, readme_table, render, schema, values_table

STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "helm.sh/chart")
SELECTOR_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
#: The operator's rules as the README lists them (and tests/e2e/test_operator_rbac.py proves enough).
OPERATOR_RULES = [
    {"apiGroups": ["vidup.io"], "resources": ["videotranscodes"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["vidup.io"], "resources": ["videotranscodes/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
#: The ingest creates one VideoTranscode per upload (tus/handover.py), gets, lists and watches them
#: for the status API (videos/store.py), and deletes the one of a terminated finished upload
#: (ingest.terminateFinishedUploads, on by default); nothing else.
INGEST_RULES = [
    {"apiGroups": ["vidup.io"], "resources": ["videotranscodes"],
     "verbs": ["create", "get", "list", "watch", "delete"]},
]
VIDUP_COMPONENTS = ("ingest", "operator", "worker")
SCHEMA_ERROR = "values don't meet the specifications of the schema"


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((obj["metadata"]["name"], obj["spec"]))
    return specs


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _component(objects: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [o for o in _by_kind(objects, kind) if o["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    assert len(found) == 1, (kind, component, len(found))
    return found[0]


def _container(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    spec = _component(objects, "Deployment", component)["spec"]["template"]["spec"]
    return dict(spec["containers"][0])


def test_helm_lint_strict() -> None:
    done = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(("values", "complaint"), [
    (["ingest.replicaCount=two"], "/ingest/replicaCount"),
    (["ingest.replicaCont=3"], "replicaCont"),
    (["storage.accessMode=ReadWriteAlways"], "/storage/accessMode"),
    (["storage.sise=5Gi"], "sise"),
    (["config.X264_PRESET=fast"], "X264_PRESET"),
    # the chart sets these itself: a second value would make a duplicate env entry
    (["config.VIDUP_NAMESPACE=elsewhere"], "VIDUP_NAMESPACE"),
    # misspellings inside values that pass straight into Kubernetes objects
    (["ingest.resources.limits.memroy=1Gi"], "memroy"),
    (["securityContext.readOnlyRootFileSystem=false"], "readOnlyRootFileSystem"),
    (["podSecurityContext.runAsUser=nobody"], "/podSecurityContext/runAsUser"),
    (["worker.extraEnv[0].nmae=VIDUP_X"], "nmae"),
    (["operator.tolerations[0].efect=NoSchedule"], "efect"),
    (["redis.affinity.nodeAfinity.x=y"], "nodeAfinity"),
    (["ingress.tls[0].secret=tls"], "secret"),
    (["httpRoute.parentRefs[0].namespace=traefik"], "name"),
    # a tenant goes into spec.tenant, which the CRD requires to be a DNS label
    (["auth.apiKeys[0].tenant=Acme", "auth.apiKeys[0].key=vk_0123456789abcdef"], "/auth/apiKeys/0/tenant"),
    (["auth.apiKeys[0].tenant=acme", "auth.apiKeys[0].key=short"], "/auth/apiKeys/0/key"),
    # storage: the kind, the bucket's settings, and none of them around the chart through config
    (["storage.type=nfs"], "/storage/type"),
    (["storage.s3.bucket_name=videos"], "bucket_name"),
    (["storage.s3.endpoint=seaweedfs:8333"], "/storage/s3/endpoint"),
    (["storage.s3.pathStyle=yes"], "/storage/s3/pathStyle"),
    (["storage.s3.prefix=/vidup"], "/storage/s3/prefix"),
    (["worker.scratch.sizeLimit=20GB"], "/worker/scratch/sizeLimit"),
    (["config.VIDUP_STORAGE=s3"], "VIDUP_STORAGE"),
    (["config.VIDUP_S3_BUCKET=videos"], "VIDUP_S3_BUCKET"),
])
def test_schema_rejects_wrong_types_and_unknown_keys(values: list[str], complaint: str) -> None:
    args = [arg for pair in values for arg in ("--set", pair)]
    done = helm("template", "vidup", str(CHART), *args, check=False)
    assert done.returncode != 0
    assert SCHEMA_ERROR in done.stderr
    assert complaint in done.stderr


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


#: Objects whose keys are free by nature (labels, annotations, node selectors, VIDUP_* settings,
#: resource names): their values are typed and, where it matters, their keys are patterned.
FREE_MAPS = {"#stringMap", "#resourceList", ".config"}


def _schema_nodes(node: dict[str, Any], path: str, root: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _schema_nodes(child, f"{path}.{name}", root)
    for child in node.get("allOf", []):
        found += _schema_nodes(child, path, root)
    if isinstance(node.get("items"), dict):
        found += _schema_nodes(node["items"], f"{path}[]", root)
    if isinstance(node.get("additionalProperties"), dict):
        found += _schema_nodes(node["additionalProperties"], f"{path}.*", root)
    return found


def test_schema_closes_every_object_and_types_every_value() -> None:
    root = schema()
    assert root["$schema"] == "http://json-schema.org/draft-07/schema#"
    nodes = _schema_nodes(root, "", root)
    for name, definition in root["definitions"].items():
        nodes += _schema_nodes(definition, f"#{name}", root)
    for path, node in nodes:
        if "$ref" in node:
            assert set(node) == {"$ref"}, path  # draft-07 ignores anything beside $ref
            _resolve(node, root)  # resolvable
            continue
        assert "type" in node, f"{path} has no type"
        kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if "object" not in kinds or path == ".global":  # global is Helm's, shared with parent charts
            continue
        closed = node.get("additionalProperties") is False
        # an object validated through a definition is as closed as the definition
        through = [_resolve(ref, root) for ref in node.get("allOf", [])]
        if not closed and through:
            closed = all(t.get("additionalProperties") is False or t.get("type") != "object" for t in through)
            free = any(f"#{ref['$ref'].rsplit('/', 1)[1]}" in FREE_MAPS for ref in node.get("allOf", []))
            closed = closed or free
        if path in FREE_MAPS:
            assert isinstance(node["additionalProperties"], dict) and "type" in node["additionalProperties"], path
            continue
        assert closed, f"{path} accepts unknown keys"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_is_labelled_and_every_pod_locked_down(name: str) -> None:
    objects = render(*VALUE_SETS[name])
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert all(label in labels for label in STANDARD_LABELS), (obj["kind"], obj["metadata"]["name"])
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/name"] == "vidup" and labels["app.kubernetes.io/instance"] == "vidup"
        template = obj.get("spec", {}).get("template", {}).get("metadata")
        if template is not None:
            assert all(label in template["labels"] for label in STANDARD_LABELS), obj["metadata"]["name"]
    # selectors: name + instance + component, nothing that changes between versions
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "PodDisruptionBudget"):
            assert set(obj["spec"]["selector"]["matchLabels"]) == SELECTOR_LABELS, obj["metadata"]["name"]
        if obj["kind"] == "Service":
            assert set(obj["spec"]["selector"]) == SELECTOR_LABELS, obj["metadata"]["name"]
        for claim in obj.get("spec", {}).get("volumeClaimTemplates", []):
            assert set(claim["metadata"]["labels"]) == SELECTOR_LABELS  # immutable after creation
    specs = _pod_specs(objects)
    assert len(specs) >= 4
    for pod_name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, pod_name
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] != 0
        assert pod["fsGroup"] == pod["runAsGroup"], pod_name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, pod_name
            assert context["readOnlyRootFilesystem"] is True, pod_name
            assert context["capabilities"]["drop"] == ["ALL"], pod_name
            assert "limits" in container["resources"] and "requests" in container["resources"], pod_name
            assert ":" in container["image"] and container["image"].rsplit(":", 1)[1], pod_name
            # a read-only root: every container gets a writable /tmp from an emptyDir
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if container["name"] != "volume-permissions":
                assert "/tmp" in mounts, (pod_name, container["name"])
                volume = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
                assert "emptyDir" in volume, pod_name
    for _, spec in specs:
        uid = 999 if spec["containers"][0]["image"].startswith("redis:") else 10001
        assert spec["securityContext"]["runAsUser"] == uid
    assert not _by_kind(objects, "ClusterRole") and not _by_kind(objects, "ClusterRoleBinding")


def test_images_default_to_the_app_version_and_take_overrides() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    objects = render()
    for component in VIDUP_COMPONENTS:
        container = _container(objects, component)
        assert container["image"] == f"vidup/{component}:{app_version}"
        assert container["imagePullPolicy"] == "IfNotPresent"
    redis = _component(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["image"] == "redis:7.0.15"
    objects = render("worker.image.repository=registry.example/vidup-worker", "worker.image.tag=1.2.3",
                     "worker.image.pullPolicy=Always")
    container = _container(objects, "worker")
    assert (container["image"], container["imagePullPolicy"]) == ("registry.example/vidup-worker:1.2.3", "Always")


def test_redis_runs_redis_server_itself_as_uid_999_on_its_own_claim() -> None:
    statefulset = _component(render(), "StatefulSet", "redis")
    spec = statefulset["spec"]["template"]["spec"]
    container = spec["containers"][0]
    # not the official image's entrypoint script: any image with redis-server on PATH works
    assert container["command"] == ["redis-server"]
    args = container["args"]
    assert args[args.index("--dir") + 1] == "/data" and args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--protected-mode") + 1] == "no"
    assert spec["securityContext"]["runAsUser"] == 999 and spec["securityContext"]["fsGroup"] == 999
    assert spec["automountServiceAccountToken"] is False
    assert [c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    services = [s for s in _by_kind(render(), "Service") if s["metadata"]["labels"]["app.kubernetes.io/component"]
                == "redis"]
    assert sorted(s["spec"].get("clusterIP", "") for s in services) == ["", "None"]
    assert statefulset["spec"]["serviceName"] in [s["metadata"]["name"] for s in services
                                                  if s["spec"].get("clusterIP") == "None"]


def test_immutable_finished_uploads_drop_the_delete_verb() -> None:
    objects = render("ingest.terminateFinishedUploads=false")
    role = _component(objects, "Role", "ingest")
    assert role["rules"] == [{**INGEST_RULES[0], "verbs": ["create", "get", "list", "watch"]}]
    env = _component(objects, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VIDUP_INGEST_TERMINATE_FINISHED", "value": "0"} in env
    env = _component(render(), "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VIDUP_INGEST_TERMINATE_FINISHED", "value": "1"} in env


def test_operator_role_is_exactly_the_readme_rules() -> None:
    objects = render()
    roles = {r["metadata"]["labels"]["app.kubernetes.io/component"]: r for r in _by_kind(objects, "Role")}
    assert set(roles) == {"ingest", "operator"}
    assert roles["operator"]["rules"] == OPERATOR_RULES
    assert roles["ingest"]["rules"] == INGEST_RULES
    for component in ("ingest", "operator"):
        binding = _component(objects, "RoleBinding", component)
        deployment = _component(objects, "Deployment", component)
        account_name = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": roles[component]["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account_name, "namespace": "vidup"}]
        assert _component(objects, "ServiceAccount", component)["metadata"]["name"] == account_name


def test_workers_get_no_kubernetes_credentials_and_time_to_drain() -> None:
    objects = render("worker.terminationGracePeriodSeconds=120")
    worker = _component(objects, "Deployment", "worker")
    spec = worker["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["terminationGracePeriodSeconds"] == 120
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["VIDUP_WORKER_DRAIN_SECONDS"] == "90"
    accounts = {a["metadata"]["name"]: a for a in _by_kind(objects, "ServiceAccount")}
    account = accounts[spec["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False
    assert not [b for b in _by_kind(objects, "RoleBinding")
                if any(s["name"] == spec["serviceAccountName"] for s in b["subjects"])]
    test_pod = _by_kind(objects, "Pod")[0]
    assert test_pod["spec"]["automountServiceAccountToken"] is False


def test_every_component_gets_the_settings() -> None:
    objects = render("config.VIDUP_X264_PRESET=faster", "config.VIDUP_MAX_ATTEMPTS=5",
                     "ingest.extraEnv[0].name=VIDUP_INGEST_LOG_LEVEL", "ingest.extraEnv[0].value=debug")
    claims = set()
    for component in VIDUP_COMPONENTS:
        container = _container(objects, component)
        env = {e["name"]: e for e in container["env"]}
        assert len(env) == len(container["env"]), f"{component}: duplicate env names"
        assert env["VIDUP_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert env["VIDUP_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "vidup-redis-url", "key": "redis-url"}
        assert env["VIDUP_STORAGE_DIR"]["value"] == "/var/lib/vidup"
        assert env["VIDUP_X264_PRESET"]["value"] == "faster" and env["VIDUP_MAX_ATTEMPTS"]["value"] == "5"
        assert ("VIDUP_INGEST_LOG_LEVEL" in env) == (component == "ingest")
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        spec = _component(objects, "Deployment", component)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        claims.add(volumes[mounts["/var/lib/vidup"]]["persistentVolumeClaim"]["claimName"])
    assert claims == {"vidup-storage"}
    assert [p["metadata"]["name"] for p in _by_kind(objects, "PersistentVolumeClaim")] == ["vidup-storage"]
    # the ingest reads the keys file from the mounted Secret and the token secret from it
    ingest = _container(objects, "ingest")
    env = {e["name"]: e for e in ingest["env"]}
    mounts = {m["name"]: m["mountPath"] for m in ingest["volumeMounts"]}
    auth_volume = next(v for v in _component(objects, "Deployment", "ingest")["spec"]["template"]["spec"]["volumes"]
                       if v["name"] == "auth")
    assert auth_volume["secret"]["secretName"] == "vidup-auth"
    item = auth_volume["secret"]["items"][0]
    assert env["VIDUP_API_KEYS_FILE"]["value"] == f"{mounts['auth']}/{item['path']}"
    assert item["key"] == "api-keys.json"
    assert env["VIDUP_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "vidup-auth", "key": "token-secret"}
    # the ingest's port, Service and probes
    assert ingest["ports"] == [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ingest[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = next(s for s in _by_kind(objects, "Service") if s["metadata"]["name"] == "vidup-ingest")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]


def test_existing_claim_and_secret_replace_the_charts_own() -> None:
    objects = render(*VALUE_SETS["existing-claim-and-secret"])
    assert not _by_kind(objects, "PersistentVolumeClaim")
    assert not [s for s in _by_kind(objects, "Secret") if "api-keys.json" in s.get("data", {})]
    for component in VIDUP_COMPONENTS:
        spec = _component(objects, "Deployment", component)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == "shared-videos"
    ingest = _component(objects, "Deployment", "ingest")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in ingest["volumes"]}["auth"]["secret"]["secretName"] == "vidup-keys"
    test_pod = _by_kind(objects, "Pod")[0]
    token = next(e for e in test_pod["spec"]["containers"][0]["env"] if e["name"] == "VIDUP_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "vidup-keys", "key": "api-key"}


S3_SETS = VALUE_SETS["s3"]


def test_s3_storage_mounts_no_shared_volume_and_gives_every_component_the_bucket() -> None:
    objects = render(*S3_SETS, "storage.s3.prefix=vidup/", "storage.s3.pathStyle=false",
                     "storage.s3.accessKeyIdKey=access-key", "storage.s3.secretAccessKeyKey=secret-key",
                     "worker.scratch.sizeLimit=50Gi", "volumePermissions.enabled=true",
                     "config.VIDUP_X264_PRESET=faster",
                     "worker.extraEnv[0].name=AWS_CA_BUNDLE", "worker.extraEnv[0].value=/etc/ssl/store.pem")
    # no claim: the only PVCs are Redis' own (a StatefulSet's volumeClaimTemplates)
    assert not _by_kind(objects, "PersistentVolumeClaim")
    # nothing runs as root: the chown init container is for a shared volume, and there is none
    assert all("initContainers" not in spec for _, spec in _pod_specs(objects))
    secret_ref = {"name": "vidup-s3"}
    for component in VIDUP_COMPONENTS:
        spec = _component(objects, "Deployment", component)["spec"]["template"]["spec"]
        assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v], component
        container = spec["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        scratch = {v["name"]: v for v in spec["volumes"]}[mounts["/var/lib/vidup"]]
        assert scratch == {"name": "scratch",
                           "emptyDir": {"sizeLimit": "50Gi" if component == "worker" else "1Gi"}}, component
        env = {e["name"]: e for e in container["env"]}
        assert len(env) == len(container["env"]), f"{component}: duplicate env names"
        values = {name: e.get("value") for name, e in env.items()}
        assert values["VIDUP_STORAGE"] == "s3" and values["VIDUP_STORAGE_DIR"] == "/var/lib/vidup"
        assert values["VIDUP_S3_ENDPOINT"] == "http://seaweedfs:8333" and values["VIDUP_S3_REGION"] == "us-east-1"
        assert values["VIDUP_S3_BUCKET"] == "videos" and values["VIDUP_S3_PREFIX"] == "vidup/"
        assert values["VIDUP_S3_PATH_STYLE"] == "false"
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {**secret_ref, "key": "access-key"}}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {**secret_ref, "key": "secret-key"}}
        assert values["VIDUP_X264_PRESET"] == "faster"
        assert ("AWS_CA_BUNDLE" in env) == (component == "worker")  # other AWS_* settings pass through
        # the same locked-down pod: read-only root, writable only /tmp and the scratch
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["fsGroup"] == 10001
    # the defaults: AWS's own endpoint, path-style URLs, the standard key names
    defaults = render("storage.type=s3", "storage.s3.bucket=videos", "storage.s3.existingSecret=vidup-s3")
    env = {e["name"]: e for e in _container(defaults, "worker")["env"]}
    assert env["VIDUP_S3_ENDPOINT"]["value"] == "" and env["VIDUP_S3_PATH_STYLE"]["value"] == "true"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {**secret_ref, "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "AWS_SECRET_ACCESS_KEY"
    worker = _component(defaults, "Deployment", "worker")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in worker["volumes"]}["scratch"]["emptyDir"] == {"sizeLimit": "40Gi"}


@pytest.mark.parametrize(("values", "complaint"), [
    (["storage.type=s3", "storage.s3.existingSecret=vidup-s3"],
     "storage.s3.bucket is required when storage.type is s3"),
    (["storage.type=s3", "storage.s3.bucket=videos"],
     "storage.s3.existingSecret (a Secret with the bucket's access key pair) is required when storage.type is s3"),
    ([*S3_SETS, "ingest.extraEnv[0].name=VIDUP_STORAGE", "ingest.extraEnv[0].value=file"],
     "ingest.extraEnv must not set VIDUP_STORAGE"),
    ([*S3_SETS, "operator.extraEnv[0].name=AWS_SECRET_ACCESS_KEY", "operator.extraEnv[0].value=x"],
     "operator.extraEnv must not set AWS_SECRET_ACCESS_KEY"),
    (["worker.extraEnv[0].name=VIDUP_S3_BUCKET", "worker.extraEnv[0].value=videos"],
     "worker.extraEnv must not set VIDUP_S3_BUCKET"),
])
def test_s3_needs_a_bucket_and_a_secret_and_storage_is_the_charts_own(values: list[str], complaint: str) -> None:
    done = helm("template", "vidup", str(CHART), *[arg for pair in values for arg in ("--set", pair)], check=False)
    assert done.returncode != 0
    assert complaint in done.stderr


def test_file_storage_renders_as_before_and_ignores_the_s3_keys() -> None:
    # the generated Secret's values are random per render: an existing one keeps renders comparable
    fixed = "auth.existingSecret=vidup-keys"
    objects = render(fixed)
    assert render(fixed, "storage.type=file") == objects
    assert render(fixed, "storage.s3.bucket=videos", "storage.s3.existingSecret=vidup-s3",
                  "worker.scratch.sizeLimit=50Gi") == objects
    for component in VIDUP_COMPONENTS:
        names = {e["name"] for e in _container(objects, component)["env"]}
        assert not {n for n in names if n.startswith(("VIDUP_S3_", "AWS_"))} and "VIDUP_STORAGE" not in names
        volumes = _component(objects, "Deployment", component)["spec"]["template"]["spec"]["volumes"]
        assert {v["name"] for v in volumes} == {"storage", "tmp"} | ({"auth"} if component == "ingest" else set())
    # extraEnv may set AWS_* with the shared volume: the chart sets none there
    render("worker.extraEnv[0].name=AWS_ACCESS_KEY_ID", "worker.extraEnv[0].value=x")


def test_external_redis_replaces_the_bundled_one() -> None:
    objects = render("redis.enabled=false", "externalRedis.url=redis://redis.example:6379/3")
    assert not _by_kind(objects, "StatefulSet")
    secret = next(s for s in _by_kind(objects, "Secret") if "redis-url" in s["data"])
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == "redis://redis.example:6379/3"
    bundled = next(s for s in _by_kind(render(), "Secret") if "redis-url" in s["data"])
    assert base64.b64decode(bundled["data"]["redis-url"]).decode() == "redis://vidup-redis:6379/0"
    objects = render(*VALUE_SETS["external-redis"])
    assert not [s for s in _by_kind(objects, "Secret") if "redis-url" in s["data"]]
    for component in VIDUP_COMPONENTS:
        env = {e["name"]: e for e in _container(objects, component)["env"]}
        assert env["VIDUP_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "managed-redis", "key": "redis-url"}
    done = helm("template", "vidup", str(CHART), "--set", "redis.enabled=false", check=False)
    assert done.returncode != 0 and "externalRedis.url or externalRedis.existingSecret is required" in done.stderr


def test_secret_stores_only_digests_of_the_given_keys() -> None:
    key = "vk_" + uuid.uuid4().hex * 2
    objects = render("auth.apiKeys[0].tenant=acme", f"auth.apiKeys[0].key={key}")
    secret = next(s for s in _by_kind(objects, "Secret") if "api-keys.json" in s["data"])
    assert set(secret["data"]) == {"api-keys.json", "token-secret", "api-key"}
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert all(key not in value for value in data.values())
    assert key not in json.dumps(objects)
    keys = json.loads(data["api-keys.json"])["keys"]
    assert {"tenant": "acme", "sha256": hashlib.sha256(key.encode()).hexdigest()} in keys
    # the one plain key: the generated bootstrap key (like a generated admin password)
    bootstrap = {"tenant": "default", "sha256": hashlib.sha256(data["api-key"].encode()).hexdigest()}
    assert bootstrap in keys and len(keys) == 2
    assert len(data["api-key"]) >= 32 and len(data["token-secret"]) >= 32


def test_autoscaling_renders_an_hpa_and_no_fixed_replicas() -> None:
    objects = render("worker.autoscaling.enabled=true", "worker.autoscaling.maxReplicas=7")
    hpas = _by_kind(objects, "HorizontalPodAutoscaler")
    assert len(hpas) == 1 and hpas[0]["spec"]["maxReplicas"] == 7
    assert hpas[0]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vidup-worker"}
    worker = _component(objects, "Deployment", "worker")
    assert "replicas" not in worker["spec"]
    assert not _by_kind(objects, "ScaledObject")  # KEDA's API is not in this (template) cluster
    assert _component(render(), "Deployment", "worker")["spec"]["replicas"] == 2


def test_keda_scales_on_the_rq_queue_where_its_api_exists() -> None:
    keda = ("--api-versions", "keda.sh/v1alpha1")
    objects = render("worker.autoscaling.keda.enabled=true", "worker.autoscaling.enabled=true",
                     "config.VIDUP_QUEUE=videos", extra=keda)
    assert not _by_kind(objects, "HorizontalPodAutoscaler")  # never both
    scaled = _by_kind(objects, "ScaledObject")
    assert len(scaled) == 1
    assert scaled[0]["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled[0]["spec"]["scaleTargetRef"] == {"name": "vidup-worker"}
    trigger = scaled[0]["spec"]["triggers"][0]
    assert trigger["type"] == "redis"
    assert trigger["metadata"] == {"address": "vidup-redis.vidup.svc:6379", "listName": "rq:queue:videos",
                                   "listLength": "1"}
    assert "replicas" not in _component(objects, "Deployment", "worker")["spec"]
    # without KEDA's API the switch alone changes nothing
    assert not _by_kind(render("worker.autoscaling.keda.enabled=true"), "ScaledObject")
    # an external Redis has no address the chart could know
    done = helm("template", "vidup", str(CHART), *keda, "--set", "worker.autoscaling.keda.enabled=true",
                "--set", "redis.enabled=false", "--set", "externalRedis.url=redis://r:6379/0", check=False)
    assert done.returncode != 0 and "worker.autoscaling.keda.address" in done.stderr


def test_ingress_and_httproute_reach_the_ingest_service() -> None:
    objects = render()
    ingress = _by_kind(objects, "Ingress")[0]
    assert "ingressClassName" not in ingress["spec"]  # the cluster's default class
    rule = ingress["spec"]["rules"][0]
    assert "host" not in rule  # any host
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "vidup-ingest", "port": {"name": "http"}}
    objects = render("ingress.className=traefik", "ingress.host=videos.example.com",
                     "ingress.tls[0].secretName=videos-tls", "ingress.tls[0].hosts[0]=videos.example.com",
                     # annotation values are strings: --set would make 0 a number, which the schema refuses
                     extra=("--set-string", "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-body-size=0"))
    ingress = _by_kind(objects, "Ingress")[0]
    assert ingress["spec"]["ingressClassName"] == "traefik"
    assert ingress["spec"]["rules"][0]["host"] == "videos.example.com"
    assert ingress["spec"]["tls"] == [{"secretName": "videos-tls", "hosts": ["videos.example.com"]}]
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-body-size": "0"}
    objects = render(*VALUE_SETS["autoscaling-and-httproute"], "httpRoute.hostnames[0]=videos.example.com")
    assert not _by_kind(objects, "Ingress")
    route = _by_kind(objects, "HTTPRoute")[0]
    assert route["spec"]["parentRefs"] == [{"name": "traefik", "namespace": "traefik"}]
    assert route["spec"]["hostnames"] == ["videos.example.com"]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "vidup-ingest", "port": 80}]


def test_pdbs_keep_ingest_and_operator_serving() -> None:
    objects = render()
    pdbs = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in _by_kind(objects, "PodDisruptionBudget")}
    assert set(pdbs) == {"ingest", "operator"}
    for component, pdb in pdbs.items():
        assert pdb["spec"]["maxUnavailable"] == 1
        deployment = _component(objects, "Deployment", component)
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
        assert deployment["spec"]["replicas"] == 2
    assert not _by_kind(render("ingest.pdb.enabled=false", "operator.pdb.enabled=false"), "PodDisruptionBudget")


def test_volume_permissions_is_the_only_root_container_and_only_chowns() -> None:
    assert all("initContainers" not in spec for _, spec in _pod_specs(render()))
    objects = render("volumePermissions.enabled=true")
    inits = [(name, c) for name, spec in _pod_specs(objects) for c in spec.get("initContainers", [])]
    assert len(inits) == 1
    _, init = inits[0]
    assert init["securityContext"]["runAsUser"] == 0
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert "chown 10001:10001 /var/lib/vidup" in init["command"][-1]
    assert [m["mountPath"] for m in init["volumeMounts"]] == ["/var/lib/vidup"]


def test_helm_test_uploads_a_generated_video_and_waits() -> None:
    pod = _by_kind(render("tests.timeoutSeconds=300"), "Pod")[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    assert container["image"].startswith("vidup/worker:")  # FFmpeg and the vidup command
    script = container["command"][-1]
    assert "testsrc2=size=320x240" in script and "sine=" in script and "duration=2" in script
    assert 'vidup upload /tmp/helm-test.mp4 --url "$VIDUP_URL" --token "$VIDUP_TOKEN" --wait --timeout 300' in script
    env = {e["name"]: e for e in container["env"]}
    assert env["VIDUP_URL"]["value"] == "http://vidup-ingest:80"
    assert env["HOME"]["value"].startswith("/tmp") and env["VIDUP_CACHE_DIR"]["value"].startswith("/tmp")


@pytest.mark.parametrize("values", [[], ["ingress.enabled=false"], ["auth.existingSecret=vidup-keys"], S3_SETS])
def test_notes_tell_how_to_get_a_key_and_upload(values: list[str]) -> None:
    # a client-side dry run renders NOTES.txt without a cluster
    args = [arg for pair in values for arg in ("--set", pair)]
    done = helm("install", "vidup", str(CHART), "-n", "media", "--dry-run=client", *args)
    notes = done.stdout.split("NOTES:", 1)[1]
    secret = "vidup-keys" if values == ["auth.existingSecret=vidup-keys"] else "vidup-auth"
    assert (f"kubectl -n media get secret {secret} -o jsonpath='{{.data.api-key}}' | base64 -d") in notes
    assert 'vidup upload my-video.mp4 --url "$VIDUP_URL" --token "$VIDUP_TOKEN" --wait' in notes
    assert 'new tus.Upload(file, {endpoint: VIDUP_URL + "/files/"' in notes
    if values == ["ingress.enabled=false"]:
        assert "kubectl -n media port-forward svc/vidup-ingest 8080:80" in notes
    assert "helm test vidup -n media" in notes
    if values == S3_SETS:
        assert "in the bucket s3://videos/ at http://seaweedfs:8333" in notes
        assert "the Secret vidup-s3 (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)" in notes
    else:
        assert "bucket" not in notes


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(CHART.parents[1])))
def test_readme_values_table_matches_the_schema(readme: Path) -> None:
    assert readme_table(readme) == values_table(), "regenerate with: .venv/bin/python tests/chart/chart_support.py"


def test_values_yaml_has_exactly_the_schemas_keys() -> None:
    """values.yaml sets every documented key (so the table's defaults are real) and no other."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = {key for key, _ in leaves(schema())} - {"global"}

    def keys(node: dict[str, Any], prefix: str = "") -> set[str]:
        found = set()
        for name, value in node.items():
            key = f"{prefix}{name}"
            if key in documented:
                found.add(key)
            elif isinstance(value, dict):
                found |= keys(value, key + ".")
            else:
                found.add(key)
        return found

    assert keys(values) == documented


SCALE_RULE = {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["vidup-worker"],
              "verbs": ["get", "patch"]}


def test_operator_autoscaling_grants_only_the_worker_deployments_scale() -> None:
    objects = render("worker.autoscaling.operator.enabled=true", "worker.autoscaling.operator.minReplicas=0",
                     "worker.autoscaling.operator.maxReplicas=6", "worker.autoscaling.operator.quietSeconds=45")
    role = _component(objects, "Role", "operator")
    assert role["rules"] == [*OPERATOR_RULES, SCALE_RULE]  # one name, one subresource, two verbs
    assert _component(objects, "Role", "ingest")["rules"] == INGEST_RULES
    worker = _component(objects, "Deployment", "worker")
    assert worker["metadata"]["name"] == SCALE_RULE["resourceNames"][0]
    assert "replicas" not in worker["spec"]  # the operator owns them: an upgrade must not reset them
    env = {e["name"]: e.get("value") for e in _container(objects, "operator")["env"]}
    assert {k: v for k, v in env.items() if k.startswith("VIDUP_AUTOSCALE_")} == {
        "VIDUP_AUTOSCALE_DEPLOYMENT": "vidup-worker", "VIDUP_AUTOSCALE_MIN": "0", "VIDUP_AUTOSCALE_MAX": "6",
        "VIDUP_AUTOSCALE_QUIET_SECONDS": "45", "VIDUP_AUTOSCALE_INTERVAL_SECONDS": "5",
    }
    assert not _by_kind(objects, "HorizontalPodAutoscaler") and not _by_kind(objects, "ScaledObject")
    # the drain covers a busy worker that a scale down picks: it finishes or hands its job back
    spec = worker["spec"]["template"]["spec"]
    drain = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}["VIDUP_WORKER_DRAIN_SECONDS"]
    assert 0 < int(drain) < spec["terminationGracePeriodSeconds"]
    # off (the default): no rule, no variables, the chart's replicas
    objects = render()
    assert _component(objects, "Role", "operator")["rules"] == OPERATOR_RULES
    assert not [e for e in _container(objects, "operator")["env"] if e["name"].startswith("VIDUP_AUTOSCALE_")]
    assert _component(objects, "Deployment", "worker")["spec"]["replicas"] == 2
    # a fullnameOverride renames the Deployment, and the rule follows
    objects = render("worker.autoscaling.operator.enabled=true", "fullnameOverride=media")
    assert _component(objects, "Role", "operator")["rules"][-1]["resourceNames"] == ["media-worker"]
    assert _component(objects, "Deployment", "worker")["metadata"]["name"] == "media-worker"


@pytest.mark.parametrize(("values", "extra", "complaint"), [
    (["worker.autoscaling.enabled=true"], (), "worker.autoscaling.operator.enabled excludes"),
    (["worker.autoscaling.keda.enabled=true"], (), "worker.autoscaling.operator.enabled excludes"),
    (["worker.autoscaling.keda.enabled=true"], ("--api-versions", "keda.sh/v1alpha1"),
     "worker.autoscaling.operator.enabled excludes"),
    (["worker.autoscaling.operator.minReplicas=5"], (), "minReplicas must not exceed maxReplicas"),
    (["worker.autoscaling.operator.maxReplicas=0"], (), SCHEMA_ERROR),
])
def test_one_scaler_at_a_time(values: list[str], extra: tuple[str, ...], complaint: str) -> None:
    done = helm("template", "vidup", str(CHART), *extra, "--set", "worker.autoscaling.operator.enabled=true",
                *[arg for pair in values for arg in ("--set", pair)], check=False)
    assert done.returncode != 0 and complaint in done.stderr, done.stderr


def test_metrics_ports_and_services_stay_inside_the_cluster() -> None:
    objects = render()
    services = {s["metadata"]["name"]: s for s in _by_kind(objects, "Service")}
    for component in VIDUP_COMPONENTS:
        container = _container(objects, component)
        assert {"name": "metrics", "containerPort": 9090} in container["ports"]
        assert {"name": "VIDUP_METRICS_PORT", "value": "9090"} in container["env"]
        service = services[f"vidup-{component}-metrics"]
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]
        deployment = _component(objects, "Deployment", component)
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    backends = [p["backend"]["service"] for i in _by_kind(objects, "Ingress")
                for r in i["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends == [{"name": "vidup-ingest", "port": {"name": "http"}}]  # never the metrics port
    assert not _by_kind(objects, "ServiceMonitor")
    objects = render("metrics.enabled=false", "metrics.serviceMonitor.enabled=true",
                     extra=("--api-versions", "monitoring.coreos.com/v1"))
    assert not [s for s in _by_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert not _by_kind(objects, "ServiceMonitor")
    for component in VIDUP_COMPONENTS:
        container = _container(objects, component)
        assert "metrics" not in [p["name"] for p in container.get("ports", [])]
        assert "VIDUP_METRICS_PORT" not in [e["name"] for e in container["env"]]


def test_service_monitors_only_where_the_prometheus_operator_api_exists() -> None:
    assert not _by_kind(render("metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    prometheus = ("--api-versions", "monitoring.coreos.com/v1")
    assert not _by_kind(render(extra=prometheus), "ServiceMonitor")  # the API alone changes nothing
    objects = render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.interval=15s",
                     "metrics.serviceMonitor.labels.release=kube-prometheus", "metrics.port=9300", extra=prometheus)
    monitors = {m["metadata"]["labels"]["app.kubernetes.io/component"]: m for m in _by_kind(objects, "ServiceMonitor")}
    assert set(monitors) == set(VIDUP_COMPONENTS)
    services = {s["metadata"]["name"]: s for s in _by_kind(objects, "Service")}
    for component, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
        assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s",
                                                 "scrapeTimeout": "10s"}]
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["vidup"]}
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        selected = [name for name, s in services.items() if all(s["metadata"]["labels"].get(k) == v for k, v in wanted)]
        assert selected == [f"vidup-{component}-metrics"]  # only the metrics Service, not the ingest's http one
        assert services[selected[0]]["spec"]["ports"][0]["port"] == 9300
        assert {"name": "metrics", "containerPort": 9300} in _container(objects, component)["ports"]


def test_the_grafana_dashboard_ships_in_a_configmap_for_the_sidecar_only_when_asked() -> None:
    assert not [c for c in _by_kind(render(), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    objects = render("metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.namespace=monitoring")
    (config_map,) = [c for c in _by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "vidup-dashboard"]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vidup"
    shipped = json.loads(config_map["data"]["vidup-overview.json"])
    assert shipped == json.loads((CHART / "dashboards" / "vidup-overview.json").read_text())
