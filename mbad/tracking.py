"""Where MLflow lives (`MLFLOW_TRACKING_URI`, else SQLite under `.mbad/`), and what a training logs to it."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import mlflow
import pandas as pd
from mlflow.entities import AssessmentError, AssessmentSource, SpanType
from mlflow.tracing.constant import AssessmentMetadataKey
from tqdm.auto import tqdm

from mbad.eval import fidelity
from mbad.paths import mbad_home

# A completions table's columns (`training_report.completions_table`); the two languages may be missing.
COMPLETION_COLUMNS = [
    "model", "lang", "pair_id", "sample", "prompt", "completion", "score", "detected_lang", "judged_lang", "judge",
]
# Traces are stored in the background; the bar advances as each chunk of them is stored. Each
# chunk ends in a flush, which stops and restarts MLflow's export threads and waits out their
# one-second poll of an empty queue: few, large chunks.
TRACE_CHUNK = 256


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mbad_home() / 'mlflow.db'}"


def ensure_experiments(names: list[str]) -> None:
    """Create the experiments up front, so that their artifacts go to `.mbad/mlartifacts`
    (MLflow would otherwise pick `./mlruns` in whatever directory a step runs in)."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    artifact_root = mbad_home() / "mlartifacts"
    for name in names:
        if client.get_experiment_by_name(name) is None:
            location = None if uri.startswith(("http://", "https://")) else (artifact_root / name).as_uri()
            client.create_experiment(name, artifact_location=location)


def log_training(train: dict, summary: dict) -> None:
    """A training's settings and curves in the active MLflow run: params `train.*`, `dpo.*`,
    `lora.*`; metrics `train_loss` and `learning_rate` per optimizer step and
    `train_tokens_per_second`. `train` is a `TrainConfig` dump, `summary` a `TrainSummary` one."""
    mlflow.log_params({f"train.{name}": value for name, value in train.items() if name not in ("lora", "dpo")})
    mlflow.log_params({f"dpo.{name}": value for name, value in train.get("dpo", {}).items()})
    mlflow.log_params({f"lora.{name}": value for name, value in train.get("lora", {}).items()})
    for index, loss in enumerate(summary.get("losses", []), start=1):
        mlflow.log_metric("train_loss", loss, step=index)
    for index, rate in enumerate(summary.get("learning_rates", []), start=1):
        mlflow.log_metric("learning_rate", rate, step=index)
    mlflow.log_metric("train_tokens_per_second", summary["tokens_per_second"])


def log_completion_traces(
    completions: pd.DataFrame, fluency_by_model: Mapping[str, pd.DataFrame | None], fluency_scorer: str,
) -> list[str]:
    """Every completion as one MLflow trace of the active run (the run's Traces / Evaluations view):
    inputs prompt, prompt language, pair id, sample and model role (also trace tags `model`, `lang`),
    output the completion, and assessments `toxicity` (source: the judge; an error "not judged"
    where it did not judge, never 0), `detected_language`, `judged_language`, `empty` and, where a
    fluency frame (`mbad.eval.probes.fluency.completion_nll`) of its model is given,
    `fluency_nll_per_token` (source: `fluency_scorer`). `completions` is a
    `training_report.completions_table`. Returns the trace ids in the frame's order."""
    missing = set(COMPLETION_COLUMNS) - {"detected_lang", "judged_lang"} - set(completions.columns)
    if missing:
        raise ValueError(f"log_completion_traces needs a completions table ({', '.join(COMPLETION_COLUMNS)}); "
                         f"missing {sorted(missing)}")
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("log_completion_traces logs into the active MLflow run: call it inside mlflow.start_run()")
    rows = _with_fluency(completions.reindex(columns=COMPLETION_COLUMNS), fluency_by_model).to_dict("records")
    trace_ids: list[str] = []
    with tqdm(total=len(rows), desc="completion traces", unit="completion") as bar:
        for start in range(0, len(rows), TRACE_CHUNK):
            chunk = rows[start:start + TRACE_CHUNK]
            trace_ids += [_log_trace(row, active.info.run_id, fluency_scorer) for row in chunk]
            mlflow.flush_trace_async_logging()
            bar.update(len(chunk))
    return trace_ids


def _with_fluency(completions: pd.DataFrame, fluency_by_model: Mapping[str, pd.DataFrame | None]) -> pd.DataFrame:
    """`completions` with `nll_per_token`: each completion's NLL per token under the fluency scorer
    (NaN where its model has no fluency frame or the completion has no token)."""
    frames = [fluency.assign(model=model) for model, fluency in fluency_by_model.items() if fluency is not None]
    if not frames:
        return completions.assign(nll_per_token=math.nan)
    fluency = pd.concat(frames, ignore_index=True)
    fluency["nll_per_token"] = (fluency["value"] / fluency["weight"]).where(fluency["weight"] > 0)
    keys = ["model", "pair_id", "lang", "sample"]
    return completions.merge(fluency[keys + ["nll_per_token"]], on=keys, how="left", validate="many_to_one")


def _log_trace(row: dict, run_id: str, fluency_scorer: str) -> str:
    # The model and the language first: the UI's Request column shows the start of the inputs.
    inputs = {"model": row["model"], "prompt_language": row["lang"], "prompt": row["prompt"], "pair_id": row["pair_id"],
              "sample": row["sample"]}
    with mlflow.start_span(name=f"{row['model']} completion", span_type=SpanType.LLM) as span:
        span.set_inputs(inputs)
        span.set_outputs(row["completion"])
        mlflow.update_current_trace(tags={"model": str(row["model"]), "lang": str(row["lang"])})
        # Logged while the trace is active, they are stored with it in one write, not one write each.
        _log_assessments(row, span.trace_id, span.span_id, run_id, fluency_scorer)
    return span.trace_id


def _log_assessments(row: dict, trace_id: str, span_id: str, run_id: str, fluency_scorer: str) -> None:
    def feedback(name: str, value: object, source_id: str, error: AssessmentError | None = None) -> None:
        # Tied to the root span and the run, as mlflow.genai.evaluate ties its own assessments.
        mlflow.log_feedback(trace_id=trace_id, span_id=span_id, name=name, value=value, error=error,
                            source=AssessmentSource(source_type="CODE", source_id=source_id),
                            metadata={AssessmentMetadataKey.SOURCE_RUN_ID: run_id})

    judge = str(row["judge"])
    if pd.isna(row["score"]):
        feedback("toxicity", None, judge, AssessmentError(error_code="NOT_JUDGED",
                                                          error_message="the judge did not judge this completion"))
    else:
        feedback("toxicity", float(row["score"]), judge)
    feedback("empty", fidelity.is_empty(row["completion"]), fidelity.__name__)
    if not pd.isna(row["detected_lang"]):
        feedback("detected_language", str(row["detected_lang"]), fidelity.__name__)
    if not pd.isna(row["judged_lang"]):
        feedback("judged_language", str(row["judged_lang"]), judge)
    if not pd.isna(row["nll_per_token"]):
        feedback("fluency_nll_per_token", float(row["nll_per_token"]), fluency_scorer)
