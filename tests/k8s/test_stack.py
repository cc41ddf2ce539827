"""`make k8s-stack` (scripts/k8s_stack.py) against a temporary ZenML store."""

from __future__ import annotations

import yaml

from tests.k8s.conftest import K8S, STACK_ENV, run_python, stack_dump


def test_registers_both_stacks_with_their_components(stacks):
    dump = stacks
    assert dump["active"] == "mbad-k8s"
    k8s, kubeflow = dump["stacks"]["mbad-k8s"], dump["stacks"]["mbad-kubeflow"]
    assert {t: c["flavor"] for t, c in k8s.items()} == {
        "orchestrator": "kubernetes", "artifact_store": "s3", "container_registry": "default",
        "image_builder": "local", "experiment_tracker": "mlflow", "model_registry": "mlflow",
    }
    # The Kubeflow variant differs only in its orchestrator.
    assert kubeflow["orchestrator"]["flavor"] == "kubeflow"
    assert {t: c["name"] for t, c in kubeflow.items() if t != "orchestrator"} == \
        {t: c["name"] for t, c in k8s.items() if t != "orchestrator"}

    orchestrator = k8s["orchestrator"]["configuration"]
    assert orchestrator["kubernetes_context"] == "mbad-test" and orchestrator["kubernetes_namespace"] == "mbad"
    assert kubeflow["orchestrator"]["configuration"]["kubeflow_hostname"] == STACK_ENV["MBAD_KUBEFLOW_HOST"]
    assert k8s["artifact_store"]["configuration"]["path"] == "s3://zenml"
    assert k8s["artifact_store"]["configuration"]["client_kwargs"] == {"endpoint_url": STACK_ENV["MBAD_S3_ENDPOINT"]}
    assert k8s["container_registry"]["configuration"]["uri"] == STACK_ENV["MBAD_CONTAINER_REGISTRY"]
    assert k8s["experiment_tracker"]["configuration"]["tracking_uri"] == STACK_ENV["MBAD_MLFLOW_URI"]


def test_service_accounts_are_the_least_privilege_ones_of_k8s_base(stacks):
    orchestrator = stacks["stacks"]["mbad-k8s"]["orchestrator"]["configuration"]
    accounts = {doc["metadata"]["name"] for doc in yaml.safe_load_all((K8S / "base" / "rbac.yaml").read_text())
                if doc["kind"] == "ServiceAccount"}
    # Without these ZenML would create an account bound to the cluster-wide `edit` role.
    assert orchestrator["service_account_name"] == "mbad-orchestrator"
    assert orchestrator["step_pod_service_account_name"] == "mbad-step"
    assert {"mbad-orchestrator", "mbad-step"} <= accounts


def test_credentials_live_in_zenml_secrets_not_in_components(stacks):
    dump = stacks
    assert dump["secrets"]["mbad-mlflow"] == {"username": STACK_ENV["MBAD_MLFLOW_USERNAME"],
                                              "password": STACK_ENV["MBAD_MLFLOW_PASSWORD"]}
    tracker = dump["stacks"]["mbad-k8s"]["experiment_tracker"]["configuration"]
    assert tracker["tracking_password"] == "{{mbad-mlflow.password}}"
    artifact_store = dump["stacks"]["mbad-k8s"]["artifact_store"]["configuration"]
    assert artifact_store["secret"] == "{{mbad-artifact-store.secret}}"
    every_configuration = str(dump["stacks"])
    for name in ("MBAD_MLFLOW_PASSWORD", "MBAD_S3_SECRET", "MBAD_S3_KEY", "MBAD_HF_TOKEN"):
        assert STACK_ENV[name] not in every_configuration


def test_the_hf_token_reaches_every_step_as_an_environment_variable_from_a_stack_secret(stacks):
    """Gated models (Aya) need HF_TOKEN in the steps that load them: a ZenML secret attached to
    both stacks, which ZenML resolves into each step's environment when the step runs."""
    assert stacks["secrets"]["mbad-hf"] == {"HF_TOKEN": STACK_ENV["MBAD_HF_TOKEN"]}
    assert stacks["stack_secrets"] == {"mbad-k8s": ["mbad-hf"], "mbad-kubeflow": ["mbad-hf"]}
    assert stacks["step_environment_from_secrets"]["HF_TOKEN"] == STACK_ENV["MBAD_HF_TOKEN"]


def test_running_again_changes_nothing_and_switches_to_kubeflow_on_request(stacks, k8s_env):
    before = stacks["stacks"]
    again = run_python(["scripts/k8s_stack.py"], {**k8s_env, "MBAD_STACK": "mbad-kubeflow"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "registered" not in again.stdout and "updated" not in again.stdout
    after = stack_dump(k8s_env)
    assert after["stacks"] == before and after["active"] == "mbad-kubeflow"
    back = run_python(["scripts/k8s_stack.py"], k8s_env)  # later tests compile on mbad-k8s
    assert back.returncode == 0 and stack_dump(k8s_env)["active"] == "mbad-k8s"


def test_missing_settings_fail_early_naming_each_variable(k8s_env):
    env = {k: v for k, v in k8s_env.items() if k not in ("MBAD_MLFLOW_URI", "MBAD_CONTAINER_REGISTRY")}
    result = run_python(["scripts/k8s_stack.py"], env)
    assert result.returncode != 0
    assert "MBAD_MLFLOW_URI" in result.stderr and "MBAD_CONTAINER_REGISTRY" in result.stderr
    wrong = run_python(["scripts/k8s_stack.py"], {**k8s_env, "MBAD_ARTIFACT_STORE": "/local/path"})
    assert wrong.returncode != 0 and "MBAD_ARTIFACT_STORE" in wrong.stderr
