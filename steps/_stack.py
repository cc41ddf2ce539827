"""What the active ZenML stack offers the steps (resolved when the steps are imported)."""

from mlflow import MlflowClient
from zenml.client import Client

from mbad.tracking import tracking_uri


def experiment_tracker_name() -> str | None:
    tracker = Client().active_stack.experiment_tracker
    return tracker.name if tracker else None


EXPERIMENT_TRACKER = experiment_tracker_name()


def mlflow_uri() -> str:
    """Where the stack's MLflow lives, with its credentials set for this process. Not read from
    `MLFLOW_TRACKING_URI` alone: ZenML's MLflow tracker leaves that variable empty in the process
    after each tracked step. The tracker's credentials (references to a ZenML secret, resolved
    here) are what it gives its own tracked steps; steps without a tracker (promotion,
    retraining) need them just as much against an MLflow with authentication. Without an MLflow
    tracker, the environment's MLFLOW_TRACKING_* apply."""
    tracker = Client().active_stack.experiment_tracker
    if tracker is None or tracker.flavor != "mlflow":
        return tracking_uri()
    tracker.configure_mlflow()  # sets MLFLOW_TRACKING_URI and _USERNAME/_PASSWORD or _TOKEN
    return tracker.get_tracking_uri()


def mlflow_client() -> MlflowClient:
    """A client of the stack's MLflow, authenticated as the stack's tracker is (see `mlflow_uri`)."""
    return MlflowClient(mlflow_uri())
