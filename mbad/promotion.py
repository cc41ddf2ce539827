"""The promotion gate: is a registered version (the challenger) fit to become `champion`?

A version's numbers are only comparable with another's on the same evaluation set: the same
data (hash), target languages, prompts, generation, judge and probes. `plan_promotion` checks
that from the versions' tags; a version evaluated on another set, or one without stored
evidence (its per-prompt clusters, the `evidence` artifact of its run), is re-evaluated on the
challenger's set (the pipeline runs the training pipeline's own evaluation steps on the
registered adapter) instead of being compared blindly. `decide` then applies the gate's
checks (`mbad.gate`) to the paired evidence: on interval bounds, never on point estimates.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Literal

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field, ValidationError

from mbad.aliases import AliasMoveConfig, read_aliases, unavailable
from mbad.config import DetoxConfig, ModelConfig, StrictConfig
from mbad.data import DataUnavailable, content_hash, load_pairs
from mbad.eval.compare import ModelEvidence, clusters_from_evidence, evidence_frame, evidence_of
from mbad.gate import Evidence, GateCheck, GateConfig, format_verdict, gate_checks, verdict_table

Role = Literal["base", "challenger", "champion"]
# The verdict table's artifact in the challenger's MLflow run.
VERDICT_FILE = "gate_verdict.json"


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
    def judge_quality(self) -> dict[str, dict[str, float]]:
        """The quality of the judge that scored it, as its run logged it (`judge_<figure>/<lang>`):
        `{figure: {lang: value}}`, e.g. `{"auc": {"hi": 0.97}}`."""
        quality: dict[str, dict[str, float]] = {}
        for name, value in self.metrics.items():
            figure, _, lang = name.partition("/")
            if figure.startswith("judge_") and lang:
                quality.setdefault(figure.removeprefix("judge_"), {})[lang] = value
        return quality

    @property
    def evidence_uri(self) -> str | None:
        """Where its run stored the per-prompt evidence (`runs:/<id>/evidence/clusters.csv`)."""
        return self.tags.get("evidence") or None

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
    # The statistical test behind the checks, in words (bootstrap, level, correction).
    test: str


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
        # Read and hashed as the load step does, where this runs (a pod reads its own source).
        plan.data_hash = content_hash(load_pairs(plan.evaluation.data))
    except (OSError, DataUnavailable) as error:
        plan.blocking.append(f"needs re-evaluation: the data v{challenger.version} was evaluated on cannot be read ({error})")
        return
    if challenger.tags.get("data_hash") != plan.data_hash:
        plan.reevaluate += ["base", "challenger"]  # its % changes need the base model on the same data
        plan.notes.append(f"v{challenger.version} was evaluated on data {challenger.tags.get('data_hash')}, the data is now "
                          f"{plan.data_hash}: it is re-evaluated")
    elif challenger.evidence_uri is None:
        plan.reevaluate += ["base", "challenger"]
        plan.notes.append(f"v{challenger.version} has no stored per-prompt evidence (`evidence` tag): it is re-evaluated")
    if champion is not None:
        target = evaluation_key(challenger.tags, plan.data_hash)
        if champion.setting() is None:
            plan.blocking.append(f"needs re-evaluation: champion v{champion.version} has no readable `config` tag "
                                 "(its base model is unknown)")
        elif evaluation_key(champion.tags) != target or champion.evidence_uri is None:
            plan.reevaluate += ["champion"]
            plan.notes.append(
                f"champion v{champion.version} was evaluated on data {champion.tags.get('data_hash')} in {champion.languages}, "
                f"the challenger on {plan.data_hash} in {challenger.languages} (or with other generation/judge settings, "
                "or without stored evidence): the champion is re-evaluated on the challenger's evaluation set"
            )


def evidence_table(base: dict[str, pd.DataFrame], tuned: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """What a version stores with its run: both sides' clusters, one flat table (`side` column)."""
    return pd.concat([evidence_frame(base).assign(side="base"), evidence_frame(tuned).assign(side="tuned")],
                     ignore_index=True)


def read_evidence(csv_text: str) -> dict[str, dict[str, pd.DataFrame]]:
    """A stored evidence table as {"base": clusters, "tuned": clusters}."""
    table = pd.read_csv(io.StringIO(csv_text), dtype={"lang": str, "key": str})
    return {side: clusters_from_evidence(rows.drop(columns="side")) for side, rows in table.groupby("side")}


def decide(plan: PromotionPlan, gate: GateConfig, evidence: Evidence,
           judge_quality: dict[str, dict[str, float]] | None = None, judged_languages: Iterable[str | None] = ()) -> GateDecision:
    """Apply the gate's checks to the evidence of the roles (`base`, `challenger`, `champion`:
    re-evaluated, or read from the versions' runs), all on the challenger's evaluation set.
    `judge_quality` is that of a judge trained for the re-evaluation; by default, the quality
    the challenger's run recorded for the judge that scored it. The judge's quality is checked in
    the languages the completions were judged as: `judged_languages` of re-evaluated completions
    and those the challenger's run recorded."""
    languages = sorted(plan.evaluation.target_languages) if plan.evaluation else plan.challenger.languages
    blocking = list(plan.blocking)
    if plan.champion is not None:
        if "champion" not in evidence:
            blocking.append(f"no evidence of champion v{plan.champion.version} on this evaluation set (needs re-evaluation)")
        elif "champion" not in plan.reevaluate:
            blocking += _judge_mismatch(plan)
    quality = judge_quality if judge_quality is not None else plan.challenger.judge_quality
    judged = [*judged_languages, *filter(None, plan.challenger.tags.get("judged_languages", "").split(","))]
    checks = [] if plan.blocking else gate_checks(evidence, languages, gate, quality, judged)
    reasons = blocking + [check.message for check in checks if not check.passed]
    return GateDecision(
        model_name=plan.model_name, challenger=plan.challenger.version,
        champion=plan.champion.version if plan.champion else None, aliases=plan.aliases,
        passed=not reasons, reasons=reasons, checks=checks, thresholds=gate,
        reevaluated=list(plan.reevaluate), test=gate.describe_test(len(languages)),
    )


