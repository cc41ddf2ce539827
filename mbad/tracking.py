"""Where MLflow lives: `MLFLOW_TRACKING_URI`, else SQLite under `.mbad/`."""

from __future__ import annotations

import os

import mlflow

from mbad.config import mbad_home


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
