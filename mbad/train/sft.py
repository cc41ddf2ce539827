"""Supervised fine-tuning (the paper's method): next-token prediction on the neutral sentences."""

from __future__ import annotations

from pathlib import Path

import torch

from mbad.config import ModelConfig, TrainConfig
from mbad.lm_head import LMHead, causal_lm_loss
from mbad.models import LoadedModel
from mbad.train.data import collate, tokenize_for_lm
from mbad.train.launch import TrainingJob, launch_processes, needs_launch
from mbad.train.loop import Objective, TrainSummary, train_with_objective


def sft_objective(loaded: LoadedModel, texts: list[str], config: TrainConfig) -> Objective:
    """Next-token prediction on the texts (the paper's supervised fine-tuning)."""
    examples = tokenize_for_lm(loaded.tokenizer, texts, config.max_length, loaded.is_seq2seq, config.append_eos)
    pad_id = loaded.tokenizer.pad_token_id

    def loss(model: torch.nn.Module, head: LMHead | None, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return causal_lm_loss(head, batch) if head is not None else model(**batch).loss

    return Objective(examples, lambda chosen: collate(chosen, pad_id), loss)


def train_sft_adapter(
    texts: list[str],
    model_config: ModelConfig,
    config: TrainConfig,
    output_dir: Path,
    checkpoint_dir: Path | None = None,
    loaded: LoadedModel | None = None,
) -> TrainSummary:
    """Fine-tune a LoRA adapter on `texts` (supervised); save it (adapter only) to `output_dir`.

    With `checkpoint_dir`, state is saved every `config.checkpoint_every` steps and a
    rerun with the same directory continues from the last saved step.
    """
    if not texts:
        raise ValueError("no training texts: check train.source_languages and the data")
    if needs_launch(config):
        return launch_processes(TrainingJob("sft", [texts], model_config, config, output_dir, checkpoint_dir))
    return train_with_objective(lambda base: sft_objective(base, texts, config), model_config, config, output_dir,
                                checkpoint_dir, loaded)


def describe_sft(train: dict) -> str:
    return "supervised fine-tuning on the neutral (detoxified) rewrites"
