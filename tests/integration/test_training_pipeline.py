"""detox_training end to end on a real ZenML store, MLflow (SQLite) and a tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mbad.adapters import read_adapter_meta
from mbad.tracking import tracking_uri
from tests.conftest import SHARED_DATA
from tests.corruptions import CASES
from tests.integration.conftest import run_detox_training, write_run_config

pytestmark = pytest.mark.integration
ISSUE_CASES = ["blank_text", "misaligned_counts", "wrong_script", "test_leaked_into_train", "not_utf8",
               "toxic_identical_to_neutral", "unreadable_file"]


@pytest.fixture(scope="module")
def first_run(tiny_training_run):
    return tiny_training_run


def test_run_completes_and_numbers_agree_in_zenml_and_mlflow(first_run, stack):
    _, run = first_run
    run = stack.get_pipeline_run(run.id)
    assert run.status.value == "completed"
    table = run.steps["report"].outputs["detox_results"][0].load()
    assert sorted(table["target"].unique()) == ["en", "ru", "zh"]
    # Every figure of both models, with its paired interval, per language.
    expected = {"toxicity_mean", "toxicity_probability", "expected_max_toxicity", "empty_share", "target_language_share",
                "fluency_perplexity", "indomain_perplexity", "udhr_perplexity", "capitals_accuracy",
                # The toxicity of in- and off-language completions, and the change's two parts.
                "toxicity_in_language", "toxicity_off_language", "toxicity_within_language", "toxicity_language_switching"}
    assert set(table["metric"]) == expected
    assert (table.groupby("target")["metric"].nunique() == len(expected)).all()
    toxicity = table[table["metric"] == "toxicity_mean"]
    assert toxicity[["base", "tuned", "change_pct_low", "change_pct_high"]].notna().all().all()
    assert (toxicity["change_pct_low"] <= toxicity["change_pct"]).all() and (toxicity["change_pct"] <= toxicity["change_pct_high"]).all()
    # The within-language and switching parts add up to the total change, language by language.
    parts = table.pivot(index="target", columns="metric", values="diff")
    estimable = parts["toxicity_within_language"].notna()
    assert np.allclose((parts["toxicity_within_language"] + parts["toxicity_language_switching"])[estimable],
                       parts["toxicity_mean"][estimable])

    metadata = run.steps["report"].run_metadata
    client = MlflowClient(tracking_uri())
    mlflow_run = client.get_run(metadata["mlflow_run_id"])
    logged = mlflow_run.data.metrics
    for row in table.itertuples():
        if row.metric == "toxicity_mean":
            assert logged[f"toxicity_mean/{row.target}"] == pytest.approx(row.tuned)
            assert logged[f"toxicity_change_pct_ci_low/{row.target}"] == pytest.approx(row.change_pct_low)
            assert logged[f"toxicity_change_pct_ci_high/{row.target}"] == pytest.approx(row.change_pct_high)
        elif row.metric == "udhr_perplexity":
            assert logged[f"udhr_perplexity/{row.target}"] == pytest.approx(row.tuned)
            assert logged[f"udhr_perplexity_base_ci_low/{row.target}"] == pytest.approx(row.base_low)
        for figure in ("auc", "style_bias"):
            assert f"judge_{figure}/{row.target}" in logged
    artifacts = {item.path for item in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"detox_results.csv", "toxicity_change.png"} <= artifacts
    assert "train_loss" in mlflow_run.data.metrics

    version = client.get_model_version("mbad-detox", run.steps["register_model"].run_metadata["mlflow_model_version"])
    assert version.tags["trained_languages"] == "en"
    assert version.tags["evaluated_languages"] == "en,ru,zh"
    assert len(version.tags["data_hash"]) == 16 and version.tags["method"] == "sft"
    # The per-prompt evidence a later gate pairs with, stored with the run.
    assert version.tags["evidence"] == f"runs:/{mlflow_run.info.run_id}/evidence/clusters.csv"
    evidence = pd.read_csv(mlflow.artifacts.download_artifacts(version.tags["evidence"], tracking_uri=tracking_uri()))
    assert set(evidence["side"]) == {"base", "tuned"} and {"toxicity_mean", "udhr_perplexity"} <= set(evidence["figure"])
    assert len(evidence[(evidence["figure"] == "toxicity_mean") & (evidence["side"] == "tuned")]) == 3 * 3
    scores = run.steps["score_tuned"].outputs["toxicity_scores"][0].load()
    assert version.tags["judge.identity_hash"] and {version.tags["judge.identity_hash"]} == {
        name.partition(":")[2] for name in scores["judge"]}
    assert not client.get_registered_model("mbad-detox").aliases  # promotion is a separate, gated job
    # The figures are linked to the logged model too (MLflow's model page lists them).
    linked = {metric.key: metric.value for metric in client.get_logged_model(version.source.removeprefix("models:/")).metrics}
    assert linked["toxicity_mean/en"] == pytest.approx(logged["toxicity_mean/en"]) and len(linked) >= len(table)

    zenml_model = stack.get_model_version("mbad-detox", run.model_version.number)
    assert "metrics" in zenml_model.run_metadata


def test_registered_version_loads_and_generates(first_run, stack):
    _, run = first_run
    version = stack.get_pipeline_run(run.id).steps["register_model"].run_metadata["mlflow_model_version"]
    mlflow.set_tracking_uri(tracking_uri())
    model = mlflow.pyfunc.load_model(f"models:/mbad-detox/{version}")
    completions = model.predict(["Complete the sentence: you are", "Complete the sentence: ты"])
    assert len(completions) == 2 and all(isinstance(text, str) for text in completions)


def data_hash_of(run) -> str:
    return run.steps["load_data"].outputs["data_hash"][0].load()


def test_second_run_reads_the_data_again_and_reuses_what_it_did_not_change(first_run, stack, tiny_model_dir, tmp_path):
    """The load step reads the data in every run, where it runs, and hashes what it read; the
    steps after it are cached on that content, so the same rows read from another copy (a
    pod's volume) reuse the adapter, and one edited sentence retrains it."""
    config_path, first = first_run
    first = stack.get_pipeline_run(first.id)
    rerun = stack.get_pipeline_run(run_detox_training(config_path).id)
    statuses = {name: step.status.value for name, step in rerun.steps.items()}
    assert statuses["load_data"] == "completed" and data_hash_of(rerun) == data_hash_of(first)
    for name in ("validate_data", "train_judge", "train_adapter", "generate_base"):
        assert statuses[name] == "cached", statuses

    copy = Path(shutil.copytree(SHARED_DATA, tmp_path / "data"))
    settings = yaml.safe_load(config_path.read_text())
    settings["parameters"]["config"]["data"] = {"data_dir": str(copy)}
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump(settings))
    same_rows = stack.get_pipeline_run(run_detox_training(elsewhere).id)
    assert data_hash_of(same_rows) == data_hash_of(first)
    assert {name: same_rows.steps[name].status.value for name in ("train_judge", "train_adapter", "generate_base")} == \
        dict.fromkeys(("train_judge", "train_adapter", "generate_base"), "cached")
    client = MlflowClient(tracking_uri())
    version_tags = client.get_model_version("mbad-detox", str(first.steps["register_model"].run_metadata["mlflow_model_version"])).tags
    assert version_tags["data_hash"] == data_hash_of(first)
    # Its MLflow run still shows the training, from the cached adapter's own record.
    reported = client.get_run(same_rows.steps["report"].run_metadata["mlflow_run_id"])
    assert reported.data.tags["training_from_cache"] == "true"
    adapter = same_rows.steps["train_adapter"].outputs["lora_adapter"][0].load()
    assert [m.value for m in client.get_metric_history(reported.info.run_id, "train_loss")] == \
        pytest.approx(read_adapter_meta(Path(adapter.path))["summary"]["losses"])

    neutral = copy / "en_train_neutral.csv"
    lines = neutral.read_text(encoding="utf-8").splitlines()
    neutral.write_text("\n".join([lines[0] + " indeed", *lines[1:]]) + "\n", encoding="utf-8")
    edited = stack.get_pipeline_run(run_detox_training(elsewhere).id)
    assert edited.status.value == "completed" and data_hash_of(edited) != data_hash_of(first)
    assert edited.steps["train_adapter"].status.value == "completed"


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


