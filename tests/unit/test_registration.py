"""Registration from the MLflow run a report logged its evaluation in, on a real SQLite MLflow."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from mbad.config import DetoxConfig
from mbad.training_report import Registration, register_reported


@pytest.fixture
def mlflow_uri(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("detox_training", artifact_location=(tmp_path / "artifacts").as_uri())
    yield uri
    mlflow.set_tracking_uri("")  # the process's MLflow as the other tests found it


def reported_experiment(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.experiment_id


def test_the_adapter_becomes_a_version_logged_in_the_reports_finished_run(mlflow_uri, tmp_path):
    client = MlflowClient(mlflow_uri)
    reported = client.create_run(client.get_experiment_by_name("detox_training").experiment_id).info.run_id
    client.set_terminated(reported)  # the report's step ended its run
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    registration = Registration(run_id=reported, tags={"data_hash": "0123456789abcdef", "evaluated_languages": "en"},
                                card="# mbad-detox\n\n## Results", metrics={"toxicity_mean/en": 0.25, "judge_auc/en": 0.9})
    config = DetoxConfig()
    # The process tracked another pipeline's steps first, in another store: its active experiment
    # is not the report's (ZenML's local orchestrator runs every step in one process).
    other = MlflowClient(f"sqlite:///{tmp_path / 'other.db'}")
    other.create_experiment("a_first_pipeline", artifact_location=(tmp_path / "other").as_uri())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")
    assert mlflow.set_experiment("another_pipeline").experiment_id != reported_experiment(client, reported)

    version = register_reported(registration, adapter, config, mlflow_uri)

    registered = client.get_model_version(config.registry.model_name, version)
    assert registered.run_id == reported and registered.description == registration.card
    assert registration.tags.items() <= registered.tags.items()
    assert client.get_run(reported).data.metrics == registration.metrics
    linked = {metric.key: metric.value for metric in client.get_logged_model(registered.source.removeprefix("models:/")).metrics}
    assert linked == registration.metrics
    assert not client.get_registered_model(config.registry.model_name).aliases
    assert mlflow.active_run() is None  # the run is closed again

