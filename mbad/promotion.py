"""The promotion gate: is a registered version (the challenger) fit to become `champion`?

A version's numbers are only comparable with another's on the same evaluation set: the same
data (hash), target languages, prompts, generation, judge and probes. `plan_promotion` checks
that from the versions' tags; a version evaluated on another set is re-evaluated on the
challenger's set (the pipeline runs the training pipeline's own evaluation steps on the
registered adapter) instead of being compared blindly. `decide` then applies the thresholds.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Literal

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field, ValidationError

from mbad.aliases import AliasMoveConfig, read_aliases, unavailable
from mbad.config import DetoxConfig, ModelConfig, StrictConfig
from mbad.data import fingerprint, resolve_source
from mbad.eval.compare import compare_paired
from mbad.eval.metrics import percent_change, toxicity_by_language
from mbad.eval.probes import probe_figures, summarise_probes
from mbad.report import metrics_for_mlflow

Role = Literal["base", "challenger", "champion"]


class GateConfig(StrictConfig):
    """The gate's thresholds, in percent of the base model's or the champion's value."""

    # `each_language`: every evaluated language must pass; `mean`: their mean must.
    aggregate: Literal["each_language", "mean"] = "each_language"
    # Mean toxicity of completions must fall versus the base model by at least this much.
    min_toxicity_reduction_pct: float = 10.0
    # The knowledge probe whose perplexity the perplexity checks read: out-of-domain text by
    # default (in-domain perplexity falls with any adaptation to ParaDetox, so it cannot fail).
    perplexity_probe: str = "udhr_perplexity"
    # That perplexity may rise versus the base model by at most this.
    max_perplexity_increase_pct: float = 10.0
    # Versus the champion, on the same evaluation set, in every language: mean toxicity may be
    # higher by at most this (judge score points, 0-1), perplexity by at most this percent.
    champion_toxicity_tolerance: float = 0.02
    champion_perplexity_tolerance_pct: float = 5.0


class PromoteConfig(StrictConfig):
    """What `promote_model` gates and how it moves the aliases."""

    model_name: str = "mbad-detox"
    # None: the newest registered version.
    challenger_version: str | None = None
    gate: GateConfig = Field(default_factory=GateConfig)
    aliases: AliasMoveConfig = Field(default_factory=AliasMoveConfig)


class Candidate(BaseModel):
    """A registered version as the gate sees it: number, artifact location, tags."""

    version: str
    # Where MLflow keeps its artifacts (`models:/m-...`): unique, so a safe cache key.
    source: str
    tags: dict[str, str]

    @property
    def metrics(self) -> dict[str, float]:
        return {key[len("metric."):]: float(value) for key, value in self.tags.items() if key.startswith("metric.")}

    @property
    def languages(self) -> list[str]:
        return sorted(filter(None, self.tags.get("evaluated_languages", "").split(",")))

    def setting(self) -> DetoxConfig | None:
        """The training setting it was registered with (its `config` tag), if readable."""
        try:
            return DetoxConfig(**json.loads(self.tags["config"]))
        except (KeyError, ValueError, ValidationError):
            return None


class PromotionPlan(BaseModel):
    """Who is compared with whom, on which evaluation set, and what must be re-evaluated."""

    model_name: str
    challenger: Candidate
    champion: Candidate | None
    aliases: dict[str, str | None]
    # The challenger's setting: its data, target languages, generation, judge and probes.
    evaluation: DetoxConfig | None
    data_hash: str | None
    reevaluate: list[Role] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # Problems that fail the gate whatever the numbers say.
    blocking: list[str] = Field(default_factory=list)

    def model_for(self, role: Role) -> ModelConfig:
        """The base model a role is generated with (the champion may sit on another base)."""
        if role == "champion" and self.champion is not None:
            return self.champion.setting().model
        return self.evaluation.model


class GateCheck(BaseModel):
    name: str
    language: str
    value: float | None
    limit: float
    passed: bool
    message: str


