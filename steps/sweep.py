from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from mbad.config import SweepConfig
from mbad.eval.compare import ModelEvidence
from mbad.sweep import Setting, compare_sweep
from mbad.sweep_report import log_setting, log_sweep
from steps._stack import EXPERIMENT_TRACKER


def _output(run, step_name: str, output: str):
    return run.steps[step_name].outputs[output][0].load() if step_name in run.steps else None


@step(experiment_tracker=EXPERIMENT_TRACKER, enable_cache=False)
def collect_sweep(
    settings: list[dict], config: SweepConfig, judge_quality: dict
) -> tuple[Annotated[pd.DataFrame, "sweep_results"], Annotated[pd.DataFrame, "sweep_aggregates"],
           Annotated[HTMLString, "sweep_report"]]:
    """Fan-in: read every setting's evaluation from this run (its steps named by
    `Setting.step_id`), build the tidy table, heatmaps and aggregates, and log each setting as a
    nested MLflow run."""
    run = get_step_context().pipeline_run
    plan = [Setting(**{**s, "train_languages": tuple(s["train_languages"])}) for s in settings]
    by_name = {setting.name: setting for setting in plan}

    def output(setting: Setting, kind: str, name: str):
        return _output(run, setting.step_id(kind), name)

    sweep = compare_sweep(plan, lambda name: ModelEvidence(output(by_name[name], "score", "toxicity_scores"),
                                                           output(by_name[name], "knowledge", "knowledge_items"),
                                                           output(by_name[name], "fluency", "fluency")), config)
    for setting in plan:
        adapter = output(setting, "train", "lora_adapter")
        log_setting(setting, sweep.rows[setting.name], Path(adapter.path) if adapter is not None else None)
    separation = {s.name: output(s, "represent", "language_separation") for s in plan}
    html = log_sweep(config, sweep, separation, judge_quality)
    log_metadata(metadata={"settings": len(settings), "rows": len(sweep.results), "mlflow_run_id": mlflow.active_run().info.run_id})
    return sweep.results, sweep.aggregates, HTMLString(html)
