from pathlib import Path
from typing import Annotated

import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from mbad.adapters import AdapterDirectory
from mbad.config import DetoxConfig
from mbad.eval.compare import ModelEvidence
from mbad.report import format_table
from mbad.training_report import Registration, log_report
from steps._stack import EXPERIMENT_TRACKER


@step(experiment_tracker=EXPERIMENT_TRACKER)
def report(
    base_scores: pd.DataFrame,
    tuned_scores: pd.DataFrame,
    base_knowledge: pd.DataFrame,
    tuned_knowledge: pd.DataFrame,
    base_fluency: pd.DataFrame,
    tuned_fluency: pd.DataFrame,
    judge_quality: dict,
    adapter: AdapterDirectory,
    config: DetoxConfig,
    data_hash: str,
    pairs: pd.DataFrame | None = None,
) -> tuple[Annotated[pd.DataFrame, "detox_results"], Annotated[HTMLString, "detox_report"],
           Annotated[Registration, "registration"]]:
    """Every figure with its paired 95 % interval, to MLflow and ZenML, and what registering the
    adapter takes (its MLflow run, tags, model card and metrics): `register_model` registers it."""
    logged = log_report(config, data_hash, ModelEvidence(base_scores, base_knowledge, base_fluency),
                        ModelEvidence(tuned_scores, tuned_knowledge, tuned_fluency), judge_quality, Path(adapter.path),
                        get_step_context().pipeline_run.name, pairs)
    run_id = logged.registration.run_id
    log_metadata(metadata={"metrics": logged.registration.metrics, "mlflow_run_id": run_id}, infer_model=True)
    log_metadata(metadata={"table": format_table(logged.estimates), "samples_per_prompt": config.generation.num_samples,
                           "mlflow_run_id": run_id, "judge": logged.judge})
    return logged.estimates, HTMLString(logged.html), logged.registration
