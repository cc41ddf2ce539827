import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import ArtifactConfig, get_step_context, log_metadata, step
from zenml.client import Client
from zenml.enums import ArtifactType, ModelStages
from zenml.logger import get_logger
from zenml.types import HTMLString

from mbad.adapters import AdapterDirectory
from mbad.aliases import describe, move_aliases
from mbad.eval.compare import ModelEvidence
from mbad.gate import Evidence
from mbad.promotion import (
    GateDecision,
    PromoteConfig,
    PromotionPlan,
    decide_on_evaluations,
    plan_promotion,
    promotion_target,
    read_evidence,
    record_decision,
    set_version_tags,
    verdict_html,
    verdict_text,
)
from mbad.registry import download_adapter
from steps._stack import mlflow_client, mlflow_uri

logger = get_logger(__name__)


@step(enable_cache=False)
def find_candidates(config: PromoteConfig, registered_by_this_run: bool = False) -> Annotated[PromotionPlan, "promotion_plan"]:
    """The challenger, the champion, and what must be re-evaluated to compare them on one set."""
    run_name = get_step_context().pipeline_run.name if registered_by_this_run else None
    plan = plan_promotion(mlflow_client(), config, registered_by_run=run_name)
    for line in [f"challenger v{plan.challenger.version}, champion {describe(plan.aliases)}", *plan.notes, *plan.blocking]:
        logger.info(line)
    log_metadata(metadata={"challenger": plan.challenger.version, "aliases": str(plan.aliases), "reevaluate": plan.reevaluate})
    return plan


@step
def fetch_registered_adapter(
    model_name: str, version: str, source: str
) -> Annotated[AdapterDirectory, ArtifactConfig(name="registered_adapter", artifact_type=ArtifactType.MODEL)]:
    """The LoRA adapter of a registered version. Cached: a version's artifacts never change, and
    `source` (where MLflow stored them, unique) keeps another registry's v3 out of the cache."""
    destination = Path(tempfile.mkdtemp(prefix="mbad-registered-"))
    return AdapterDirectory(str(download_adapter(model_name, version, destination, mlflow_uri())))


@step(enable_cache=False)
def gate(
    plan: PromotionPlan,
    config: PromoteConfig,
    base_scores: pd.DataFrame | None = None,
    base_knowledge: pd.DataFrame | None = None,
    base_fluency: pd.DataFrame | None = None,
    challenger_scores: pd.DataFrame | None = None,
    challenger_knowledge: pd.DataFrame | None = None,
    challenger_fluency: pd.DataFrame | None = None,
    champion_scores: pd.DataFrame | None = None,
    champion_knowledge: pd.DataFrame | None = None,
    champion_fluency: pd.DataFrame | None = None,
    judge_quality: dict | None = None,
) -> tuple[Annotated[GateDecision, "gate_decision"], Annotated[HTMLString, "gate_verdict"]]:
    """`mbad.promotion.decide` on the roles' evidence (re-evaluated here, or stored by each
    version's run) and the judge's quality; the decision is recorded on the challenger (tags, and
    its verdict table in its run) and shown as a table."""
    outputs = {"base": (base_scores, base_knowledge, base_fluency),
               "challenger": (challenger_scores, challenger_knowledge, challenger_fluency),
               "champion": (champion_scores, champion_knowledge, champion_fluency)}
    measured = {role: ModelEvidence(*evaluation) for role, evaluation in outputs.items() if evaluation[0] is not None}
    decision = decide_on_evaluations(plan, config.gate, measured, lambda found: stored_evidence(plan, found), judge_quality)
    record_decision(mlflow_client(), decision)
    logger.info("%s", verdict_text(decision))
    log_metadata(metadata={"passed": decision.passed, "reasons": decision.reasons, "test": decision.test,
                           "checks": [check.model_dump() for check in decision.checks]})
    return decision, HTMLString(verdict_html(decision))


def stored_evidence(plan: PromotionPlan, measured: Evidence) -> Evidence:
    """The evidence of roles not re-evaluated, from their runs' `evidence` artifacts: the
    challenger's with its own base model, the champion's fine-tuned side."""
    found: Evidence = {}
    for role, candidate in (("challenger", plan.challenger), ("champion", plan.champion)):
        if candidate is None or role in measured or candidate.evidence_uri is None:
            continue
        with tempfile.TemporaryDirectory(prefix="mbad-evidence-") as folder:
            local = mlflow.artifacts.download_artifacts(candidate.evidence_uri, dst_path=folder, tracking_uri=mlflow_uri())
            stored = read_evidence(Path(local).read_text())
        found[role] = stored["tuned"]
        if role == "challenger":
            found["base"] = stored["base"]
    return found


@step(enable_cache=False)
def promote(decision: GateDecision, config: PromoteConfig) -> Annotated[dict[str, str | None], "aliases"]:
    """On pass: `champion` -> challenger, `previous` -> old champion, ZenML stage production."""
    if not decision.passed:
        logger.info("aliases unchanged: %s", describe(decision.aliases))
        return decision.aliases
    client, name = mlflow_client(), decision.model_name
    target = promotion_target(decision)

    def record() -> None:  # under the registry lock, once the aliases are verified
        promoted = {"promotion.replaced": decision.champion or "", "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")}
        set_version_tags(client, name, decision.challenger, promoted)
        set_production_stage(client.get_model_version(name, decision.challenger).tags)

    move_aliases(client, name, decision.aliases, target, config.aliases, on_moved=record)
    logger.info("%s: %s (was %s)", name, describe(target), describe(decision.aliases))
    log_metadata(metadata={"aliases": str(target)})
    return target


def set_production_stage(version_tags: dict[str, str]) -> None:
    """Move the ZenML Model version that registered this MLflow version to `production`."""
    run_name, model_version = version_tags.get("zenml_run"), None
    try:
        if run_name:
            run = Client().get_pipeline_run(run_name, allow_name_prefix_match=False)
            # detox_training sets the Model on the pipeline, retrain_new_languages on its registration step.
            registered = run.steps.get("register_model")
            model_version = run.model_version or (registered.model_version if registered else None)
    except KeyError:  # registered from another ZenML store, or by hand
        pass
    if model_version is None:
        logger.warning("no ZenML Model version to move to production (zenml_run tag: %r)", run_name)
        return
    model_version.set_stage(ModelStages.PRODUCTION, force=True)


def training_outputs(run_name: str | None) -> dict:
    """The validated pairs and the judge a version was evaluated with, from the ZenML run that
    registered it (the very same artifacts: the same evaluation set), or {} when unknown."""
    try:
        steps = Client().get_pipeline_run(run_name, allow_name_prefix_match=False).steps if run_name else {}
        return {"validated": steps["validate_data"].outputs["validated_pairs"][0],
                "judge": steps["train_judge"].outputs["toxicity_judge"][0]}
    except KeyError:
        return {}
