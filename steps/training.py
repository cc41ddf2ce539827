from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import ArtifactConfig, log_metadata, step
from zenml.client import Client
from zenml.enums import ArtifactType
from zenml.io import fileio

from mbad.adapters import AdapterDirectory
from mbad.config import ModelConfig, TrainConfig
from mbad.data import select
from mbad.paths import mbad_home
from mbad.tracking import log_training
from mbad.train.checkpoints import CheckpointMirror, checkpoint_key
from mbad.train.methods import METHODS
from steps._stack import EXPERIMENT_TRACKER


@step(experiment_tracker=EXPERIMENT_TRACKER)
def train_adapter(
    pairs: pd.DataFrame, model: ModelConfig, train: TrainConfig, data_hash: str, log_to_mlflow: bool = True
) -> Annotated[AdapterDirectory, ArtifactConfig(name="lora_adapter", artifact_type=ArtifactType.MODEL)]:
    """A LoRA adapter from the source language(s)' adapter-half train pairs, resumable: SFT on
    their NEUTRAL sentences, or DPO preferring the neutral rewrite to the toxic sentence.

    A pipeline that trains several adapters passes `log_to_mlflow=False` and logs each
    training in its own nested MLflow run instead (one MLflow run cannot hold two values of a param).
    """
    rows = select(pairs, "train", train.source_languages, train.fraction, train.max_examples_per_language, train.seed,
                  role="adapter")
    method = METHODS[train.method]
    data = [rows[column].tolist() for column in method.learns_from]
    key = checkpoint_key(model, train, data_hash)
    output, checkpoints = mbad_home() / "adapters" / key, mbad_home() / "checkpoints" / key
    # The checkpoint also lives in the artifact store: a pod started over elsewhere resumes from it.
    with CheckpointMirror(checkpoints, f"{Client().active_stack.artifact_store.path}/mbad-checkpoints/{key}", fileio):
        summary = method.train(*data, model, train, output, checkpoints)
    if log_to_mlflow and mlflow.active_run():
        log_training(train.model_dump(), asdict(summary))
    log_metadata(metadata={"train_examples": summary.examples, "train_steps": summary.steps,
                           "final_loss": summary.final_loss, "resumed_from_step": summary.resumed_from_step})
    return AdapterDirectory(str(Path(output)))
