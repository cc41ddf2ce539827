from typing import Annotated

import mlflow
import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from mbad.config import SweepConfig
from mbad.sweep import Setting
from mbad.sweep_report import report_sweep
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
    sweep, html = report_sweep(plan, lambda step_id, output: _output(run, step_id, output), config, judge_quality)
    log_metadata(metadata={"settings": len(settings), "rows": len(sweep.results), "mlflow_run_id": mlflow.active_run().info.run_id})
    return sweep.results, sweep.aggregates, HTMLString(html)
