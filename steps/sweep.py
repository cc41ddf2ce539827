from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from mbad.config import SweepConfig
from mbad.eval.metrics import toxicity_by_language
from mbad.languages import LanguageRegistry
from mbad.report import images_html, plot_matrix, png_to_image
from mbad.representations import confusion_frame
from mbad.sweep import RESULT_COLUMNS, Setting, aggregate_by_script, tidy_rows, transfer_matrix
from mbad.training import read_adapter_meta
from steps._stack import EXPERIMENT_TRACKER


def _output(run, step_name: str, output: str):
    return run.steps[step_name].outputs[output][0].load() if step_name in run.steps else None


@step(experiment_tracker=EXPERIMENT_TRACKER, enable_cache=False)
def collect_sweep(
    settings: list[dict], config: SweepConfig, judge_auc: dict[str, float]
) -> tuple[Annotated[pd.DataFrame, "sweep_results"], Annotated[pd.DataFrame, "sweep_aggregates"],
           Annotated[HTMLString, "sweep_report"]]:
    """Fan-in: read every setting's scores and probes from this run, build the tidy table,
    heatmaps and aggregates, and log each setting as a nested MLflow run."""
    run = get_step_context().pipeline_run
    threshold, rows = config.base.judge.threshold, []
    base_toxicity = toxicity_by_language(_output(run, "score__zs", "toxicity_scores"), threshold)
    base_knowledge = _output(run, "knowledge__zs", "knowledge")
    separation = {}
    for setting in map(lambda s: Setting(**{**s, "train_languages": tuple(s["train_languages"])}), settings):
        toxicity = toxicity_by_language(_output(run, f"score__{setting.name}", "toxicity_scores"), threshold)
        setting_rows = tidy_rows(config.model_label, setting, toxicity, _output(run, f"knowledge__{setting.name}", "knowledge"),
                                 base_toxicity, base_knowledge)
        rows += setting_rows
        separation[setting.name] = _output(run, f"represent__{setting.name}", "language_separation")
        with mlflow.start_run(run_name=setting.name, nested=True):
            mlflow.log_params({"mode": setting.mode, "source": setting.source, "fraction": setting.fraction})
            adapter = _output(run, f"train__{setting.name}", "lora_adapter")
            if adapter is not None:
                summary = read_adapter_meta(Path(adapter.path))["summary"]
                mlflow.log_params({"train_examples": summary["examples"], "train_steps": summary["steps"]})
                for index, loss in enumerate(summary["losses"], start=1):
                    mlflow.log_metric("train_loss", loss, step=index)
            mlflow.log_metrics({f"{r['metric']}/{r['target']}": r["value"] for r in setting_rows if pd.notna(r["value"])})
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    aggregates = aggregate_by_script(results, LanguageRegistry.from_yaml(config.base.data.languages_file))

    images = {
        "toxicity_change_pct.png": plot_matrix(transfer_matrix(results, "toxicity_change_pct"),
                                                            f"{config.model_label}: toxicity change (%)"),
        "perplexity_change_pct.png": plot_matrix(transfer_matrix(results, "perplexity_change_pct"),
                                                              f"{config.model_label}: perplexity change (%)", cmap="PuOr_r"),
    }
    silhouettes = pd.DataFrame({name: s["silhouette"] for name, s in separation.items() if s}).T
    if not silhouettes.empty:
        images["silhouette.png"] = plot_matrix(silhouettes, "language silhouette (cosine)", cmap="viridis",
                                                                    centered=False, fmt="{:.2f}")
        images["language_confusion_base.png"] = plot_matrix(confusion_frame(separation["zs"]), "centroid cosine (base)",
                                                               cmap="viridis", centered=False, fmt="{:.2f}")
    for name, png in images.items():
        mlflow.log_image(png_to_image(png), name)
    mlflow.log_text(results.to_csv(index=False), "results.csv")
    mlflow.log_text(aggregates.to_csv(index=False), "aggregates.csv")
    mlflow.log_dict({name: s for name, s in separation.items() if s}, "language_separation.json")
    mlflow.log_metrics({f"judge_auc/{lang}": value for lang, value in judge_auc.items()})
    log_metadata(metadata={"settings": len(settings), "rows": len(results), "mlflow_run_id": mlflow.active_run().info.run_id})
    tables = {"aggregates": aggregates.set_index(["by", "group"])}
    html = images_html(f"{config.model_label}: cross-lingual sweep", images, tables)
    return results, aggregates, HTMLString(html)