class GateDecision(BaseModel):
    model_name: str
    challenger: str
    champion: str | None
    aliases: dict[str, str | None]
    passed: bool
    reasons: list[str]
    checks: list[GateCheck]
    thresholds: GateConfig
    reevaluated: list[str]
    # The numbers the checks used, by role (`challenger`, `champion`).
    metrics: dict[str, dict[str, float]]


def evaluation_key(tags: dict[str, str], data_hash: str | None = None) -> str | None:
    """What makes two versions' numbers comparable, or None when the tags cannot say."""
    try:
        setting = json.loads(tags["config"])
        parts = [data_hash or tags["data_hash"], sorted(tags["evaluated_languages"].split(","))]
        parts += [setting[section] for section in ("generation", "judge", "knowledge")]
        # The fitted judge itself, not only its settings: numbers of two judges are never compared.
        parts.append(tags.get("judge.identity_hash"))
    except (KeyError, ValueError, TypeError):
        return None
    return json.dumps(parts, sort_keys=True)


def get_candidate(client: MlflowClient, model_name: str, version: str) -> Candidate:
    found = client.get_model_version(model_name, version)
    return Candidate(version=str(found.version), source=str(found.source), tags=dict(found.tags))


def plan_promotion(
    client: MlflowClient, config: PromoteConfig, registered_by_run: str | None = None
) -> PromotionPlan:
    """Pick the challenger (the version `registered_by_run` registered, else the configured one,
    else the newest) and the champion, and decide what must be re-evaluated."""
    name = config.model_name
    try:
        versions = client.search_model_versions(f"name='{name}'")
        aliases = read_aliases(client, name) if versions else {}
    except MlflowException as error:
        raise unavailable(client, f"read the versions of '{name}'", error) from error
    if not versions:
        raise ValueError(f"'{name}' has no registered versions in MLflow at {client.tracking_uri}: run detox_training first")
    by_number = {str(v.version): v for v in versions}
    if registered_by_run:
        matching = [v for v in versions if v.tags.get("zenml_run") == registered_by_run]
        if not matching:
            raise ValueError(f"no version of '{name}' was registered by run {registered_by_run}")
        chosen = str(matching[0].version)
    elif config.challenger_version:
        if config.challenger_version not in by_number:
            known = sorted(by_number, key=int)
            raise ValueError(f"challenger_version {config.challenger_version} of '{name}' does not exist; versions: {known}")
        chosen = config.challenger_version
    else:
        chosen = max(by_number, key=int)
    if aliases.get("champion") == chosen:
        raise ValueError(f"v{chosen} of '{name}' is already the champion: nothing to promote")
    challenger = get_candidate(client, name, chosen)
    champion = get_candidate(client, name, aliases["champion"]) if aliases.get("champion") else None
    plan = PromotionPlan(model_name=name, challenger=challenger, champion=champion, aliases=aliases,
                         evaluation=challenger.setting(), data_hash=None)
    _plan_reevaluation(plan)
    return plan


def _plan_reevaluation(plan: PromotionPlan) -> None:
    challenger, champion = plan.challenger, plan.champion
    if plan.evaluation is None:
        plan.blocking.append(f"needs re-evaluation: v{challenger.version} has no readable `config` tag, "
                             "so its evaluation set cannot be rebuilt")
        return
    try:
        plan.data_hash = fingerprint(resolve_source(plan.evaluation.data))
    except FileNotFoundError as error:
        plan.blocking.append(f"needs re-evaluation: the data v{challenger.version} was evaluated on cannot be read ({error})")
        return
    if challenger.tags.get("data_hash") != plan.data_hash:
        plan.reevaluate += ["base", "challenger"]  # its % changes need the base model on the same data
        plan.notes.append(f"v{challenger.version} was evaluated on data {challenger.tags.get('data_hash')}, the data is now "
                          f"{plan.data_hash}: it is re-evaluated")
    if champion is not None:
        target = evaluation_key(challenger.tags, plan.data_hash)
        if champion.setting() is None:
            plan.blocking.append(f"needs re-evaluation: champion v{champion.version} has no readable `config` tag "
                                 "(its base model is unknown)")
        elif evaluation_key(champion.tags) != target:
            plan.reevaluate += ["champion"]
            plan.notes.append(
                f"champion v{champion.version} was evaluated on data {champion.tags.get('data_hash')} in {champion.languages}, "
                f"the challenger on {plan.data_hash} in {challenger.languages} (or with other generation/judge settings): "
                "the champion is re-evaluated on the challenger's evaluation set"
            )


