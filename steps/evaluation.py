import os
from typing import Annotated

import pandas as pd
from sklearn.pipeline import Pipeline
from zenml import step
from zenml.client import Client

from mbad.config import GenerationConfig, JudgeConfig, KnowledgeConfig, ModelConfig
from mbad.data import select
from mbad.eval.judges import make_judge, score_frame
from mbad.eval.probes import run_probes
from mbad.generation import generate_for_targets
from mbad.training import AdapterDirectory, load_model_under_test


@step
def generate(
    pairs: pd.DataFrame,
    model: ModelConfig,
    generation: GenerationConfig,
    target_languages: list[str],
    adapter: AdapterDirectory | None = None,
) -> Annotated[pd.DataFrame, "completions"]:
    """Completions of the TOXIC test prompts of every target language, in one batched pass."""
    prompts = select(pairs, "test", target_languages, max_per_language=generation.max_prompts_per_language)
    label = "generate (fine-tuned)" if adapter else "generate (base)"
    return generate_for_targets(load_model_under_test(model, adapter and adapter.path), prompts, generation, desc=label)


def _perspective_key(secret_name: str) -> str | None:
    try:
        return str(Client().get_secret(secret_name).secret_values["api_key"])
    except (KeyError, Exception):  # no such secret: fall back to the environment
        return os.environ.get("PERSPECTIVE_API_KEY")


@step
def score_toxicity(
    completions: pd.DataFrame, classifier: Pipeline, config: JudgeConfig
) -> Annotated[pd.DataFrame, "toxicity_scores"]:
    """Each completion scored by the configured judge (the prompt is never scored)."""
    api_key = _perspective_key(config.perspective.secret_name) if config.backend == "perspective" else None
    return score_frame(make_judge(config, classifier=classifier, api_key=api_key), completions)


@step
def evaluate_knowledge(
    pairs: pd.DataFrame,
    model: ModelConfig,
    knowledge: KnowledgeConfig,
    target_languages: list[str],
    adapter: AdapterDirectory | None = None,
) -> Annotated[dict[str, dict[str, float]], "knowledge"]:
    """Knowledge probes (perplexity on held-out NEUTRAL test sentences) of the model under test."""
    return run_probes(load_model_under_test(model, adapter and adapter.path), select(pairs, "test", target_languages), knowledge)
