"""The pipelines against an MLflow server that requires a login (MLflow's `basic-auth` app on
loopback), as the MLflow of k8s/base does. `make setup` puts the credentials into a ZenML secret
and the stack's MLflow tracker holds only references to it; the test process has none in its
environment. Training (tracked steps) and promotion (steps that use an MLflow client of their
own) must both authenticate from the stack, and the password must not reach an artifact."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mbad.aliases import read_aliases
from tests.integration.conftest import run_detox_training, write_run_config
from tests.integration.registry import CREDENTIALS, LENIENT, MODEL, MlflowServer, run_promotion, serving

pytestmark = pytest.mark.integration

USER = "mbad-admin"


@pytest.fixture(scope="module")
def auth_server(stack, tmp_path_factory):
    with serving(MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), credentials=(USER, secrets.token_urlsafe(16)))) as server:
        yield server


def authenticated(server: MlflowServer) -> MlflowClient:
    """A client that logs in (the test's own view of the server, not what the steps use)."""
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = server.credentials
    return MlflowClient(server.uri)


def forget_credentials() -> None:
    """What a tracked step leaves in the process (ZenML's tracker exports them) is removed, so
    that a later step can only authenticate through the stack."""
    for key in CREDENTIALS:
        os.environ.pop(key, None)


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_training_and_promotion_authenticate_from_the_stack_secret(auth_server, stack, tiny_model_dir, tmp_path):
    from zenml.enums import StackComponentType

    password = auth_server.credentials[1]
    tracker = stack.get_stack_component(StackComponentType.EXPERIMENT_TRACKER, "mbad-mlflow-tracker")
    assert tracker.configuration["tracking_username"] == "{{mbad-mlflow-local.username}}"
    assert tracker.configuration["tracking_password"] == "{{mbad-mlflow-local.password}}"
    assert stack.get_secret("mbad-mlflow-local").secret_values == {"username": USER, "password": password}
    assert not any(key in os.environ for key in CREDENTIALS)
    with pytest.raises(MlflowException, match="401|[Uu]nauthori"):
        MlflowClient(auth_server.uri).search_experiments()  # the server does refuse anonymous clients

    config = write_run_config(tmp_path / "train.yaml", tiny_model_dir, train={"seed": 29},
                              generation={"max_prompts_per_language": 8, "max_new_tokens": 6})
    training = stack.get_pipeline_run(run_detox_training(config).id)
    assert training.status.value == "completed"
    version = str(training.steps["register_model"].run_metadata["mlflow_model_version"])

    forget_credentials()
    promotion = run_promotion(stack, tmp_path, challenger_version=version, gate=LENIENT)
    assert promotion.status.value == "completed"
    forget_credentials()

    client = authenticated(auth_server)
    try:
        assert read_aliases(client, MODEL)["champion"] == version
        registered = client.get_model_version(MODEL, version)
        assert registered.tags["validation_status"] == "approved"
        run = client.get_run(registered.run_id)
        assert run.data.metrics and run.info.run_name == training.name
    finally:
        forget_credentials()

    artifact_store = Path(stack.active_stack.artifact_store.path)
    leaked = files_containing(artifact_store, password.encode()) + files_containing(auth_server.root / "artifacts",
                                                                                     password.encode())
    assert not leaked, f"the MLflow password is in {leaked}"
