"""What a sweep logs to MLflow: each setting as a nested run, the transfer heatmaps, the language
separation plots and the tables, and the page ZenML shows of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from mbad.adapters import read_adapter_meta
from mbad.config import SweepConfig
from mbad.eval.compare import ModelEvidence
from mbad.eval.decomposition import SWITCHING, WITHIN
from mbad.report import images_html, plot_matrix, png_to_image
from mbad.representations import confusion_frame
from mbad.sweep import Setting, SweepResults, compare_sweep, significant_cells, transfer_matrix


def log_setting(setting: Setting, rows: list[dict], adapter: Path | None) -> None:
    """One setting as a nested run of the active MLflow run: its place in the grid, its
    training's size and loss curve (from its adapter's own record; the base model has no
    adapter) and its figures (`rows`: its rows of the results table)."""
    with mlflow.start_run(run_name=setting.name, nested=True):
        mlflow.log_params({"method": setting.method, "mode": setting.mode, "source": setting.source,
                           "fraction": setting.fraction})
        if adapter is not None:
            summary = read_adapter_meta(adapter)["summary"]
            mlflow.log_params({"train_examples": summary["examples"], "train_steps": summary["steps"]})
            for index, loss in enumerate(summary["losses"], start=1):
                mlflow.log_metric("train_loss", loss, step=index)
        mlflow.log_metrics({f"{r['metric']}/{r['target']}": r["value"] for r in rows if pd.notna(r["value"])})


def sweep_images(config: SweepConfig, sweep: SweepResults, separation: dict[str, dict | None]) -> dict[str, bytes]:
    """PNGs by file name: per method, the source x target matrix of each figure's % change
    (toxicity, its within-language and language-switching parts, and each probe), cells whose
    interval excludes 0 marked; the settings' language
    silhouettes and the base model's centroid cosines when representations were measured."""
    images = {}
    for method in config.methods:
        prefix = "" if config.methods == ["sft"] else f"{method}_"
        for probe in ["toxicity", WITHIN, SWITCHING, *sweep.probes]:
            metric = f"{probe}_change_pct"
            matrix = transfer_matrix(sweep.results, metric, method=method)
            if matrix.empty:
                continue
            images[f"{prefix}{metric}.png"] = plot_matrix(
                matrix, f"{config.model_label} {method}: {probe} change (%)",
                cmap="RdYlGn_r" if probe.startswith("toxicity") else "PuOr_r" if "perplexity" in probe else "RdYlGn",
                marked=significant_cells(sweep.results, metric, method))
    silhouettes = pd.DataFrame({name: s["silhouette"] for name, s in separation.items() if s}).T
    if not silhouettes.empty:
        images["silhouette.png"] = plot_matrix(silhouettes, "language silhouette (cosine)", cmap="viridis",
                                               centered=False, fmt="{:.2f}")
        images["language_confusion_base.png"] = plot_matrix(confusion_frame(separation["zs"]), "centroid cosine (base)",
                                                            cmap="viridis", centered=False, fmt="{:.2f}")
    return images


def log_sweep(config: SweepConfig, sweep: SweepResults, separation: dict[str, dict | None], judge_quality: dict) -> str:
    """The sweep's images, tables, language separation (`separation`: each setting's, None where
    not measured) and the judge's quality in the active MLflow run; returns the HTML page of
    the images and tables."""
    images = sweep_images(config, sweep, separation)
    for name, png in images.items():
        mlflow.log_image(png_to_image(png), name)
    mlflow.log_text(sweep.results.to_csv(index=False), "results.csv")
    mlflow.log_text(sweep.aggregates.to_csv(index=False), "aggregates.csv")
    if not sweep.methods.empty:
        mlflow.log_text(sweep.methods.to_csv(index=False), "method_comparison.csv")
    mlflow.log_dict({name: s for name, s in separation.items() if s}, "language_separation.json")
    mlflow.log_metrics({f"judge_{figure}/{lang}": value for figure, values in judge_quality.items() if isinstance(values, dict)
                        for lang, value in values.items()})
    aggregates = sweep.aggregates
    tables = {"aggregates": aggregates.set_index(["method", "figure", "by", "group"]) if not aggregates.empty else aggregates}
    if not sweep.methods.empty:
        tables[("DPO - SFT, paired on prompts (95 % interval): toxicity_mean in mean toxicity; *_change_pct rows: "
                "each method's within-language or language-switching % change vs the base model, diff in points")] = (
            sweep.methods.set_index(["mode", "source", "target", "metric"]))
    return images_html(f"{config.model_label}: cross-lingual sweep", images, tables)


# A step's output in the sweep's run: (step id, output name) -> the loaded artifact, None when
# the run has no such step (the base model has no training step).
StepOutput = Callable[[str, str], Any]


def report_sweep(
    plan: list[Setting], output: StepOutput, config: SweepConfig, judge_quality: dict,
) -> tuple[SweepResults, str]:
    """Every setting's evaluation read from the sweep's run (its steps named by
    `Setting.step_id`) and compared with the base model (`compare_sweep`); each setting logged as
    a nested MLflow run, and the heatmaps, aggregates and tables to the active run. Returns the
    results and the HTML page of them."""
    by_name = {setting.name: setting for setting in plan}

    sweep = compare_sweep(plan, lambda name: ModelEvidence.from_outputs(output, by_name[name].step_id), config)
    for setting in plan:
        adapter = output(setting.step_id("train"), "lora_adapter")
        log_setting(setting, sweep.rows[setting.name], Path(adapter.path) if adapter is not None else None)
    separation = {s.name: output(s.step_id("represent"), "language_separation") for s in plan}
    return sweep, log_sweep(config, sweep, separation, judge_quality)
