"""One model's evaluation, the same in every pipeline: its completions of the test prompts, their
toxicity, their fluency under the base model, and the knowledge probes."""

from collections.abc import Callable
from typing import Any, NamedTuple

from mbad.config import DetoxConfig, ModelConfig
from steps.evaluation import evaluate_knowledge, generate, score_fluency, score_toxicity


class EvaluatedModel(NamedTuple):
    """The outputs a comparison reads (`mbad.eval.compare.ModelEvidence` once loaded)."""

    scores: Any
    knowledge: Any
    fluency: Any


def evaluate_model(
    pairs: Any, judge: Any, setting: DetoxConfig, target_languages: list[str], step_id: Callable[[str], str],
    adapter: Any = None, model: ModelConfig | None = None,
) -> EvaluatedModel:
    """Generate, judge, score fluency and probe knowledge for the base model (or `adapter` on it)
    on `setting`'s evaluation; `model` is the base model when it is not `setting.model` (a
    champion on another base). Fluency is always scored by `setting.model`, one fixed scorer for
    every model compared. `step_id(kind)` names each step."""
    model = model or setting.model
    evaluation = {"pairs": pairs, "model": model, "target_languages": target_languages, "adapter": adapter}
    completions = generate(**evaluation, generation=setting.generation, id=step_id("generate"))
    scores = score_toxicity(completions, judge, setting.judge, id=step_id("score"))
    fluency = score_fluency(completions, setting.model, setting.knowledge, id=step_id("fluency"))
    knowledge = evaluate_knowledge(**evaluation, knowledge=setting.knowledge, id=step_id("knowledge"))
    return EvaluatedModel(scores, knowledge, fluency)
