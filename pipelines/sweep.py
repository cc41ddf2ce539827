import logging

from zenml import pipeline

from mbad.config import SweepConfig
from mbad.data import planning_test_pairs
from mbad.eval.power import precision_plan
from mbad.sweep import estimate, plan_settings, train_config_for
from pipelines.evaluation import evaluate_model
from steps.data import load_data, validate_data
from steps.judge import train_judge
from steps.representation import represent
from steps.sweep import collect_sweep
from steps.training import train_adapter

logger = logging.getLogger(__name__)


@pipeline
def cross_lingual_sweep(config: SweepConfig = SweepConfig()) -> None:
    """The paper's grid for one model: zs, xft (source x target), pft and mft, in one run.

    One training step per adapter (parallel pods on Kubernetes); each adapter is evaluated on
    every target in one pass; the base model is evaluated once and shared by all settings.
    """
    base = config.base
    settings = plan_settings(config.model_copy(update={"modes": sorted(set(config.modes) | {"zs"})}))
    test_per_language = planning_test_pairs(base.data, largest=True)
    logger.info("sweep plan: %s", estimate(config, settings, test_per_language).describe())  # raises over budget
    logger.info("precision: %s", precision_plan(base, test_per_language, config.languages))

    pairs, data_hash = load_data(config=base.data)
    validated, _ = validate_data(pairs=pairs, config=base.data)
    judge, judge_quality = train_judge(pairs=validated, config=base.judge)

    evaluation = {"pairs": validated, "judge": judge, "setting": base, "target_languages": config.languages}
    last_steps = []
    for setting in settings:
        adapter = None
        if setting.mode != "zs":
            train = train_config_for(setting, config)
            adapter = train_adapter(pairs=validated, model=base.model, train=train, data_hash=data_hash,
                                    log_to_mlflow=False, id=setting.step_id("train"))
        evaluate_model(**evaluation, step_id=setting.step_id, adapter=adapter)
        last_steps += [setting.step_id(kind) for kind in ("score", "fluency", "knowledge")]
        if config.representations.enabled:
            represent(pairs=validated, model=base.model, target_languages=config.languages,
                      representations=config.representations, adapter=adapter, id=setting.step_id("represent"))
            last_steps.append(setting.step_id("represent"))

    collect_sweep([s.as_dict() for s in settings], config, judge_quality, after=last_steps)
