"""Create (or reuse) the local ZenML stack with MLflow tracking and registry. Idempotent.

Run through `make setup`; `ZENML_CONFIG_PATH` and `MLFLOW_TRACKING_URI` come from the Makefile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mbad.paths import mbad_home  # noqa: E402
from mbad.tracking import ensure_experiments, tracking_uri  # noqa: E402

STACK = "mbad-local"
# The same components with ZenML's local Docker orchestrator: every step in a container of the
# pipeline image (`make image`), as on Kubernetes. Registered with `--docker`, never activated here.
DOCKER_STACK = "mbad-docker"
DOCKER_ORCHESTRATOR = "mbad-docker-orchestrator"
IMAGE_BUILDER = "mbad-local-image-builder"
TRACKER = "mbad-mlflow-tracker"
REGISTRY = "mbad-mlflow-registry"
LOCAL_MLFLOW_SECRET = "mbad-mlflow-local"
PIPELINES = ["detox_training", "cross_lingual_sweep", "promote_model", "retrain_new_languages"]


def ensure_component(client, name: str, component_type, flavor: str, configuration: dict) -> None:
    try:
        existing = client.get_stack_component(component_type, name)
    except KeyError:
        client.create_stack_component(name=name, flavor=flavor, component_type=component_type,
                                      configuration={key: value for key, value in configuration.items() if value is not None})
        print(f"registered {component_type.value} '{name}'")
        return
    if any(existing.configuration.get(key) != value for key, value in configuration.items()):
        # A None removes the setting (say, the credentials of a server no longer used).
        client.update_stack_component(name, component_type, configuration=configuration)
        print(f"updated {component_type.value} '{name}'")


def secret_ref(secret: str, key: str) -> str:
    """A reference ZenML resolves when a component is used; the value stays in the secret store."""
    return "{{" + f"{secret}.{key}" + "}}"


def ensure_secret(client, name: str, values: dict[str, str]) -> None:
    try:
        secret = client.get_secret(name)
    except KeyError:
        client.create_secret(name=name, values=values)
        print(f"registered secret '{name}'")
        return
    if secret.secret_values != values:
        client.update_secret(secret.id, add_or_update_values=values)
        print(f"updated secret '{name}'")


def tracker_configuration(client, uri: str) -> dict:
    """ZenML's MLflow tracker wants credentials for an http(s) server. MLFLOW_TRACKING_USERNAME /
    _PASSWORD (or _TOKEN) go into the ZenML secret `mbad-mlflow-local` and the tracker holds only
    references to it, which every step resolves (tracked or not: see `steps._stack`). Without
    them, a placeholder token, which a server without authentication ignores."""
    configuration = {"tracking_uri": uri, "tracking_username": None, "tracking_password": None, "tracking_token": None}
    if not uri.startswith(("http://", "https://")):
        return configuration
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        ensure_secret(client, LOCAL_MLFLOW_SECRET, {"username": os.environ["MLFLOW_TRACKING_USERNAME"],
                                                    "password": os.environ.get("MLFLOW_TRACKING_PASSWORD", "")})
        configuration.update(tracking_username=secret_ref(LOCAL_MLFLOW_SECRET, "username"),
                             tracking_password=secret_ref(LOCAL_MLFLOW_SECRET, "password"))
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        ensure_secret(client, LOCAL_MLFLOW_SECRET, {"token": os.environ["MLFLOW_TRACKING_TOKEN"]})
        configuration["tracking_token"] = secret_ref(LOCAL_MLFLOW_SECRET, "token")
    else:
        configuration["tracking_token"] = "unauthenticated"
    return configuration


def ensure_stack(client, name: str, components: dict) -> None:
    """Register the stack `name` of these components unless it exists."""
    try:
        client.get_stack(name)
    except KeyError:
        client.create_stack(name=name, components=components)
        print(f"registered stack '{name}'")


def ensure_docker_stack(client) -> None:
    from zenml.enums import StackComponentType

    ensure_component(client, DOCKER_ORCHESTRATOR, StackComponentType.ORCHESTRATOR, "local_docker", {})
    ensure_component(client, IMAGE_BUILDER, StackComponentType.IMAGE_BUILDER, "local", {})
    ensure_stack(client, DOCKER_STACK, {
        StackComponentType.ORCHESTRATOR: DOCKER_ORCHESTRATOR,
        StackComponentType.IMAGE_BUILDER: IMAGE_BUILDER,
        StackComponentType.ARTIFACT_STORE: "default",
        StackComponentType.EXPERIMENT_TRACKER: TRACKER,
        StackComponentType.MODEL_REGISTRY: REGISTRY,
    })


def main() -> None:
    import argparse

    from zenml.client import Client
    from zenml.enums import StackComponentType

    parser = argparse.ArgumentParser(description="the local ZenML stack (and, with --docker, its Docker twin)")
    parser.add_argument("--docker", action="store_true", help=f"also register '{DOCKER_STACK}' (local Docker orchestrator)")
    args = parser.parse_args()

    # The ZenML repository (where the active stack is recorded): the checkout, unless
    # ZENML_REPOSITORY_PATH points elsewhere (the tests use a private one).
    repository = Path(os.environ.get("ZENML_REPOSITORY_PATH", REPO_ROOT))
    if not (repository / ".zen").exists():
        Client.initialize(root=repository)
    client = Client()
    uri = tracking_uri()
    ensure_component(client, TRACKER, StackComponentType.EXPERIMENT_TRACKER, "mlflow", tracker_configuration(client, uri))
    ensure_component(client, REGISTRY, StackComponentType.MODEL_REGISTRY, "mlflow", {})
    ensure_stack(client, STACK, {
        StackComponentType.ORCHESTRATOR: "default",
        StackComponentType.ARTIFACT_STORE: "default",
        StackComponentType.EXPERIMENT_TRACKER: TRACKER,
        StackComponentType.MODEL_REGISTRY: REGISTRY,
    })
    if args.docker:
        ensure_docker_stack(client)
    if client.active_stack_model.name != STACK:
        client.activate_stack(STACK)
    ensure_experiments(PIPELINES)
    print(f"ZenML stack '{STACK}' is active (store: {os.environ.get('ZENML_CONFIG_PATH', '~/.config/zenml')})")
    print(f"MLflow tracking + registry: {uri} (artifacts: {mbad_home() / 'mlartifacts'})")


if __name__ == "__main__":
    main()
