from pathlib import Path
from typing import Annotated

from zenml import log_metadata, step

from mbad.adapters import AdapterDirectory
from mbad.config import DetoxConfig
from mbad.training_report import Registration, register_reported
from steps._stack import mlflow_uri


@step
def register_model(registration: Registration, adapter: AdapterDirectory, config: DetoxConfig) -> Annotated[str, "mlflow_model_version"]:
    """The evaluated adapter as a new version of `config.registry.model_name` (no alias: promotion
    is a separate, gated step), logged in the MLflow run of its report."""
    version = register_reported(registration, Path(adapter.path), config, mlflow_uri())
    registered = {"mlflow_model_name": config.registry.model_name, "mlflow_model_version": version,
                  "mlflow_run_id": registration.run_id}
    log_metadata(metadata=registered, infer_model=True)
    log_metadata(metadata=registered)
    return version
