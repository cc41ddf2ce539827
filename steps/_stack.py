"""What the active ZenML stack offers the steps (resolved when the steps are imported)."""

from zenml.client import Client


def experiment_tracker_name() -> str | None:
    tracker = Client().active_stack.experiment_tracker
    return tracker.name if tracker else None


EXPERIMENT_TRACKER = experiment_tracker_name()
