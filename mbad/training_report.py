"""What the training pipeline's report logs to the active MLflow run: every figure of the base
and the fine-tuned model with its paired interval, the completions, the per-prompt evidence
for the gate and the model card; and, from that run, the adapter as a new registry version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mbad.adapters import read_adapter_meta
from mbad.config import DetoxConfig
from mbad.data import resolve_source
from mbad.eval.compare import ModelEvidence, compare_models
from mbad.gate import judge_check_languages
from mbad.model_card import model_card
from mbad.promotion import evidence_table
from mbad.registry import register_adapter, version_tags
from mbad.report import metrics_for_mlflow, plot_comparison, png_to_image, render_html
from mbad.tracking import COMPLETION_COLUMNS, log_completion_traces, log_training

EVIDENCE_FILE = "evidence/clusters.csv"
# Every completion with its score: an MLflow table for scripts; the run's Traces view shows each one
# as a trace with its assessments (`mbad.tracking.log_completion_traces`).
COMPLETIONS_FILE = "completions.json"


def completions_table(base_scored: pd.DataFrame, tuned_scored: pd.DataFrame) -> pd.DataFrame:
    """Base and fine-tuned completions, one row each: prompt, language, sample, completion, judge
    score (NaN where the judge did not judge), detected language, the language it was judged as
    and the judge: every figure of the run, the toxicity decomposition included, can be
    recomputed from it (docs/methods.md)."""
    frames = [frame.assign(model=name) for name, frame in (("base", base_scored), ("tuned", tuned_scored))]
    table = pd.concat(frames, ignore_index=True)
    return table[[column for column in COMPLETION_COLUMNS if column in table.columns]]


def training_dataset(pairs: pd.DataFrame, source: str, data_hash: str):
    """The validated pairs as an MLflow dataset: digest = the data hash, source = where they were read."""
    from mlflow.data.pandas_dataset import from_pandas

    columns = [column for column in ("lang", "split", "role", "pair_id", "toxic", "neutral") if column in pairs.columns]
    name = source.removeprefix("hf:").rstrip("/").rsplit("/", 1)[-1] or "multiparadetox"
    return from_pandas(pairs[columns].reset_index(drop=True), source=source, name=name, digest=data_hash)


def run_description(config: DetoxConfig, source: str, data_hash: str, identity: dict[str, str]) -> str:
    """The run's description in the MLflow UI: what was trained on what, and how it was measured."""
    train, generation = config.train, config.generation
    return (f"{train.method.upper()} LoRA adapter for `{config.model.name_or_path}`, trained on the MultiParaDetox "
            f"adapter-role train pairs of {', '.join(train.source_languages)} (`{source}`, data hash `{data_hash}`); "
            f"evaluated against the base model on the test prompts of {', '.join(config.target_languages)} with "
            f"{generation.num_samples} sample(s) per prompt, scored by the judge `{identity['name']}`. Every figure has a "
            f"paired 95 % bootstrap interval ({config.statistics.n_resamples} resamples); completions in `{COMPLETIONS_FILE}`.")


def judge_identity(name: str) -> dict[str, str]:
    """A judge's name (`<backend>:<hash>`) as the identity a registered version is tagged with."""
    backend, _, digest = name.partition(":")
    return {"backend": backend, "hash": digest or backend, "name": name}


class Registration(BaseModel):
    """What registering an evaluated adapter takes from its report: the MLflow run that holds the
    evaluation, the version's tags, its description (the model card) and the figures linked to
    the logged model."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    tags: dict[str, str]
    card: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class LoggedReport:
    """What the report logged: the estimates (with their `source` column), what registering the
    adapter takes, the judge's name, and the page of the results."""

    estimates: pd.DataFrame
    registration: Registration
    judge: str
    html: str


def _log_training_from_cache(run_id: str, adapter_dir: Path) -> None:
    if "train_loss" not in mlflow.get_run(run_id).data.metrics:
        # The training step came from cache (the same data, model and settings trained before):
        # its settings and curves still belong in this run, from the adapter's own record.
        trained = read_adapter_meta(adapter_dir)
        if trained.get("summary"):
            log_training(trained["train"], trained["summary"])
            mlflow.set_tag("training_from_cache", "true")


