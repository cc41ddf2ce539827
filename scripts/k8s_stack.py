"""Register (or update) the ZenML stacks that run mbad on Kubernetes, from environment variables.
Idempotent. Run through `make k8s-stack`; docs/kubernetes.md walks through the values.

Two stacks share every component but the orchestrator:
  mbad-k8s       ZenML's Kubernetes orchestrator (one Job per step, CronJobs for schedules)
  mbad-kubeflow  ZenML's Kubeflow orchestrator (KFP 2; needs `zenml integration install kubeflow`)
Secrets go into ZenML secrets; stack components hold only `{{secret.key}}` references.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from setup_stack import ensure_component, ensure_secret, secret_ref  # noqa: E402  (scripts/ is on sys.path when run)

K8S_STACK = "mbad-k8s"
KUBEFLOW_STACK = "mbad-kubeflow"
# The service accounts of k8s/base/rbac.yaml. Without them ZenML creates its own account bound
# to the cluster-wide `edit` role.
ORCHESTRATOR_ACCOUNT = "mbad-orchestrator"
STEP_ACCOUNT = "mbad-step"
MLFLOW_SECRET = "mbad-mlflow"
ARTIFACT_SECRET = "mbad-artifact-store"
# The Hugging Face token for gated models (Aya): a secret attached to the stacks, whose keys
# ZenML sets as environment variables inside every step at run time (never in a pod spec).
HF_SECRET = "mbad-hf"
ARTIFACT_FLAVORS = {"s3": "s3", "gs": "gcp", "az": "azure", "abfs": "azure"}
# Every pod ZenML starts: the label k8s/base/networkpolicy.yaml admits to MLflow and MinIO, and
# the security contexts of the namespace's `restricted` Pod Security profile. Run configs add
# GPUs per step (configs/k8s); ZenML merges their pod settings into these.
POD_SECURITY = {
    "labels": {"mbad.io/role": "pipeline"},
    "additional_pod_spec_args": {"security_context": {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }},
    "container_security_context": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
}
STEP_POD = {**POD_SECURITY, "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}}
ORCHESTRATOR_POD = {**POD_SECURITY, "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                                  "limits": {"cpu": "1", "memory": "1Gi"}}}

REQUIRED = {
    "MBAD_KUBE_CONTEXT": "kubectl context of the cluster (`kubectl config get-contexts`)",
    "MBAD_ARTIFACT_STORE": "bucket for ZenML artifacts, e.g. s3://mbad-artifacts, gs://…, az://…",
    "MBAD_CONTAINER_REGISTRY": "registry the cluster pulls from, e.g. europe-docker.pkg.dev/PROJECT/mbad",
    "MBAD_MLFLOW_URI": "MLflow tracking server, e.g. http://mlflow.mbad.svc.cluster.local:5000",
    "MBAD_MLFLOW_USERNAME": "MLflow basic-auth user (MLFLOW_TRACKING_USERNAME in k8s/secrets.env)",
    "MBAD_MLFLOW_PASSWORD": "its password (MLFLOW_TRACKING_PASSWORD in k8s/secrets.env)",
}


def read_environment() -> dict[str, str]:
    """The settings, or an exit that names every missing variable and what it means."""
    missing = [f"  {name}: {meaning}" for name, meaning in REQUIRED.items() if not os.environ.get(name)]
    if missing:
        sys.exit("k8s-stack: set these environment variables:\n" + "\n".join(missing))
    env = {name: os.environ[name] for name in REQUIRED}
    scheme = urlparse(env["MBAD_ARTIFACT_STORE"]).scheme
    if scheme not in ARTIFACT_FLAVORS:
        sys.exit(f"k8s-stack: MBAD_ARTIFACT_STORE={env['MBAD_ARTIFACT_STORE']} must start with one of "
                 + ", ".join(f"{s}://" for s in ARTIFACT_FLAVORS))
    if bool(os.environ.get("MBAD_S3_KEY")) != bool(os.environ.get("MBAD_S3_SECRET")):
        sys.exit("k8s-stack: set both MBAD_S3_KEY and MBAD_S3_SECRET, or neither (cloud identity)")
    builder = os.environ.get("MBAD_IMAGE_BUILDER", "local")
    if builder not in ("local", "kaniko"):
        sys.exit(f"k8s-stack: MBAD_IMAGE_BUILDER={builder} must be `local` (Docker here) or `kaniko` (in the cluster)")
    env.update(
        MBAD_K8S_NAMESPACE=os.environ.get("MBAD_K8S_NAMESPACE", "mbad"),
        MBAD_IMAGE_BUILDER=builder,
        MBAD_KUBEFLOW_HOST=os.environ.get("MBAD_KUBEFLOW_HOST", ""),
        MBAD_KUBEFLOW_NAMESPACE=os.environ.get("MBAD_KUBEFLOW_NAMESPACE", "kubeflow"),
        MBAD_STACK=os.environ.get("MBAD_STACK", K8S_STACK),
    )
    if env["MBAD_STACK"] not in (K8S_STACK, KUBEFLOW_STACK):
        sys.exit(f"k8s-stack: MBAD_STACK={env['MBAD_STACK']} must be {K8S_STACK} or {KUBEFLOW_STACK}")
    return env


def ensure_stack(client, name: str, components: dict, secrets: list[str]) -> None:
    try:
        existing = client.get_stack(name)
    except KeyError:
        client.create_stack(name=name, components=components, secrets=secrets)
        print(f"registered stack '{name}'")
        return
    missing = [secret for secret in secrets if client.get_secret(secret).id not in set(existing.secrets)]
    client.update_stack(name, component_updates=components, add_secrets=missing or None)
    if missing:
        print(f"attached {', '.join(missing)} to stack '{name}'")


def artifact_store_configuration(env: dict[str, str]) -> dict:
    configuration: dict = {"path": env["MBAD_ARTIFACT_STORE"]}
    if os.environ.get("MBAD_S3_ENDPOINT"):  # MinIO or another S3-compatible store
        configuration["client_kwargs"] = {"endpoint_url": os.environ["MBAD_S3_ENDPOINT"]}
    # Without keys the pods use the cloud identity of their node or service account.
    if os.environ.get("MBAD_S3_KEY"):
        configuration.update(key=secret_ref(ARTIFACT_SECRET, "key"), secret=secret_ref(ARTIFACT_SECRET, "secret"))
    return configuration


def main() -> None:
    env = read_environment()
    if os.environ.get("MBAD_ZENML_URL"):
        # A shared ZenML server; without it the stacks go into the local store (tests, trials).
        subprocess.run(["zenml", "login", os.environ["MBAD_ZENML_URL"]], check=True)

    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    repository = Path(os.environ.get("ZENML_REPOSITORY_PATH", REPO_ROOT))
    if not (repository / ".zen").exists():
        Client.initialize(root=repository)
    client = Client()

    ensure_secret(client, MLFLOW_SECRET, {"username": env["MBAD_MLFLOW_USERNAME"], "password": env["MBAD_MLFLOW_PASSWORD"]})
    if os.environ.get("MBAD_S3_KEY"):
        ensure_secret(client, ARTIFACT_SECRET, {"key": os.environ["MBAD_S3_KEY"], "secret": os.environ["MBAD_S3_SECRET"]})
    stack_secrets = []
    if os.environ.get("MBAD_HF_TOKEN"):
        ensure_secret(client, HF_SECRET, {"HF_TOKEN": os.environ["MBAD_HF_TOKEN"]})
        stack_secrets.append(HF_SECRET)

    context, namespace = env["MBAD_KUBE_CONTEXT"], env["MBAD_K8S_NAMESPACE"]
    shared = {
        T.ARTIFACT_STORE: ("mbad-artifacts", ARTIFACT_FLAVORS[urlparse(env["MBAD_ARTIFACT_STORE"]).scheme],
                           artifact_store_configuration(env)),
        T.CONTAINER_REGISTRY: ("mbad-registry", "default", {"uri": env["MBAD_CONTAINER_REGISTRY"]}),
        T.IMAGE_BUILDER: ("mbad-image-builder", env["MBAD_IMAGE_BUILDER"],
                          {"kubernetes_context": context, "kubernetes_namespace": namespace}
                          if env["MBAD_IMAGE_BUILDER"] == "kaniko" else {}),
        T.EXPERIMENT_TRACKER: ("mbad-k8s-mlflow-tracker", "mlflow", {
            "tracking_uri": env["MBAD_MLFLOW_URI"],
            "tracking_username": secret_ref(MLFLOW_SECRET, "username"),
            "tracking_password": secret_ref(MLFLOW_SECRET, "password"),
        }),
        T.MODEL_REGISTRY: ("mbad-k8s-mlflow-registry", "mlflow", {}),
    }
    orchestrators = {
        K8S_STACK: ("mbad-k8s-orchestrator", "kubernetes", {
            "kubernetes_context": context,
            "kubernetes_namespace": namespace,
            "service_account_name": ORCHESTRATOR_ACCOUNT,
            "step_pod_service_account_name": STEP_ACCOUNT,
            "pod_settings": STEP_POD,
            "orchestrator_pod_settings": ORCHESTRATOR_POD,
            # Scheduled retraining: never two runs at once; keep a few finished Jobs to inspect.
            "concurrency_policy": "Forbid",
            "successful_jobs_history_limit": 3,
            "failed_jobs_history_limit": 3,
            "ttl_seconds_after_finished": 7 * 24 * 3600,
        }),
        KUBEFLOW_STACK: ("mbad-kubeflow-orchestrator", "kubeflow", {
            "kubernetes_context": context,
            "kubeflow_namespace": env["MBAD_KUBEFLOW_NAMESPACE"],
            **({"kubeflow_hostname": env["MBAD_KUBEFLOW_HOST"]} if env["MBAD_KUBEFLOW_HOST"] else {}),
        }),
    }
    for component_type, (name, flavor, configuration) in shared.items():
        ensure_component(client, name, component_type, flavor, configuration)
    for stack, (name, flavor, configuration) in orchestrators.items():
        ensure_component(client, name, T.ORCHESTRATOR, flavor, configuration)
        ensure_stack(client, stack, {T.ORCHESTRATOR: name, **{t: c[0] for t, c in shared.items()}}, stack_secrets)

    if client.active_stack_model.name != env["MBAD_STACK"]:
        client.activate_stack(env["MBAD_STACK"])
    print(f"ZenML stack '{env['MBAD_STACK']}' is active: kube context '{context}', namespace '{namespace}', "
          f"artifacts {env['MBAD_ARTIFACT_STORE']}, images {env['MBAD_CONTAINER_REGISTRY']}, MLflow {env['MBAD_MLFLOW_URI']}")


if __name__ == "__main__":
    main()
