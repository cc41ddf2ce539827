"""k8s/: every overlay builds, validates strictly against several Kubernetes versions, and keeps
the security properties the cluster relies on."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import kubernetes_validate
import pytest

from tests.k8s.conftest import K8S, OVERLAYS

KUBERNETES_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33"]
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet"}


def pod_specs(objects: list[dict]):
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            template = obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else obj["spec"]["template"]
            yield obj["metadata"]["name"], template["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def test_every_overlay_builds(overlays):
    for overlay in OVERLAYS:
        kinds = {obj["kind"] for obj in overlays[overlay]}
        assert {"Namespace", "Deployment", "StatefulSet", "Service", "NetworkPolicy", "ServiceAccount"} <= kinds, overlay


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_objects_validate_strictly(overlays, kubernetes_version):
    """Strict: an unknown or misspelt field fails, not only a wrong type."""
    for overlay, objects in overlays.items():
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, kubernetes_version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} on {kubernetes_version}: {error.message}")


def test_all_objects_live_in_the_mbad_namespace(overlays):
    cluster_scoped = {"Namespace", "StorageClass"}
    for overlay, objects in overlays.items():
        for obj in objects:
            if obj["kind"] not in cluster_scoped:
                assert obj["metadata"].get("namespace") == "mbad", f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"


def test_every_container_runs_as_non_root_with_restricted_security(overlays):
    for overlay, objects in overlays.items():
        for name, spec in pod_specs(objects):
            pod = spec.get("securityContext", {})
            assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) > 0, f"{overlay}/{name}"
            assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{overlay}/{name}"
            for container in containers(spec):
                security = container.get("securityContext", {})
                assert security.get("allowPrivilegeEscalation") is False, f"{overlay}/{name}/{container['name']}"
                assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{overlay}/{name}/{container['name']}"
                assert not security.get("privileged"), f"{overlay}/{name}/{container['name']}"


def test_every_container_has_requests_and_limits(overlays):
    for overlay, objects in overlays.items():
        for name, spec in pod_specs(objects):
            for container in containers(spec):
                resources = container.get("resources", {})
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{overlay}/{name}/{container['name']} {kind}"


def test_images_are_pinned_to_a_version(overlays):
    for overlay, objects in overlays.items():
        for name, spec in pod_specs(objects):
            for container in containers(spec):
                image = container["image"]
                tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
                assert tag and tag != "latest" and re.search(r"\d", tag), f"{overlay}/{name}: {image} is not pinned"


def test_servers_run_the_versions_we_install(base_objects):
    images = {c["image"] for _, spec in pod_specs(base_objects) for c in containers(spec)}
    assert f"ghcr.io/mlflow/mlflow:v{version('mlflow')}-full" in images
    assert f"zenmldocker/zenml-server:{version('zenml')}" in images


def test_secrets_are_only_references(overlays):
    """No Secret object and no literal credential: every sensitive variable is a secretKeyRef
    into `mbad-secrets`, whose keys are exactly those of k8s/secrets.example.env."""
    example_keys = {line.split("=", 1)[0] for line in (K8S / "secrets.example.env").read_text().splitlines()
                    if line and not line.startswith("#")}
    sensitive = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|ACCESS")
    referenced = set()
    for overlay, objects in overlays.items():
        assert not [obj for obj in objects if obj["kind"] == "Secret"], overlay
        for name, spec in pod_specs(objects):
            for container in containers(spec):
                for variable in container.get("env", []):
                    reference = variable.get("valueFrom", {}).get("secretKeyRef")
                    if sensitive.search(variable["name"]):
                        assert reference and "value" not in variable, f"{overlay}/{name}: {variable['name']} is a literal"
                    if reference:
                        assert reference["name"] == "mbad-secrets"
                        referenced.add(reference["key"])
                    # Connection strings carry no password (libpq and ZenML read them separately).
                    assert not re.search(r"://[^/@:]+:[^/@]+@", str(variable.get("value", ""))), variable
    assert referenced == example_keys


def test_example_secrets_are_placeholders():
    values = [line.split("=", 1)[1] for line in (K8S / "secrets.example.env").read_text().splitlines()
              if line and not line.startswith("#")]
    assert values and set(values) == {"changeme"}
    assert "secrets.env" in (K8S / ".gitignore").read_text().split()


def test_rbac_is_namespaced_and_limited_to_what_zenml_uses(base_objects):
    kinds = {obj["kind"] for obj in base_objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    role = next(obj for obj in base_objects if obj["kind"] == "Role")
    granted = {(group, resource) for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == {("", "pods"), ("", "pods/log"), ("batch", "jobs"), ("batch", "cronjobs")}
    assert next(r for r in role["rules"] if r["resources"] == ["pods/log"])["verbs"] == ["get"]
    step_account = next(obj for obj in base_objects if obj["kind"] == "ServiceAccount" and obj["metadata"]["name"] == "mbad-step")
    assert step_account["automountServiceAccountToken"] is False


def ingress_sources(objects: list[dict], app: str) -> list[dict]:
    policy = next(obj for obj in objects if obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] == app)
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": app}
    return [source for rule in policy["spec"]["ingress"] for source in rule.get("from", [])]


def test_network_policies_admit_only_pipeline_pods_to_mlflow_and_the_databases(base_objects):
    deny = next(obj for obj in base_objects if obj["metadata"]["name"] == "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    pipeline = {"podSelector": {"matchLabels": {"mbad.io/role": "pipeline"}}}

    def app(name: str) -> dict:
        return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}

    assert ingress_sources(base_objects, "mlflow") == [pipeline]
    assert ingress_sources(base_objects, "postgres") == [app("mlflow")]
    assert ingress_sources(base_objects, "mysql") == [app("zenml-server")]
    assert pipeline in ingress_sources(base_objects, "minio")


def test_cloud_overlays_pin_the_gpu_check_to_their_pool(overlays):
    expected = {
        "gke": ({"cloud.google.com/gke-accelerator": "nvidia-l4"}, {"nvidia.com/gpu"}, "standard-rwo"),
        "eks": ({}, {"nvidia.com/gpu"}, "mbad-gp3"),
        "aks": ({"kubernetes.azure.com/accelerator": "nvidia"}, {"nvidia.com/gpu", "sku"}, "managed-csi"),
    }
    for overlay, (selector, taints, storage_class) in expected.items():
        objects = overlays[overlay]
        job = next(obj for obj in objects if obj["kind"] == "Job" and obj["metadata"]["name"] == "gpu-check")
        spec = job["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"mbad.io/pool": "gpu", **selector}
        assert {t["key"] for t in spec["tolerations"]} == taints
        assert all(t["effect"] == "NoSchedule" for t in spec["tolerations"])
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        for obj in objects:
            if obj["kind"] == "StatefulSet":
                assert obj["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == storage_class


def test_kubeflow_overlay_admits_the_kfp_namespace_and_drops_orchestrator_rbac(overlays):
    objects = overlays["kubeflow"]
    assert not [obj for obj in objects if obj["metadata"]["name"] == "mbad-orchestrator"]
    kfp = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}}
    assert kfp in ingress_sources(objects, "mlflow") and kfp in ingress_sources(objects, "minio")
    assert kfp not in ingress_sources(objects, "postgres")


def test_no_manifest_mentions_latest():
    for path in Path(K8S).rglob("*.yaml"):
        assert ":latest" not in path.read_text(), path
