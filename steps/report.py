import json
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from mbad.config import DetoxConfig
from mbad.eval.metrics import compare_models, toxicity_by_language
from mbad.registry import register_adapter, version_tags
from mbad.report import format_table, metrics_for_mlflow, plot_comparison, png_to_image, render_html
from mbad.training import AdapterDirectory
from steps._stack import EXPERIMENT_TRACKER


@step(experiment_tracker=EXPERIMENT_TRACKER)
def report(
    base_scores: pd.DataFrame,
    tuned_scores: pd.DataFrame,
    base_knowledge: dict[str, dict[str, float]],
    tuned_knowledge: dict[str, dict[str, float]],
    judge_auc: dict[str, float],
    adapter: AdapterDirectory,
    config: DetoxConfig,
    data_hash: str,
) -> tuple[Annotated[pd.DataFrame, "detox_results"], Annotated[HTMLString, "detox_report"]]:
    """Metrics, table and plot to MLflow and ZenML; the adapter as a new registry version."""
    threshold = config.judge.threshold
    comparison = compare_models(
        toxicity_by_language(base_scores, threshold), toxicity_by_language(tuned_scores, threshold),
        base_knowledge["perplexity"], tuned_knowledge["perplexity"],
    )
    comparison.insert(0, "source", "+".join(config.train.source_languages))
    metrics = metrics_for_mlflow(comparison, judge_auc)
    png = plot_comparison(comparison, "+".join(config.train.source_languages))
    mlflow.log_params({"base_model": config.model.name_or_path, "judge": config.judge.backend, "data_hash": data_hash,
                       "source_languages": ",".join(config.train.source_languages),
                       "target_languages": ",".join(config.target_languages)})
    mlflow.log_metrics(metrics)
    mlflow.log_table(comparison, artifact_file="detox_results.json")
    mlflow.log_text(comparison.to_csv(index=False), "detox_results.csv")
    mlflow.log_image(png_to_image(png), "toxicity_change.png")
    mlflow.log_dict(config.model_dump(), "config.json")
    tags = version_tags(config.train.source_languages, config.target_languages, data_hash, config.model_dump(), metrics)
    tags["zenml_run"] = get_step_context().pipeline_run.name
    version = register_adapter(Path(adapter.path), config.registry.model_name, tags, config.generation.model_dump())
    log_metadata(metadata={"metrics": metrics, "mlflow_model_version": version,
                           "mlflow_run_id": mlflow.active_run().info.run_id}, infer_model=True)
    log_metadata(metadata={"table": format_table(comparison), "mlflow_model_name": config.registry.model_name,
                           "mlflow_model_version": version, "mlflow_run_id": mlflow.active_run().info.run_id})
    html = render_html(comparison, png, "mbad: toxicity and perplexity, base vs fine-tuned",
                       {"source": ",".join(config.train.source_languages), "registry version": f"{config.registry.model_name} v{version}",
                        "judge": config.judge.backend, "judge AUC": json.dumps({k: round(v, 3) for k, v in judge_auc.items()})})
    return comparison, HTMLString(html)
