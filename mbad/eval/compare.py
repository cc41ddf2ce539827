"""Base vs fine-tuned, per target language, every figure with its paired interval.

Each figure is built from clusters (`Clusters`: one row per prompt or probe item with a
numerator and a denominator, for both models), and `paired_ratio_bootstrap` gives the base and
fine-tuned values, their difference and the % change, each with a 95 % interval. The result is
one tidy table (`ESTIMATE_COLUMNS`), from which the printed table, the MLflow metrics and the
gate read. `compare_models` is the whole comparison of two models' evidence (`ModelEvidence`: scored
completions, probe items and fluency), as every report, sweep, gate and script makes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mbad.eval.decomposition import GROUP_FIGURES, SWITCHING, WITHIN, decompose, group_figure_clusters
from mbad.eval.fidelity import add_detected_language
from mbad.eval.stats import ESTIMATE_COLUMNS, PROMPT, BootstrapConfig, Resampling, paired_ratio_bootstrap


@dataclass(frozen=True)
class Figure:
    """How one figure is computed from clusters: the ratio's transform and which way is good."""

    name: str
    transform: str = "mean"
    higher_is_better: bool = False


def _per_prompt(frame: pd.DataFrame, numerator: pd.Series, denominator: pd.Series) -> pd.DataFrame:
    parts = pd.DataFrame({"lang": frame["lang"].values, "pair_id": frame["pair_id"].values,
                          "num": numerator.values.astype(float), "den": denominator.values.astype(float)})
    return parts.groupby(PROMPT, sort=True)[["num", "den"]].sum()


def toxicity_clusters(scored: pd.DataFrame, threshold: float) -> dict[str, pd.DataFrame]:
    """Per prompt (all its k samples), from scored completions (pair_id, lang, sample, score,
    completion): mean toxicity, toxicity probability (any sample >= threshold), expected
    maximum toxicity, and the share of empty completions. Unjudged samples (NaN) are left out of
    the toxicity figures; a prompt with no judged sample is left out of them altogether."""
    judged = scored["score"].notna()
    score = scored["score"].fillna(0.0)
    clusters = {"toxicity_mean": _per_prompt(scored, score, judged)}
    by_prompt = scored.assign(judged=judged, score=scored["score"]).groupby(PROMPT, sort=True)
    any_judged = by_prompt["judged"].any()
    max_score = by_prompt["score"].max().fillna(0.0)
    clusters["toxicity_probability"] = pd.DataFrame({"num": (max_score >= threshold).astype(float) * any_judged,
                                                     "den": any_judged.astype(float)})
    clusters["expected_max_toxicity"] = pd.DataFrame({"num": max_score * any_judged, "den": any_judged.astype(float)})
    if "completion" in scored:
        empty = scored["completion"].fillna("").str.strip() == ""
        clusters["empty_share"] = _per_prompt(scored, empty, pd.Series(np.ones(len(scored))))
    return clusters


