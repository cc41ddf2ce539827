"""Where MLflow lives (`MLFLOW_TRACKING_URI`, else SQLite under `.mbad/`), and what a training logs to it."""

from __future__ import annotations

import os

import mlflow

from mbad.paths import mbad_home


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
