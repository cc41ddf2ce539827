import os
from typing import Annotated

import pandas as pd
from zenml import step
from zenml.client import Client
from zenml.io import fileio

from mbad.adapters import AdapterDirectory, load_model_under_test
from mbad.config import GenerationConfig, JudgeConfig, KnowledgeConfig, ModelConfig
from mbad.data import select
from mbad.eval.judges import FittedJudge, JudgeContext, make_judge, score_frame
from mbad.eval.probes import completion_nll, run_probes
from mbad.generation import generate_for_targets
from mbad.models import load_base_model


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


def _zenml_secret(name: str) -> dict[str, str]:
    return Client().get_secret(name).secret_values


@step
def score_toxicity(
    completions: pd.DataFrame, judge: FittedJudge, config: JudgeConfig
) -> Annotated[pd.DataFrame, "toxicity_scores"]:
    """Each completion scored by the configured judge (the prompt is never scored); `judge` is the
    train_judge step's fitted offline judge, used for the offline backends. The `judge` column
    names the instrument: `<backend>:<identity hash>`. A backend finds its secrets in ZenML's
    secrets store, then the environment, and may share a cache under the artifact store, since
    pods start with empty disks."""
    context = JudgeContext(fitted=judge, secret_store=_zenml_secret, environ=os.environ,
                           shared_dir=f"{Client().active_stack.artifact_store.path}/mbad-cache", storage=fileio)
    return score_frame(make_judge(config, context), completions)


@step
def evaluate_knowledge(
    pairs: pd.DataFrame,
    model: ModelConfig,
    knowledge: KnowledgeConfig,
    target_languages: list[str],
    adapter: AdapterDirectory | None = None,
) -> Annotated[pd.DataFrame, "knowledge_items"]:
    """Knowledge probes of the model under test, one row per item (probe, lang, item, value, weight);
    `mbad.eval.probes.summarise_probes` turns it into {probe: {lang: figure}}."""
    return run_probes(load_model_under_test(model, adapter and adapter.path), select(pairs, "test", target_languages), knowledge)


@step
def score_fluency(
    completions: pd.DataFrame, model: ModelConfig, knowledge: KnowledgeConfig
) -> Annotated[pd.DataFrame, "fluency"]:
    """Each completion's NLL given its prompt under the BASE model (no adapter), the one fixed
    scorer for base and fine-tuned completions: pair_id, lang, sample, value, weight, empty."""
    return completion_nll(load_base_model(model), completions, knowledge.batch_size)
