"""Champion/challenger promotion. Dynamic (ZenML 0.98): re-evaluation runs only when needed."""

from zenml import pipeline

from mbad.promotion import PromoteConfig, PromotionPlan
from pipelines.evaluation import evaluate_model
from steps.data import load_data, validate_data
from steps.judge import train_judge
from steps.promotion import fetch_registered_adapter, find_candidates, gate, promote, training_outputs


@pipeline(dynamic=True)
def promote_model(config: PromoteConfig = PromoteConfig()) -> None:
    """Gate the challenger (newest version, or `config.challenger_version`) against the base
    model and the `champion`; on pass move `champion`/`previous` and the ZenML stage."""
    gate_and_promote(config)


def gate_and_promote(config: PromoteConfig, registered_by_this_run: bool = False, evaluated: dict | None = None) -> None:
    """Plan, re-evaluate what is not comparable, decide, promote. `evaluated` passes outputs the
    calling pipeline already has (validated pairs, judge, the base model's evaluation)."""
    plan = find_candidates(config=config, registered_by_this_run=registered_by_this_run).load()
    outputs = reevaluate(plan, evaluated or {}) if plan.reevaluate and not plan.blocking else {}
    decision, _verdict = gate(plan=plan, config=config, **outputs)
    promote(decision=decision, config=config)


def reevaluate(plan: PromotionPlan, evaluated: dict) -> dict:
    """The training pipeline's evaluation (`evaluate_model`), for each role the plan names, on the
    challenger's evaluation set: its own validated pairs and judge when its data is unchanged."""
    setting, judge_quality = plan.evaluation, None
    if "validated" not in evaluated and "challenger" not in plan.reevaluate:
        evaluated.update(training_outputs(plan.challenger.tags.get("zenml_run")))
    if "validated" not in evaluated:  # the data changed (or its run is gone): rebuild the evaluation set
        pairs, _ = load_data(config=setting.data)
        evaluated["validated"], _ = validate_data(pairs=pairs, config=setting.data)
        evaluated["judge"], judge_quality = train_judge(pairs=evaluated["validated"], config=setting.judge)
    outputs = {}
    if "base" in evaluated:
        outputs |= {f"base_{part}": output for part, output in evaluated["base"]._asdict().items()}
    if judge_quality is not None:  # a new judge: the gate checks its quality, not the one the challenger recorded
        outputs["judge_quality"] = judge_quality
    for role in plan.reevaluate:
        if f"{role}_scores" in outputs:
            continue
        candidate = plan.champion if role == "champion" else plan.challenger
        adapter = None if role == "base" else fetch_registered_adapter(
            model_name=plan.model_name, version=candidate.version, source=candidate.source, id=f"fetch_{role}")
        measured = evaluate_model(evaluated["validated"], evaluated["judge"], setting, setting.target_languages,
                                  step_id=lambda kind, role=role: f"{kind}_{role}", adapter=adapter, model=plan.model_for(role))
        outputs |= {f"{role}_{part}": output for part, output in measured._asdict().items()}
    return outputs
