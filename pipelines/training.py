import logging

from zenml import pipeline

from mbad.config import DetoxConfig
from mbad.data import planning_test_pairs
from mbad.eval.power import precision_plan
from pipelines.evaluation import evaluate_model
from steps.data import load_data, validate_data
from steps.judge import train_judge
from steps.registration import register_model
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


def train_evaluate_register(config: DetoxConfig, validated, data_hash: str, **options) -> dict:
    """Judge, adapter, base vs fine-tuned evaluation, report, registration (`options`: the report's
    and the registration's `with_options`). Returns what a later gate can reuse (pairs, judge, the
    base model's evaluation)."""
    judge, judge_quality = train_judge(pairs=validated, config=config.judge)
    adapter = train_adapter(pairs=validated, model=config.model, train=config.train, data_hash=data_hash)
    evaluation = {"pairs": validated, "judge": judge, "setting": config, "target_languages": config.target_languages}
    base = evaluate_model(**evaluation, step_id=lambda kind: f"{kind}_base")
    tuned = evaluate_model(**evaluation, step_id=lambda kind: f"{kind}_tuned", adapter=adapter)
    _, _, registration = report.with_options(**options)(
        base.scores, tuned.scores, base.knowledge, tuned.knowledge, base.fluency, tuned.fluency, judge_quality,
        adapter, config, data_hash, pairs=validated)
    register_model.with_options(**options)(registration=registration, adapter=adapter, config=config)
    return {"validated": validated, "judge": judge, "base": base}
