"""configs/k8s: compiled on the Kubernetes stack, each step becomes the Job ZenML would submit.
GPU steps (training, generation, knowledge probes, representations) request GPUs, select the GPU
pool and tolerate its taint; every other step stays on CPU nodes."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.k8s.conftest import REPO_ROOT

GPU_FUNCTIONS = {"train_adapter", "generate", "evaluate_knowledge", "score_fluency", "represent"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def training_processes(config: str, *path: str) -> int:
    """`train.num_processes` in a run config: the training step gets one GPU per process."""
    train = yaml.safe_load((REPO_ROOT / config).read_text())["parameters"]["config"]
    for key in path:
        train = train[key]
    return train["train"]["num_processes"]


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def as_the_api_server_reads_it(obj):
    """ZenML merges `container_security_context` into the client model's snake_case dict, whose
    unset fields are nulls under unknown keys; the API server drops those, and so do we."""
    if isinstance(obj, dict):
        return {k: as_the_api_server_reads_it(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [as_the_api_server_reads_it(v) for v in obj]
    return obj


def assert_valid_and_restricted(job: dict, where: str) -> None:
    job = as_the_api_server_reads_it({"apiVersion": "batch/v1", "kind": job.get("kind", "Job"), **job})
    for kubernetes_version in ("1.29", "1.33"):
        try:
            kubernetes_validate.validate(job, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where} on {kubernetes_version}: {error.message}")
    spec = job["spec"]["jobTemplate"]["spec"]["template"]["spec"] if job["kind"] == "CronJob" else pod_spec(job)
    template = job["spec"]["jobTemplate"]["spec"]["template"] if job["kind"] == "CronJob" else job["spec"]["template"]
    # The namespace enforces the restricted Pod Security profile; NetworkPolicies admit this label.
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0, where
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
    container = spec["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, where
    assert template["metadata"]["labels"]["mbad.io/role"] == "pipeline", where
    assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where


def assert_gpu_steps_only(rendered: dict, gpus_for_training: int) -> set[str]:
    gpu_steps = set()
    for name, job in rendered["steps"].items():
        spec = pod_spec(job)
        limits = spec["containers"][0]["resources"]["limits"]
        assert spec["serviceAccountName"] == "mbad-step", name
        if rendered["step_functions"][name] in GPU_FUNCTIONS:
            gpu_steps.add(name)
            expected = gpus_for_training if rendered["step_functions"][name] == "train_adapter" else 1
            assert limits.get("nvidia.com/gpu") == str(expected), f"{name}: GPU limit {limits}"
            assert spec.get("nodeSelector") == {"mbad.io/pool": "gpu"}, name
            assert GPU_TOLERATION in spec.get("tolerations", []), name
        else:
            assert "nvidia.com/gpu" not in limits, f"{name} runs on CPU nodes"
            assert not spec.get("nodeSelector") and not spec.get("tolerations"), name
        assert_valid_and_restricted(job, name)
    return gpu_steps


def test_training_puts_exactly_the_gpu_steps_on_the_gpu_pool(render):
    rendered = render("pipelines.training.detox_training", "configs/k8s/training.yaml")
    gpu_steps = assert_gpu_steps_only(rendered, training_processes("configs/k8s/training.yaml"))
    assert gpu_steps == {"train_adapter", "generate_base", "generate_tuned", "knowledge_base", "knowledge_tuned",
                         "fluency_base", "fluency_tuned"}
    assert set(rendered["steps"]) - gpu_steps == {"load_data", "validate_data", "train_judge", "score_base",
                                                  "score_tuned", "report", "register_model"}


def test_the_orchestrator_pod_is_small_and_uses_its_own_account(render):
    job = render("pipelines.training.detox_training", "configs/k8s/training.yaml")["orchestrator"]
    spec = pod_spec(job)
    assert spec["serviceAccountName"] == "mbad-orchestrator"
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"] and not spec.get("tolerations")
    assert_valid_and_restricted(job, "orchestrator")


def needs_module(module: str):
    present = (REPO_ROOT / (module.replace(".", "/") + ".py")).exists()
    return pytest.mark.skipif(not present, reason=f"{module} does not exist yet (written in another issue)")


@needs_module("pipelines.sweep")
def test_sweep_puts_every_training_and_evaluation_on_the_gpu_pool(render):
    rendered = render("pipelines.sweep.cross_lingual_sweep", "configs/k8s/sweep.yaml")
    gpu_steps = assert_gpu_steps_only(rendered, training_processes("configs/k8s/sweep.yaml", "base"))
    trained = {name for name in gpu_steps if rendered["step_functions"][name] == "train_adapter"}
    assert len(trained) == 13  # xft per language (9), pft per fraction (3), mft


@needs_module("pipelines.retraining")
def test_scheduled_retraining_becomes_a_cron_job_with_gpu_step_templates(render):
    rendered = render("pipelines.retraining.retrain_new_languages", "configs/k8s/retraining.yaml")
    # A dynamic pipeline's steps exist at run time; their pod settings come from the templates of
    # `@pipeline(dynamic=True, depends_on=[...])`. Without them the GPU settings are dropped.
    assert {"train_adapter", "generate", "evaluate_knowledge"} <= set(rendered["step_functions"].values()), \
        "pipelines/retraining.py must declare depends_on=[train_adapter, generate, evaluate_knowledge]"
    assert_gpu_steps_only(rendered, training_processes("configs/k8s/retraining.yaml", "detox"))

    cron_job = rendered["cron_job"]
    assert cron_job["kind"] == "CronJob" and cron_job["spec"]["schedule"] == "0 3 * * 1"
    assert cron_job["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod_spec(cron_job["spec"]["jobTemplate"])["serviceAccountName"] == "mbad-orchestrator"
    assert_valid_and_restricted(cron_job, "retraining CronJob")


@pytest.mark.parametrize("config", ["training.yaml", "sweep.yaml", "retraining.yaml"])
def test_pods_run_the_pipeline_image_and_install_nothing(config):
    """The pods' image is the one `make image` builds (docker/Dockerfile, the CUDA variant of this
    version): ZenML builds on it without installing requirements, so there is one torch, no dev tools."""
    import sys

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from build_image import project_version

    version = project_version()
    docker = yaml.safe_load((REPO_ROOT / "configs" / "k8s" / config).read_text())["settings"]["docker"]
    assert docker["parent_image"] == f"mbad-pipeline:{version}-cuda"
    assert docker["install_stack_requirements"] is False
    assert not docker.get("requirements") and not docker.get("required_integrations")
    assert docker["user"] == "1000"


def test_the_documented_data_volume_mounts_read_only_into_the_load_step(render, tmp_path):
    """docs/kubernetes.md's "Data from a volume" snippet, merged into configs/k8s/training.yaml:
    the load_data Job mounts the overlays' claim read-only at /data and validates; no other step
    mounts it; the claim is in every cloud overlay."""
    import re

    docs = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    section = docs[docs.index("### Data from a volume"):]
    snippet = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    config = yaml.safe_load((REPO_ROOT / "configs" / "k8s" / "training.yaml").read_text())
    config["steps"]["load_data"] = snippet["steps"]["load_data"]
    config["parameters"]["config"]["data"].update(snippet["parameters"]["config"]["data"])
    path = tmp_path / "training-data-volume.yaml"
    path.write_text(yaml.safe_dump(config))

    rendered = render("pipelines.training.detox_training", str(path))
    for name, job in rendered["steps"].items():
        spec = pod_spec(job)
        claims = [v for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]
        if name == "load_data":
            assert claims == [{"name": "data", "persistentVolumeClaim": {"claimName": "mbad-data", "readOnly": True}}]
            mounts = spec["containers"][0]["volumeMounts"]
            assert {"name": "data", "mountPath": "/data", "readOnly": True} in mounts
        else:
            assert not claims, f"{name} mounts the data volume"
        assert_valid_and_restricted(job, name)


def test_cloud_overlays_create_the_data_claim(overlays):
    for overlay in ("gke", "eks", "aks"):
        claims = [obj for obj in overlays[overlay] if obj["kind"] == "PersistentVolumeClaim"]
        assert [claim["metadata"]["name"] for claim in claims] == ["mbad-data"], overlay
