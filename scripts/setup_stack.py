"""Create (or reuse) the local ZenML stack with MLflow tracking and registry. Idempotent.

Run through `make setup`; `ZENML_CONFIG_PATH` and `MLFLOW_TRACKING_URI` come from the Makefile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mbad.config import mbad_home  # noqa: E402
from mbad.tracking import ensure_experiments, tracking_uri  # noqa: E402

STACK = "mbad-local"
TRACKER = "mbad-mlflow-tracker"
REGISTRY = "mbad-mlflow-registry"
PIPELINES = ["detox_training", "cross_lingual_sweep", "promote_model", "retrain_new_languages"]


def ensure_component(client, name: str, component_type, flavor: str, configuration: dict) -> None:
    try:
        existing = client.get_stack_component(component_type, name)
    except KeyError:
        client.create_stack_component(name=name, flavor=flavor, component_type=component_type, configuration=configuration)
        print(f"registered {component_type.value} '{name}'")
        return
    if any(existing.configuration.get(key) != value for key, value in configuration.items()):
        client.update_stack_component(name, component_type, configuration=configuration)
        print(f"updated {component_type.value} '{name}'")


def tracker_configuration(uri: str) -> dict:
    """ZenML's MLflow tracker wants credentials for an http(s) server: the MLflow env vars, else
    a placeholder token, which a server without authentication ignores."""
    configuration = {"tracking_uri": uri}
    if uri.startswith(("http://", "https://")):
        if os.environ.get("MLFLOW_TRACKING_USERNAME"):
            configuration["tracking_username"] = os.environ["MLFLOW_TRACKING_USERNAME"]
            configuration["tracking_password"] = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
        else:
            configuration["tracking_token"] = os.environ.get("MLFLOW_TRACKING_TOKEN", "unauthenticated")
    return configuration


def main() -> None:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    # The ZenML repository (where the active stack is recorded): the checkout, unless
    # ZENML_REPOSITORY_PATH points elsewhere (the tests use a private one).
    repository = Path(os.environ.get("ZENML_REPOSITORY_PATH", REPO_ROOT))
    if not (repository / ".zen").exists():
        Client.initialize(root=repository)
    client = Client()
    uri = tracking_uri()
    ensure_component(client, TRACKER, StackComponentType.EXPERIMENT_TRACKER, "mlflow", tracker_configuration(uri))
    ensure_component(client, REGISTRY, StackComponentType.MODEL_REGISTRY, "mlflow", {})
    try:
        client.get_stack(STACK)
    except KeyError:
        client.create_stack(
            name=STACK,
            components={
                StackComponentType.ORCHESTRATOR: "default",
                StackComponentType.ARTIFACT_STORE: "default",
                StackComponentType.EXPERIMENT_TRACKER: TRACKER,
                StackComponentType.MODEL_REGISTRY: REGISTRY,
            },
        )
        print(f"registered stack '{STACK}'")
    if client.active_stack_model.name != STACK:
        client.activate_stack(STACK)
    ensure_experiments(PIPELINES)
    print(f"ZenML stack '{STACK}' is active (store: {os.environ.get('ZENML_CONFIG_PATH', '~/.config/zenml')})")
    print(f"MLflow tracking + registry: {uri} (artifacts: {mbad_home() / 'mlartifacts'})")


if __name__ == "__main__":
    main()