def decide_on_evaluations(
    plan: PromotionPlan, gate: GateConfig, measured: dict[str, ModelEvidence], stored: Callable[[Evidence], Evidence],
    judge_quality: dict[str, dict[str, float]] | None = None,
) -> GateDecision:
    """`decide` on the roles re-evaluated in this run (`measured`) and, unless the plan is blocked,
    the evidence `stored` finds for the other roles (it gets the measured evidence)."""
    threshold = plan.evaluation.judge.threshold if plan.evaluation else 0.5
    evidence: Evidence = {role: evidence_of(model, threshold) for role, model in measured.items()}
    if not plan.blocking:
        evidence |= stored(evidence)
    judged = [lang for model in measured.values() for lang in model.judged_languages]
    return decide(plan, gate, evidence, judge_quality, judged)


def _judge_mismatch(plan: PromotionPlan) -> list[str]:
    """Numbers scored by two different judges are not comparable: refuse, naming both."""
    mine = plan.challenger.tags.get("judge.identity_hash")
    theirs = plan.champion.tags.get("judge.identity_hash") if plan.champion else None
    if mine and mine == theirs:
        return []
    return [f"the challenger was scored by judge {mine or '(unrecorded)'} and champion v{plan.champion.version} by judge "
            f"{theirs or '(unrecorded)'}: numbers from different judges are not compared (re-evaluate the champion)"]


def _rounded(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def decision_tags(decision: GateDecision) -> dict[str, str]:
    """Tags that record the decision on the challenger, pass or fail: the reasons, the limits,
    the test, and per check (`gate.check.<name>`) each language's estimate, its one-sided bound,
    the bound's level, the limit, n and the outcome."""
    by_name: dict[str, dict[str, dict]] = {}
    for check in decision.checks:
        by_name.setdefault(check.name, {})[check.language] = {
            "value": _rounded(check.value), "bound": _rounded(check.bound), "level": _rounded(check.level),
            "limit": check.limit, "n": check.n, "passed": check.passed}
    tags = {
        "validation_status": "approved" if decision.passed else "rejected",
        "gate.reasons": "; ".join(decision.reasons)[:5000] or "all checks passed",
        "gate.thresholds": decision.thresholds.model_dump_json(),
        "gate.test": decision.test,
        "gate.champion": f"v{decision.champion}" if decision.champion else "none",
        "gate.reevaluated": ",".join(decision.reevaluated) or "none",
        "gate.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tags |= {f"gate.check.{name}": json.dumps(values, sort_keys=True, separators=(",", ":"))
             for name, values in by_name.items()}
    return tags


def _headline(decision: GateDecision) -> str:
    verdict = "passes the gate" if decision.passed else "is rejected"
    champion = f" and champion v{decision.champion}" if decision.champion else ""
    return f"{decision.model_name} v{decision.challenger} {verdict} (vs the base model{champion})"


def _blocking_reasons(decision: GateDecision) -> list[str]:
    """The reasons no check carries: what stopped the gate before or beside its checks."""
    messages = {check.message for check in decision.checks}
    return [reason for reason in decision.reasons if reason not in messages]


def verdict_text(decision: GateDecision) -> str:
    """The decision as the console shows it: a headline, the verdict table (`mbad.gate.verdict_table`)
    and what blocked the decision, if anything did."""
    blocked = [f"blocked: {reason}" for reason in _blocking_reasons(decision)]
    return "\n".join([_headline(decision), f"test: {decision.test}", format_verdict(verdict_table(decision.checks)), *blocked])


_OUTCOME_COLORS = {"pass": "#d9f2d9", "fail": "#f8d0d0", "refused": "#fbeccb"}


def verdict_html(decision: GateDecision) -> str:
    """The decision as an HTML page (the gate step's visualization): the verdict table with each
    outcome colored, then every reason in full (failed checks' messages and what blocked it)."""
    table = verdict_table(decision.checks)
    styled = table.style.map(lambda outcome: f"background-color:{_OUTCOME_COLORS[outcome]}", subset=["outcome"])
    styled = styled.format(precision=4, na_rep="-").hide(axis="index")
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in decision.reasons)
    return (f"<html><body style='font-family:sans-serif'><h2>{html.escape(_headline(decision))}</h2>"
            f"<p>{html.escape(decision.test)}</p>"
            f"{styled.to_html() if len(table) else '<p>(no checks)</p>'}"
            f"{f'<h3>Reasons</h3><ul>{reasons}</ul>' if reasons else ''}</body></html>")


def record_decision(client: MlflowClient, decision: GateDecision) -> None:
    """Record the decision on the challenger: its tags (`decision_tags`) and, in the run that
    registered it, its verdict table (`VERDICT_FILE`). MLflow appends a table to an existing one,
    so each decision on the version adds its rows, told apart by `decided_at` (the tag's time)."""
    tags = decision_tags(decision)
    set_version_tags(client, decision.model_name, decision.challenger, tags)
    table = verdict_table(decision.checks)
    try:
        run_id = client.get_model_version(decision.model_name, decision.challenger).run_id
        if run_id and len(table):  # a version registered without a run keeps its tags only
            client.log_table(run_id, table.assign(decided_at=tags["gate.decided_at"]), artifact_file=VERDICT_FILE)
    except MlflowException as error:
        raise unavailable(client, f"log the verdict of v{decision.challenger} of '{decision.model_name}'", error) from error


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