def log_report(
    config: DetoxConfig, data_hash: str, base: ModelEvidence, tuned: ModelEvidence, judge_quality: dict, adapter_dir: Path,
    zenml_run: str, pairs: pd.DataFrame | None = None,
) -> LoggedReport:
    """Every figure with its paired 95 % interval to the active MLflow run, with the model card,
    and the registration of the adapter (`register_reported`): tagged with its metrics, the judge
    that scored it, its evidence and the ZenML run that made it (`zenml_run`); `pairs`, when given,
    as the run's training dataset. The metrics go to the run when the adapter is registered,
    linked to its logged model in one batch (MLflow would otherwise link earlier metrics by
    reading each one's history back)."""
    stats = config.statistics
    # Per-prompt (and per-item) clusters of both models: the intervals come from them, and they
    # are stored with the run, so that a later gate can pair this version with another.
    comparison = compare_models(base, tuned, config.judge.threshold, stats)
    identity = judge_identity(base.judge)
    estimates = comparison.estimates
    source = "+".join(config.train.source_languages)
    estimates.insert(0, "source", source)
    quality = {figure: values for figure, values in judge_quality.items() if isinstance(values, dict)}
    metrics = metrics_for_mlflow(estimates, quality)
    png = plot_comparison(estimates, source)
    mlflow.log_params({"base_model": config.model.name_or_path, "judge": identity["name"], "data_hash": data_hash,
                       "source_languages": ",".join(config.train.source_languages),
                       "target_languages": ",".join(config.target_languages), "protocol": config.generation.protocol,
                       "num_samples": config.generation.num_samples, "bootstrap_resamples": stats.n_resamples})
    run_id = mlflow.active_run().info.run_id
    _log_training_from_cache(run_id, adapter_dir)
    data_source = resolve_source(config.data)
    if pairs is not None:
        mlflow.log_input(training_dataset(pairs, data_source, data_hash), context="training")
    completions = completions_table(base.scores, tuned.scores)
    mlflow.log_table(completions, artifact_file=COMPLETIONS_FILE)
    log_completion_traces(completions, {"base": base.fluency, "tuned": tuned.fluency}, config.model.name_or_path)
    mlflow.set_tag("mlflow.note.content", run_description(config, data_source, data_hash, identity))
    mlflow.log_table(estimates, artifact_file="detox_results.json")
    mlflow.log_text(estimates.to_csv(index=False), "detox_results.csv")
    mlflow.log_image(png_to_image(png), "toxicity_change.png")
    mlflow.log_dict(config.model_dump(), "config.json")
    mlflow.log_text(evidence_table(comparison.base, comparison.tuned).to_csv(index=False), EVIDENCE_FILE)
    tags = version_tags(config.train.source_languages, config.target_languages, data_hash, config.model_dump(), metrics, identity)
    tags |= {"zenml_run": zenml_run, "evidence": f"runs:/{run_id}/{EVIDENCE_FILE}",
             # The gate checks the judge's quality in these too (`mbad.gate.judge_check_languages`).
             "judged_languages": ",".join(judge_check_languages([], base.judged_languages + tuned.judged_languages))}
    card = model_card(config.model_dump(), estimates, identity, data_hash, data_source, run_id, zenml_run)
    mlflow.log_text(card, "model_card.md")
    html = render_html(estimates, png, "mbad: base vs fine-tuned, with paired 95 % intervals",
                       {"source": source, "MLflow run": run_id,
                        "judge": identity["name"], "samples per prompt": str(config.generation.num_samples),
                        "judge quality": json.dumps({k: {lang: round(v, 3) for lang, v in vals.items()} for k, vals in quality.items()})})
    return LoggedReport(estimates, Registration(run_id=run_id, tags=tags, card=card, metrics=metrics), identity["name"], html)


def register_reported(registration: Registration, adapter_dir: Path, config: DetoxConfig, mlflow_uri: str) -> str:
    """The adapter as a new version of `config.registry.model_name`, logged in the MLflow run (at
    `mlflow_uri`) that holds its evaluation, with the report's tags, model card and metrics.

    Returns the new version number."""
    mlflow.set_tracking_uri(mlflow_uri)
    # Resumed in its own experiment: MLflow refuses to resume a run of another experiment than the
    # process's active one, which a step of another pipeline (or store) may have set.
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient(mlflow_uri).get_run(registration.run_id).info.experiment_id)
    with mlflow.start_run(run_id=registration.run_id):
        return register_adapter(adapter_dir, config.registry.model_name, registration.tags, config.generation.model_dump(),
                                base_model=config.model.name_or_path, card=registration.card, metrics=registration.metrics)