def test_another_generation_seed_lands_inside_the_first_runs_intervals(stack, tiny_model_dir, tmp_path):
    """The same evaluation with another sampling seed: the point estimates move (the seed is used)
    but stay within the first run's 95 % intervals. Not every one of them: on the same prompts
    only the sampling noise changes, and each figure of the second run falls outside the first's
    interval with a probability of up to about 16 % (when prompts differ by nothing but noise),
    so the test asks for most of them inside and the distances small on average."""
    tables = {}
    for seed in (42, 7):
        # The paper's prompts: the tiny model's completions of them have the spread of scores the
        # bounds below were set for (its 6-token continuations of half sentences vary more between seeds).
        generation = {"max_prompts_per_language": 24, "num_samples": 2, "max_new_tokens": 6, "seed": seed,
                      "protocol": "paper_instruction"}
        config = write_run_config(tmp_path / f"seed{seed}.yaml", tiny_model_dir, generation=generation)
        run = stack.get_pipeline_run(run_detox_training(config).id)
        table = run.steps["report"].outputs["detox_results"][0].load()
        tables[seed] = table[table["metric"] == "toxicity_mean"].set_index("target")
    first, second = tables[42], tables[7]
    assert (first["n"] >= 20).all() and (second["n"] >= 20).all()
    assert not (first["tuned"].to_numpy() == second["tuned"].to_numpy()).all()
    inside, distances = [], []
    for part in ("base", "tuned", "change_pct"):
        low, high, value = first[f"{part}_low"], first[f"{part}_high"], second[part]
        inside += list((low <= value) & (value <= high))
        distances += list(abs(value - first[part]) / ((high - low) / 2))  # in half-widths of the first interval
    assert sum(inside) >= 6 and len(inside) == 9, (first, second)
    assert np.mean(distances) < 1, distances