def fidelity_clusters(completions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per prompt: the share of non-empty completions in the prompt's language (`detected_lang`)."""
    spoken = completions["completion"].fillna("").str.strip() != ""
    in_target = spoken & (completions["detected_lang"] == completions["lang"])
    return {"target_language_share": _per_prompt(completions, in_target, spoken)}


def fluency_clusters(fluency: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per prompt: summed NLL and token count of its completions under the fixed scorer."""
    return {"fluency_perplexity": _per_prompt(fluency, fluency["value"], fluency["weight"])}


def probe_clusters(items: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per probe item (probe, lang, item, value, weight)."""
    clusters = {}
    for probe, rows in items.groupby("probe", sort=True):
        frame = rows.rename(columns={"value": "num", "weight": "den"})
        clusters[str(probe)] = frame.groupby(["lang", "item"], sort=True)[["num", "den"]].sum()
    return clusters


def paired_estimates(
    base: dict[str, pd.DataFrame], tuned: dict[str, pd.DataFrame], figures: dict[str, Figure],
    config: Resampling = BootstrapConfig(),
) -> pd.DataFrame:
    """The tidy estimates table for every figure both models have, per language."""
    rows = []
    for name in sorted(set(base) & set(tuned)):
        figure = figures.get(name, Figure(name))
        joined = base[name].join(tuned[name], how="inner", lsuffix="_base", rsuffix="_tuned")
        for lang, clusters in joined.groupby(level=0, sort=True):
            estimate = paired_ratio_bootstrap(
                clusters["num_base"].to_numpy(), clusters["den_base"].to_numpy(),
                clusters["num_tuned"].to_numpy(), clusters["den_tuned"].to_numpy(),
                transform=figure.transform, config=config, labels=(name, str(lang)),
            )
            rows.append({"target": str(lang), "metric": name, "higher_is_better": figure.higher_is_better,
                         **estimate.as_dict()})
    table = pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
    table["n"] = table["n"].astype(int)
    return table


def wide_table(estimates: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per target language; columns `<metric>_<part>` (base, tuned, change_pct, ...)."""
    chosen = estimates if metrics is None else estimates[estimates["metric"].isin(metrics)]
    values = chosen.drop(columns=["higher_is_better"]).melt(id_vars=["target", "metric"], var_name="part")
    values["column"] = values["metric"] + "_" + values["part"]
    wide = values.pivot_table(index="target", columns="column", values="value", aggfunc="first")
    return wide.reset_index().rename_axis(columns=None)


# The figures mbad computes itself; knowledge probes bring theirs (`all_figures`).
FIGURES: dict[str, Figure] = {
    "toxicity_mean": Figure("toxicity_mean"),
    "toxicity_probability": Figure("toxicity_probability"),
    "expected_max_toxicity": Figure("expected_max_toxicity"),
    "empty_share": Figure("empty_share"),
    "target_language_share": Figure("target_language_share", higher_is_better=True),
    "fluency_perplexity": Figure("fluency_perplexity", transform="exp"),
    # Mean toxicity of the completions in the prompt's language, and of the others.
    **{name: Figure(name) for name in GROUP_FIGURES.values()},
    # The toxicity change's parts (`mbad.eval.decomposition.decompose`, not a ratio of clusters).
    WITHIN: Figure(WITHIN),
    SWITCHING: Figure(SWITCHING),
}


def all_figures() -> dict[str, Figure]:
    """mbad's figures and each knowledge probe's (`mbad.eval.probes.PROBES`: its transform and
    which way is better)."""
    # Imported here: the probes import torch, and a comparison needs only their figures.
    from mbad.eval.probes import PROBES

    return FIGURES | {name: Figure(name, probe.transform, probe.higher_is_better) for name, probe in PROBES.items()}


def clusters_for(
    scores: pd.DataFrame, threshold: float, items: pd.DataFrame | None = None, fluency: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Every figure's clusters for one model: toxicity (and, when the scored completions carry
    `detected_lang`, see `mbad.eval.fidelity`, fidelity and the toxicity of in- and off-language
    completions, `mbad.eval.decomposition`), fluency and knowledge probes when given."""
    clusters = toxicity_clusters(scores, threshold)
    if "detected_lang" in scores:
        clusters |= fidelity_clusters(scores) | group_figure_clusters(scores)
    if fluency is not None:
        clusters |= fluency_clusters(fluency)
    if items is not None:
        clusters |= probe_clusters(items)
    return clusters


EVIDENCE_COLUMNS = ["figure", "lang", "key", "num", "den"]


def evidence_frame(clusters: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One model's clusters as one flat table (figure, lang, key, num, den): what a registered
    version keeps so that a later gate can pair it, prompt by prompt, with another model."""
    parts = [frame.rename_axis(["lang", "key"]).reset_index().assign(figure=name) for name, frame in clusters.items()]
    if not parts:
        return pd.DataFrame(columns=EVIDENCE_COLUMNS)
    table = pd.concat(parts, ignore_index=True)[EVIDENCE_COLUMNS]
    table["key"] = table["key"].astype(str)
    return table


def clusters_from_evidence(evidence: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The inverse of `evidence_frame` (keys as strings, so that any two sources pair up)."""
    table = evidence.astype({"lang": str, "key": str, "num": float, "den": float})
    return {str(name): rows.set_index(["lang", "key"])[["num", "den"]].sort_index()
            for name, rows in table.groupby("figure", sort=True)}


@dataclass(frozen=True)
class ModelEvidence:
    """One model's evaluation, as every pipeline produces it: its scored completions (with
    their detected language, added here when missing, see `mbad.eval.fidelity`), its knowledge
    probe items and its fluency rows, and the one judge that scored them."""

    scores: pd.DataFrame
    knowledge: pd.DataFrame | None = None
    fluency: pd.DataFrame | None = None

    @classmethod
    def from_outputs(cls, output: Callable[[str, str], pd.DataFrame | None], step_id: Callable[[str], str]) -> ModelEvidence:
        """The evidence of one model from its evaluation's outputs, read by `output(step, name)`:
        the steps `pipelines.evaluation.evaluate_model` names `step_id("score")`, `"knowledge"` and
        `"fluency"`, and the outputs they name."""
        return cls(output(step_id("score"), "toxicity_scores"), output(step_id("knowledge"), "knowledge_items"),
                   output(step_id("fluency"), "fluency"))

    def __post_init__(self) -> None:
        if "detected_lang" not in self.scores:
            object.__setattr__(self, "scores", add_detected_language(self.scores))

    @property
    def judge(self) -> str:
        """The scoring judge's name (`<backend>:<identity hash>`); one evaluation has one judge."""
        names = sorted(set(self.scores["judge"].dropna())) if "judge" in self.scores else []
        if len(names) != 1:
            raise ValueError(f"the completions were scored by {len(names)} judges {names}: "
                             "numbers of different judges are not compared")
        return names[0]

    @property
    def judged_languages(self) -> list[str]:
        """The language each completion was judged as (`judged_lang`; empty ones have none)."""
        return self.scores["judged_lang"].dropna().tolist() if "judged_lang" in self.scores else []

    def clusters(self, threshold: float) -> dict[str, pd.DataFrame]:
        """Every figure's clusters (`clusters_for`)."""
        return clusters_for(self.scores, threshold, self.knowledge, self.fluency)


def evidence_of(model: ModelEvidence, threshold: float) -> dict[str, pd.DataFrame]:
    """One model's per-prompt (and per-item) clusters, keyed as stored evidence is (the gate
    pairs them with a stored version's)."""
    return clusters_from_evidence(evidence_frame(model.clusters(threshold)))


@dataclass(frozen=True)
class Comparison:
    """Base vs fine-tuned: the estimates table (`ESTIMATE_COLUMNS`) and each model's clusters by
    figure, which a run stores as the gate's evidence and a sweep pairs again."""

    estimates: pd.DataFrame
    base: dict[str, pd.DataFrame]
    tuned: dict[str, pd.DataFrame]


def compare_models(base: ModelEvidence, tuned: ModelEvidence, threshold: float, statistics: Resampling) -> Comparison:
    """Every figure of one base vs fine-tuned comparison, paired on prompts (and probe items),
    and the toxicity change split into its within-language and language-switching parts
    (`mbad.eval.decomposition`), with intervals resampled as `statistics` says (a run's
    `StatisticsConfig`). Both models must have been scored by the same judge."""
    if base.judge != tuned.judge:
        raise ValueError(f"base and fine-tuned completions were scored by different judges ({base.judge}, {tuned.judge})")
    base_clusters, tuned_clusters = base.clusters(threshold), tuned.clusters(threshold)
    estimates = pd.concat([paired_estimates(base_clusters, tuned_clusters, all_figures(), statistics),
                           decompose(base_clusters, tuned_clusters, statistics)], ignore_index=True)
    return Comparison(estimates, base_clusters, tuned_clusters)
