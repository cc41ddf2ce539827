from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import ArtifactConfig, log_metadata, step
from zenml.enums import ArtifactType

from mbad.config import ModelConfig, TrainConfig, mbad_home
from mbad.data import select
from mbad.training import AdapterDirectory, checkpoint_key, train_lora_adapter
from steps._stack import EXPERIMENT_TRACKER


@step(experiment_tracker=EXPERIMENT_TRACKER)
def train_adapter(
    pairs: pd.DataFrame, model: ModelConfig, train: TrainConfig, data_hash: str, log_to_mlflow: bool = True
) -> Annotated[AdapterDirectory, ArtifactConfig(name="lora_adapter", artifact_type=ArtifactType.MODEL)]:
    """LoRA SFT on the NEUTRAL train sentences of the source language(s); resumable.

    A pipeline that trains several adapters passes `log_to_mlflow=False` and logs each
    training in its own nested MLflow run instead (one MLflow run cannot hold two values of a param).
    """
    neutral = select(pairs, "train", train.source_languages, train.fraction, train.max_examples_per_language, train.seed,
                     role="adapter")
    key = checkpoint_key(model, train, data_hash)
    output = mbad_home() / "adapters" / key
    summary = train_lora_adapter(neutral["neutral"].tolist(), model, train, output, mbad_home() / "checkpoints" / key)
    if log_to_mlflow and mlflow.active_run():
        mlflow.log_params({f"train.{name}": value for name, value in train.model_dump().items() if name != "lora"})
        mlflow.log_params({f"lora.{name}": value for name, value in train.lora.model_dump().items()})
        for index, loss in enumerate(summary.losses, start=1):
            mlflow.log_metric("train_loss", loss, step=index)
        mlflow.log_metric("train_tokens_per_second", summary.tokens_per_second)
    log_metadata(metadata={"train_examples": summary.examples, "train_steps": summary.steps,
                           "final_loss": summary.final_loss, "resumed_from_step": summary.resumed_from_step})
    return AdapterDirectory(str(Path(output)))
