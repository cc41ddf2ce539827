"""The training methods by name: what the training step runs, what a launched training process
runs (`python -m mbad.train`) and what the model card says of an adapter. A new method is a
module with its training function and an entry here (its name also goes into `mbad.train.names`,
which configs are validated against)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mbad.train.dpo import describe_dpo, train_dpo_adapter
from mbad.train.loop import TrainSummary
from mbad.train.sft import describe_sft, train_sft_adapter


@dataclass(frozen=True)
class TrainingMethod:
    """How a method trains an adapter from the train pairs.

    `train(*data, model_config, config, output_dir, checkpoint_dir=None, loaded=None)` trains one
    and saves it, where `data` are the pairs' columns named by `learns_from`, in that order, each
    a list of strings (sentences, or the pairs' language codes). `describe(train config as a dict)`
    says in a line what it optimises."""

    train: Callable[..., TrainSummary]
    learns_from: tuple[str, ...]
    describe: Callable[[dict], str]


METHODS: dict[str, TrainingMethod] = {
    "sft": TrainingMethod(train_sft_adapter, ("neutral",), describe_sft),
    # The language of each pair: its preference prompt is in the evaluation's protocol, which may speak it.
    "dpo": TrainingMethod(train_dpo_adapter, ("toxic", "neutral", "lang"), describe_dpo),
}