def measured_metrics(
    scores: pd.DataFrame, knowledge: pd.DataFrame, threshold: float,
    base_scores: pd.DataFrame | None = None, base_knowledge: pd.DataFrame | None = None,
) -> dict[str, float]:
    """A re-evaluated version's metrics, named as the `report` step names them in its tags; the
    % changes versus the base model only when the base model was evaluated too. `knowledge` is
    the per-item table of `mbad.eval.probes.run_probes`."""
    if base_scores is not None and base_knowledge is not None:
        return metrics_for_mlflow(compare_paired(base_scores, scores, threshold, base_knowledge, knowledge,
                                                 probe_figures=probe_figures()))
    tuned = toxicity_by_language(scores, threshold)
    values = {f"toxicity_mean/{lang}": float(value) for lang, value in tuned["toxicity_mean"].items()}
    for probe, by_language in summarise_probes(knowledge).items():
        values |= {f"{probe}/{lang}": float(value) for lang, value in by_language.items()}
    return values


def decide(plan: PromotionPlan, gate: GateConfig, measured: dict[str, dict[str, float]]) -> GateDecision:
    """Apply the thresholds; `measured` holds the metrics of the re-evaluated roles."""
    challenger = measured.get("challenger") or plan.challenger.metrics
    champion = measured.get("champion") or (plan.champion.metrics if plan.champion else None)
    languages = sorted(plan.evaluation.target_languages) if plan.evaluation else plan.challenger.languages
    checks = _base_checks(challenger, languages, gate)
    blocking = list(plan.blocking)
    if champion is not None:
        checks += _champion_checks(challenger, champion, languages, gate)
        if "champion" not in plan.reevaluate:
            blocking += _judge_mismatch(plan)
    reasons = blocking + [check.message for check in checks if not check.passed]
    probe = gate.perplexity_probe
    used = {f"{name}/{language}" for language in languages
            for name in ("toxicity_mean", "toxicity_change_pct", probe, f"{probe}_change_pct")}
    metrics = {"challenger": {k: v for k, v in challenger.items() if k in used}}
    if champion is not None:
        metrics["champion"] = {k: v for k, v in champion.items() if k in used}
    return GateDecision(
        model_name=plan.model_name, challenger=plan.challenger.version,
        champion=plan.champion.version if plan.champion else None, aliases=plan.aliases,
        passed=not reasons, reasons=reasons, checks=checks, thresholds=gate,
        reevaluated=list(plan.reevaluate), metrics=metrics,
    )


def _judge_mismatch(plan: PromotionPlan) -> list[str]:
    """Numbers scored by two different judges are not comparable: refuse, naming both."""
    mine = plan.challenger.tags.get("judge.identity_hash")
    theirs = plan.champion.tags.get("judge.identity_hash") if plan.champion else None
    if mine and mine == theirs:
        return []
    return [f"the challenger was scored by judge {mine or '(unrecorded)'} and champion v{plan.champion.version} by judge "
            f"{theirs or '(unrecorded)'}: numbers from different judges are not compared (re-evaluate the champion)"]


