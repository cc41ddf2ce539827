from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from mbad.adapters import read_adapter_meta
from mbad.config import SweepConfig
from mbad.eval.compare import compare_models
from mbad.eval.fidelity import add_detected_language
from mbad.languages import LanguageRegistry
from mbad.report import images_html, plot_matrix, png_to_image
from mbad.representations import confusion_frame
from mbad.sweep import (
    RESULT_COLUMNS,
    Setting,
    aggregate_by_script,
    compare_methods,
    significant_cells,
    tidy_rows,
    transfer_matrix,
)
from steps._stack import EXPERIMENT_TRACKER


def _output(run, step_name: str, output: str):
    return run.steps[step_name].outputs[output][0].load() if step_name in run.steps else None


@step(experiment_tracker=EXPERIMENT_TRACKER, enable_cache=False)
def collect_sweep(
    settings: list[dict], config: SweepConfig, judge_quality: dict
) -> tuple[Annotated[pd.DataFrame, "sweep_results"], Annotated[pd.DataFrame, "sweep_aggregates"],
           Annotated[HTMLString, "sweep_report"]]:
    """Fan-in: read every setting's scores and probes from this run, build the tidy table,
    heatmaps and aggregates, and log each setting as a nested MLflow run."""
    run = get_step_context().pipeline_run
    threshold, rows = config.base.judge.threshold, []
    bootstrap = config.base.statistics
    base_knowledge = _output(run, "knowledge__zs", "knowledge_items")
    base_scored = add_detected_language(_output(run, "score__zs", "toxicity_scores"))
    separation, clusters = {}, {}
    plan = [Setting(**{**s, "train_languages": tuple(s["train_languages"])}) for s in settings]
    for setting in plan:
        comparison = compare_models(base_scored, _output(run, f"score__{setting.name}", "toxicity_scores"), threshold,
                                    bootstrap, base_knowledge, _output(run, f"knowledge__{setting.name}", "knowledge_items"))
        base, clusters[setting.name] = comparison.base, comparison.tuned
        setting_rows = tidy_rows(config.model_label, setting, comparison.estimates)
        rows += setting_rows
        separation[setting.name] = _output(run, f"represent__{setting.name}", "language_separation")
        with mlflow.start_run(run_name=setting.name, nested=True):
            mlflow.log_params({"method": setting.method, "mode": setting.mode, "source": setting.source,
                               "fraction": setting.fraction})
            adapter = _output(run, f"train__{setting.name}", "lora_adapter")
            if adapter is not None:
                summary = read_adapter_meta(Path(adapter.path))["summary"]
                mlflow.log_params({"train_examples": summary["examples"], "train_steps": summary["steps"]})
                for index, loss in enumerate(summary["losses"], start=1):
                    mlflow.log_metric("train_loss", loss, step=index)
            mlflow.log_metrics({f"{r['metric']}/{r['target']}": r["value"] for r in setting_rows if pd.notna(r["value"])})
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    registry = LanguageRegistry.from_yaml(config.base.data.languages_file)
    aggregates = pd.concat([aggregate_by_script(base, {s.source: clusters[s.name] for s in plan
                                                       if s.mode == "xft" and s.method == method}, registry,
                                                config=bootstrap).assign(method=method) for method in config.methods
                            if "xft" in config.modes], ignore_index=True) if "xft" in config.modes else pd.DataFrame()
    comparison = compare_methods(clusters, plan, bootstrap)

    images = {}
    for method in config.methods:
        prefix = "" if config.methods == ["sft"] else f"{method}_"
        for probe in ["toxicity"] + sorted(set(base_knowledge["probe"])):
            metric = f"{probe}_change_pct"
            images[f"{prefix}{metric}.png"] = plot_matrix(
                transfer_matrix(results, metric, method=method), f"{config.model_label} {method}: {probe} change (%)",
                cmap="RdYlGn_r" if probe == "toxicity" else "PuOr_r" if "perplexity" in probe else "RdYlGn",
                marked=significant_cells(results, metric, method))
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
    if not comparison.empty:
        mlflow.log_text(comparison.to_csv(index=False), "method_comparison.csv")
    mlflow.log_dict({name: s for name, s in separation.items() if s}, "language_separation.json")
    mlflow.log_metrics({f"judge_{figure}/{lang}": value for figure, values in judge_quality.items() if isinstance(values, dict)
                        for lang, value in values.items()})
    log_metadata(metadata={"settings": len(settings), "rows": len(results), "mlflow_run_id": mlflow.active_run().info.run_id})
    tables = {"aggregates": aggregates.set_index(["method", "by", "group"]) if not aggregates.empty else aggregates}
    if not comparison.empty:
        tables["DPO - SFT, paired on prompts (95 % interval)"] = comparison.set_index(["mode", "source", "target", "metric"])
    html = images_html(f"{config.model_label}: cross-lingual sweep", images, tables)
    return results, aggregates, HTMLString(html)
