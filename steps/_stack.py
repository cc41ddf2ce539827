"""What the active ZenML stack offers the steps (resolved when the steps are imported)."""

from zenml.client import Client

from mbad.tracking import tracking_uri


def experiment_tracker_name() -> str | None:
    tracker = Client().active_stack.experiment_tracker
    return tracker.name if tracker else None


EXPERIMENT_TRACKER = experiment_tracker_name()


def mlflow_uri() -> str:
    """Where the stack's MLflow lives. Not read from `MLFLOW_TRACKING_URI` alone: ZenML's MLflow
    tracker leaves that variable empty in the process after each tracked step."""
    tracker = Client().active_stack.experiment_tracker
    return tracker.get_tracking_uri() if tracker is not None and tracker.flavor == "mlflow" else tracking_uri()
