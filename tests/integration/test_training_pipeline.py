"""detox_training end to end on a real ZenML store, MLflow (SQLite) and a tiny model."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mbad.tracking import tracking_uri
from tests.corruptions import CASES
from tests.integration.conftest import run_detox_training, write_run_config

pytestmark = pytest.mark.integration
ISSUE_CASES = ["blank_text", "misaligned_counts", "wrong_script", "test_leaked_into_train", "not_utf8",
               "toxic_identical_to_neutral", "unreadable_file"]


@pytest.fixture(scope="module")
def first_run(stack, tiny_model_dir, tmp_path_factory):
    config_path = write_run_config(tmp_path_factory.mktemp("cfg") / "run.yaml", tiny_model_dir)
    return config_path, run_detox_training(config_path)


def test_run_completes_and_numbers_agree_in_zenml_and_mlflow(first_run, stack):
    _, run = first_run
    run = stack.get_pipeline_run(run.id)
    assert run.status.value == "completed"
    table = run.steps["report"].outputs["detox_results"][0].load()
    assert table["target"].tolist() == ["en", "ru", "zh"]
    assert table[["toxicity_base", "toxicity_tuned", "perplexity_base", "perplexity_tuned"]].notna().all().all()

    metadata = run.steps["report"].run_metadata
    client = MlflowClient(tracking_uri())
    mlflow_run = client.get_run(metadata["mlflow_run_id"])
    for row in table.itertuples():
        assert mlflow_run.data.metrics[f"toxicity_mean/{row.target}"] == pytest.approx(row.toxicity_tuned)
        assert mlflow_run.data.metrics[f"perplexity/{row.target}"] == pytest.approx(row.perplexity_tuned)
        assert f"judge_auc/{row.target}" in mlflow_run.data.metrics
    artifacts = {item.path for item in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"detox_results.csv", "toxicity_change.png"} <= artifacts
    assert "train_loss" in mlflow_run.data.metrics

    version = client.get_model_version("mbad-detox", metadata["mlflow_model_version"])
    assert version.tags["trained_languages"] == "en"
    assert version.tags["evaluated_languages"] == "en,ru,zh"
    assert len(version.tags["data_hash"]) == 16
    assert not client.get_registered_model("mbad-detox").aliases  # promotion is a separate, gated job

    zenml_model = stack.get_model_version("mbad-detox", run.model_version.number)
    assert "metrics" in zenml_model.run_metadata


def test_registered_version_loads_and_generates(first_run, stack):
    _, run = first_run
    version = stack.get_pipeline_run(run.id).steps["report"].run_metadata["mlflow_model_version"]
    mlflow.set_tracking_uri(tracking_uri())
    model = mlflow.pyfunc.load_model(f"models:/mbad-detox/{version}")
    completions = model.predict(["Complete the sentence: you are", "Complete the sentence: ты"])
    assert len(completions) == 2 and all(isinstance(text, str) for text in completions)


def test_second_run_reuses_cached_steps(first_run, stack):
    config_path, _ = first_run
    rerun = stack.get_pipeline_run(run_detox_training(config_path).id)
    statuses = {name: step.status.value for name, step in rerun.steps.items()}
    for name in ("load_data", "validate_data", "train_judge", "train_adapter", "generate_base"):
        assert statuses[name] == "cached", statuses


@pytest.mark.parametrize("case", ISSUE_CASES)
def test_bad_data_stops_before_training(case, stack, tiny_model_dir, data_copy, tmp_path):
    corrupt, check, named = CASES[case]
    corrupt(data_copy)
    config_path = write_run_config(tmp_path / "run.yaml", tiny_model_dir, data={"data_dir": str(data_copy)})
    versions_before = len(MlflowClient(tracking_uri()).search_model_versions("name='mbad-detox'"))

    with pytest.raises(RuntimeError, match="validate_data"):
        run_detox_training(config_path)

    run = stack.get_pipeline("detox_training").last_run
    assert run.status.value == "failed"
    validation = run.steps["validate_data"]
    assert validation.status.value == "failed"
    error = validation.exception_info.traceback
    assert f"check '{check}'" in error and named in error
    trained = run.steps.get("train_adapter")
    assert trained is None or trained.status.value != "completed"
    assert "report" not in run.steps
    assert len(MlflowClient(tracking_uri()).search_model_versions("name='mbad-detox'")) == versions_before
    report = stack.get_artifact_version("data_validation_report")
    assert report.run_metadata["step_run_id"] == str(validation.id)
    assert check in report.run_metadata["failed_checks"]
    assert "Great Expectations" in report.load()
