"""Retraining when the data holds a language the champion was never evaluated on.

A language is new when it is in the validated data but not in the champion's
`evaluated_languages` tag. Adding one needs its files and a line in `configs/languages.yaml`;
files of a language without that line fail validation, with a message saying what to add.
"""

from __future__ import annotations

from typing import Literal

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field, model_validator

from mbad.aliases import read_aliases, unavailable
from mbad.config import DetoxConfig, StrictConfig
from mbad.promotion import PromoteConfig, get_candidate


class RetrainConfig(StrictConfig):
    """How `retrain_new_languages` trains, evaluates and gates a new version."""

    # Data, base model, training and evaluation settings; `train.source_languages` and
    # `target_languages` are set from the data (see `train_on`).
    detox: DetoxConfig = Field(default_factory=DetoxConfig)
    # `all_languages`: one adapter on every language of the data together (the paper's mft);
    # `configured_sources`: on `detox.train.source_languages` only. Either way it is evaluated
    # on every language of the data.
    train_on: Literal["all_languages", "configured_sources"] = "all_languages"
    # The gate the new version is handed to; its per-language tolerance versus the champion
    # is what "no old language regresses" means.
    promotion: PromoteConfig = Field(default_factory=PromoteConfig)

    @model_validator(mode="after")
    def _one_model_name(self) -> RetrainConfig:
        if self.promotion.model_name != self.detox.registry.model_name:
            raise ValueError(
                f"promotion.model_name ({self.promotion.model_name}) must equal detox.registry.model_name "
                f"({self.detox.registry.model_name}): the gate judges the version retraining registers"
            )
        return self


class RetrainPlan(BaseModel):
    data_languages: list[str]
    champion: str | None
    champion_languages: list[str]
    new_languages: list[str]
    # The setting to train and evaluate; None when nothing is new.
    training: DetoxConfig | None
    message: str


def new_languages(data_languages: list[str], champion_languages: list[str]) -> list[str]:
    return sorted(set(data_languages) - set(champion_languages))


def plan_retraining(client: MlflowClient, data_languages: list[str], config: RetrainConfig) -> RetrainPlan:
    """Compare the data's languages with the champion's; say what to train, if anything."""
    name = config.detox.registry.model_name
    champion_version = read_aliases(client, name)["champion"]
    try:
        champion_languages = get_candidate(client, name, champion_version).languages if champion_version else []
    except MlflowException as error:
        raise unavailable(client, f"read champion v{champion_version} of '{name}'", error) from error
    data_languages = sorted(data_languages)
    new = new_languages(data_languages, champion_languages)
    who = f"champion v{champion_version} (evaluated on {','.join(champion_languages)})" if champion_version else "no champion yet"
    if not new:
        return RetrainPlan(data_languages=data_languages, champion=champion_version, champion_languages=champion_languages,
                           new_languages=[], training=None,
                           message=f"nothing new: the data's languages {','.join(data_languages)} are all covered by {who}; "
                                   "nothing is trained")
    sources = data_languages if config.train_on == "all_languages" else config.detox.train.source_languages
    training = config.detox.model_copy(deep=True)
    training.train.source_languages = list(sources)
    training.target_languages = data_languages
    return RetrainPlan(data_languages=data_languages, champion=champion_version, champion_languages=champion_languages,
                       new_languages=new, training=training,
                       message=f"new language(s) {','.join(new)} versus {who}: training on {','.join(sources)}, "
                               f"evaluating on {','.join(data_languages)}")
