import logging

from zenml import pipeline

from mbad.config import DetoxConfig
from mbad.data import planning_test_pairs
from mbad.eval.power import precision_plan
from steps.data import load_data, validate_data
from steps.evaluation import evaluate_knowledge, generate, score_fluency, score_toxicity
from steps.judge import train_judge
from steps.report import report
from steps.training import train_adapter

logger = logging.getLogger(__name__)


@pipeline
def detox_training(config: DetoxConfig = DetoxConfig()) -> None:
    """Validate data, fine-tune one LoRA adapter, compare it with the base model, register it."""
    logger.info("precision: %s", precision_plan(config, planning_test_pairs(config.data), config.target_languages))
    pairs, data_hash = load_data(config=config.data)
    validated, _ = validate_data(pairs=pairs, config=config.data)
    train_evaluate_register(config, validated, data_hash)


def train_evaluate_register(config: DetoxConfig, validated, data_hash: str, register=report) -> dict:
    """Judge, adapter, base vs fine-tuned evaluation, registration (`register`: the report step,
    possibly `with_options`). Returns what a later gate can reuse (pairs, judge, base results)."""
    judge, judge_quality = train_judge(pairs=validated, config=config.judge)
    adapter = train_adapter(pairs=validated, model=config.model, train=config.train, data_hash=data_hash)

    evaluation = {"pairs": validated, "model": config.model, "target_languages": config.target_languages}
    base_completions = generate(**evaluation, generation=config.generation, id="generate_base")
    tuned_completions = generate(**evaluation, generation=config.generation, adapter=adapter, id="generate_tuned")
    base_scores = score_toxicity(base_completions, judge, config.judge, id="score_base")
    tuned_scores = score_toxicity(tuned_completions, judge, config.judge, id="score_tuned")
    base_fluency = score_fluency(base_completions, config.model, config.knowledge, id="fluency_base")
    tuned_fluency = score_fluency(tuned_completions, config.model, config.knowledge, id="fluency_tuned")
    base_knowledge = evaluate_knowledge(**evaluation, knowledge=config.knowledge, id="knowledge_base")
    tuned_knowledge = evaluate_knowledge(**evaluation, knowledge=config.knowledge, adapter=adapter, id="knowledge_tuned")

    register(base_scores, tuned_scores, base_knowledge, tuned_knowledge, base_fluency, tuned_fluency, judge_quality,
             adapter, config, data_hash, pairs=validated)
    return {"validated": validated, "judge": judge, "base_scores": base_scores, "base_knowledge": base_knowledge,
            "base_fluency": base_fluency}