def _base_checks(metrics: dict[str, float], languages: list[str], gate: GateConfig) -> list[GateCheck]:
    probe = gate.perplexity_probe
    rules = [
        ("toxicity_change_pct", -gate.min_toxicity_reduction_pct,
         "toxicity changed by {value:+.1f}% vs the base model; it must fall by at least {reduction:.1f}%"),
        (f"{probe}_change_pct", gate.max_perplexity_increase_pct,
         probe + " changed by {value:+.1f}% vs the base model; it may rise by at most {limit:.1f}%"),
    ]
    checks = []
    for metric, limit, text in rules:
        values = {language: metrics.get(f"{metric}/{language}") for language in languages}
        if gate.aggregate == "mean":
            present = [value for value in values.values() if value is not None]
            values = {"mean": sum(present) / len(present) if len(present) == len(languages) else None}
        for language, value in values.items():
            checks.append(_check(metric, language, value, limit, text.format(value=value or 0, limit=limit, reduction=-limit)))
    return checks


def _champion_checks(
    challenger: dict[str, float], champion: dict[str, float], languages: list[str], gate: GateConfig
) -> list[GateCheck]:
    checks = []
    for language in languages:
        mine, theirs = challenger.get(f"toxicity_mean/{language}"), champion.get(f"toxicity_mean/{language}")
        worse = None if mine is None or theirs is None else mine - theirs
        limit = gate.champion_toxicity_tolerance
        checks.append(_check("toxicity_vs_champion", language, worse, limit,
                             f"mean toxicity {mine} vs the champion's {theirs}; it may be higher by at most {limit}"))
        probe = gate.perplexity_probe
        mine, theirs = challenger.get(f"{probe}/{language}"), champion.get(f"{probe}/{language}")
        worse = None if mine is None or theirs is None else percent_change(theirs, mine)
        limit = gate.champion_perplexity_tolerance_pct
        checks.append(_check(f"{probe}_vs_champion", language, worse, limit,
                             f"{probe} {mine} vs the champion's {theirs}; it may be higher by at most {limit}%"))
    return checks


def _check(name: str, language: str, value: float | None, limit: float, text: str) -> GateCheck:
    missing = value is None or not math.isfinite(value)
    message = f"{language}: " + (f"no {name} on this evaluation set (needs re-evaluation)" if missing else text)
    return GateCheck(name=name, language=language, value=None if missing else value, limit=limit,
                     passed=not missing and value <= limit, message=message)


def decision_tags(decision: GateDecision) -> dict[str, str]:
    """Tags that record the decision on the challenger, pass or fail."""
    return {
        "validation_status": "approved" if decision.passed else "rejected",
        "gate.reasons": "; ".join(decision.reasons) or "all checks passed",
        "gate.thresholds": decision.thresholds.model_dump_json(),
        "gate.metrics": json.dumps(decision.metrics, sort_keys=True),
        "gate.champion": f"v{decision.champion}" if decision.champion else "none",
        "gate.reevaluated": ",".join(decision.reevaluated) or "none",
        "gate.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def set_version_tags(client: MlflowClient, model_name: str, version: str, tags: dict[str, str]) -> None:
    try:
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
    except MlflowException as error:
        raise unavailable(client, f"tag v{version} of '{model_name}'", error) from error


def promotion_target(decision: GateDecision) -> dict[str, str | None]:
    """Aliases after a passed gate: the challenger is champion, the old champion previous."""
    return {"champion": decision.challenger, "previous": decision.champion or decision.aliases.get("previous")}


def rollback_target(client: MlflowClient, model_name: str, aliases: dict[str, str | None]) -> dict[str, str | None]:
    """Aliases after a rollback: `previous` is champion again, and `previous` moves one step
    further back (to the version it had replaced, recorded at its promotion), or goes."""
    if not aliases.get("previous"):
        raise ValueError(f"'{model_name}' has no `previous` alias: there is nothing to roll back to ({aliases})")
    restored = get_candidate(client, model_name, aliases["previous"])
    return {"champion": restored.version, "previous": restored.tags.get("promotion.replaced") or None}
