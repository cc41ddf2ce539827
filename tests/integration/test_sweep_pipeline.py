"""cross_lingual_sweep on the tiny model: the table's shape, and resuming a killed sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from mbad.config import SweepConfig
from mbad.sweep import SweepBudgetError, estimate, plan_settings
from tests.integration.conftest import TINY_JUDGE

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ["en", "es", "ru"]


def write_sweep_config(path: Path, tiny_model_dir: Path, **overrides) -> Path:
    config = {
        "model_label": "tiny-gemma",
        "languages": LANGUAGES,
        "fractions": [0.1, 0.2],
        "base": {
            "model": {"name_or_path": str(tiny_model_dir)},
            "train": {"max_examples_per_language": 8, "batch_size": 4, "checkpoint_every": 1},
            "generation": {"max_prompts_per_language": 2, "max_new_tokens": 4},
            "knowledge": {"max_sentences_per_language": 4},
            "judge": TINY_JUDGE,
        },
        "representations": {"max_sentences_per_language": 6},
    } | overrides
    path.write_text(yaml.safe_dump({"enable_cache": True, "parameters": {"config": config}}))
    return path


def run_sweep(config_path: Path):
    from pipelines.sweep import cross_lingual_sweep

    return cross_lingual_sweep.with_options(config_path=str(config_path))()


def test_sweep_table_has_every_mode_and_method_and_a_full_transfer_square(stack, tiny_model_dir, tmp_path):
    config = write_sweep_config(tmp_path / "sweep.yaml", tiny_model_dir, methods=["sft", "dpo"])
    run = stack.get_pipeline_run(run_sweep(config).id)
    assert run.status.value == "completed"
    results = run.steps["collect_sweep"].outputs["sweep_results"][0].load()
    assert list(results.columns) == ["model", "method", "mode", "source", "fraction", "target", "metric", "value", "ci_low",
                                     "ci_high", "n"]
    assert set(results["mode"]) == {"zs", "xft", "pft", "mft"}
    # Every mode for each method: the same grid, trained by SFT and by DPO.
    for method in ("sft", "dpo"):
        assert set(results[results["method"] == method]["mode"]) == {"xft", "pft", "mft"}
        square = results[(results["method"] == method) & (results["mode"] == "xft") & (results["metric"] == "toxicity_change_pct")]
        assert len(square) == len(LANGUAGES) ** 2
    assert set(results[results["mode"] == "zs"]["method"]) == {"none"}
    # Every cell is evaluated as the training pipeline evaluates a model: fluency included.
    fluency = results[results["metric"] == "fluency_perplexity_change_pct"]
    assert len(fluency) == len(results[results["metric"] == "toxicity_change_pct"]) and fluency["value"].notna().all()
    results = results[results["method"].isin(["sft", "none"])]
    toxicity = results[results["metric"] == "toxicity_change_pct"]
    square = toxicity[toxicity["mode"] == "xft"].pivot_table(index="source", columns="target", values="value")
    assert sorted(square.index) == LANGUAGES and sorted(square.columns) == LANGUAGES
    assert square.notna().all().all()
    assert sorted(toxicity[toxicity["mode"] == "pft"]["fraction"].unique()) == [0.1, 0.2]
    assert set(results[results["mode"] != "xft"]["source"]) == {"all"}
    # The base model is evaluated once: zs has no change against itself, and every change has its interval.
    assert toxicity[toxicity["mode"] == "zs"].empty
    # (Where a bootstrap of 3 prompts has base resamples at 0, the % change has no interval: NaN, not a number.)
    bounded = toxicity["ci_low"].notna() & toxicity["ci_high"].notna()
    assert bounded.sum() >= len(toxicity) // 2
    assert ((toxicity["ci_low"] <= toxicity["value"]) & (toxicity["value"] <= toxicity["ci_high"]))[bounded].all()
    aggregates = run.steps["collect_sweep"].outputs["sweep_aggregates"][0].load()
    assert {"same language", "same script", "different script"} <= set(aggregates["group"])
    assert (aggregates["prompts"] > 0).all() and (aggregates["count"] > 0).all()
    finite = aggregates[["ci_low", "ci_high"]].notna().all(axis=1)
    assert ((aggregates["ci_low"] <= aggregates["mean"]) & (aggregates["mean"] <= aggregates["ci_high"]))[finite].all()

    from mlflow.tracking import MlflowClient

    from mbad.tracking import tracking_uri

    client = MlflowClient(tracking_uri())
    parent = run.steps["collect_sweep"].run_metadata["mlflow_run_id"]
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    trained = ["xft_en", "xft_es", "xft_ru", "pft_10", "pft_20", "mft"]
    assert sorted(child.info.run_name for child in children) == sorted(["zs", *trained, *(f"dpo_{name}" for name in trained)])
    artifacts = {item.path for item in client.list_artifacts(parent)}
    assert {"results.csv", "method_comparison.csv", "silhouette.png", "sft_toxicity_change_pct.png",
            "dpo_toxicity_change_pct.png", "dpo_udhr_perplexity_change_pct.png"} <= artifacts
    methods = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="method_comparison.csv",
                                                              tracking_uri=tracking_uri()))
    # Each cell's parts of the toxicity change, next to its toxicity_mean row.
    parts = methods[methods["metric"] != "toxicity_mean"]
    assert set(parts["metric"]) == {"toxicity_within_language_change_pct", "toxicity_language_switching_change_pct"}
    assert len(parts[parts["mode"] == "xft"]) == 2 * len(LANGUAGES) ** 2
    comparison = methods[methods["metric"] == "toxicity_mean"]
    # DPO - SFT paired on the same prompts, per setting both ran and target, with its interval.
    assert len(comparison[comparison["mode"] == "xft"]) == len(LANGUAGES) ** 2 and (comparison["n"] == 2).all()
    assert set(comparison["mode"]) == {"xft", "pft", "mft"}


def test_killed_sweep_resumes_without_retraining(stack, tiny_model_dir, tmp_path):
    # A different seed: nothing of the first sweep is in the cache.
    config_path = write_sweep_config(tmp_path / "sweep.yaml", tiny_model_dir, fractions=[0.3])
    raw = yaml.safe_load(config_path.read_text())
    raw["parameters"]["config"]["base"]["train"]["seed"] = 1234
    config_path.write_text(yaml.safe_dump(raw))

    script = ("import sys; sys.path.insert(0, %r)\nfrom zenml.utils import source_utils\n"
              "source_utils.set_custom_source_root(%r)\nfrom pipelines.sweep import cross_lingual_sweep\n"
              "cross_lingual_sweep.with_options(config_path=%r)()\n") % (str(REPO_ROOT), str(REPO_ROOT), str(config_path))
    earlier_runs = {run.id for run in stack.list_pipeline_runs(pipeline_name="cross_lingual_sweep", size=100).items}
    process = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    finished_before_kill: set[str] = set()
    deadline = time.time() + 600
    try:
        while len(finished_before_kill) < 2:
            assert process.poll() is None, "the sweep ended before two adapters were trained"
            assert time.time() < deadline
            time.sleep(1)
            runs = [run for run in stack.list_pipeline_runs(pipeline_name="cross_lingual_sweep", size=100).items
                    if run.id not in earlier_runs]
            if runs:
                steps = stack.get_pipeline_run(runs[0].id).steps
                finished_before_kill = {name for name, s in steps.items()
                                        if name.startswith("train__") and s.status.value == "completed"}
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    killed = [run for run in stack.list_pipeline_runs(pipeline_name="cross_lingual_sweep", size=100).items
              if run.id not in earlier_runs]
    assert len(killed) == 1 and killed[0].status.value != "completed"
    rerun = stack.get_pipeline_run(run_sweep(config_path).id)
    assert rerun.status.value == "completed"
    for name in finished_before_kill:
        assert rerun.steps[name].status.value == "cached", name


def test_estimate_and_perspective_budget():
    config = SweepConfig.model_validate({"languages": LANGUAGES, "base": {"judge": {"backend": "perspective"}}})
    settings = plan_settings(config)
    assert [s.name for s in settings] == ["zs", "xft_en", "xft_es", "xft_ru", "pft_10", "pft_20", "pft_30", "mft"]
    plan = estimate(config.model_copy(update={"allow_over_budget": True}), settings, test_prompts_per_language=100)
    assert (plan.trainings, plan.judge_calls) == (7, 8 * 3 * 100)
    assert plan.perspective_hours == pytest.approx(2400 / 3600)
    with pytest.raises(SweepBudgetError, match="allow_over_budget"):
        estimate(config.model_copy(update={"perspective_budget_calls": 1000}), settings, 100)
    # The paper's grid per model: 14 evaluated models x 9 targets = 9 zs + 81 xft + 27 pft + 9 mft = 126 settings.
    paper = plan_settings(SweepConfig())
    assert len(paper) == 14 and len(paper) * 9 == 126
    assert sum(s.mode != "zs" for s in paper) == 13
