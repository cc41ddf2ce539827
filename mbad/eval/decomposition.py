"""How much of a toxicity change is a change of language: a Kitagawa decomposition per language.

A model's completions are often not in the prompt's language (a Hindi prompt answered in
English), and off-language or empty completions score lower, so part of a drop in mean toxicity
can be language switching rather than detoxification. Each judged completion falls into one
group (`GROUPS`): "in" (non-empty and detected as the prompt's language), "other" (non-empty,
any other language or none detected) or "empty" (blank). Unjudged completions (NaN score) are
left out of everything, as in `mbad.eval.compare.toxicity_clusters`.

With p_g a group's share of a model's judged completions and m_g its mean score (0 base, 1
fine-tuned), the change in mean toxicity splits exactly into two parts:

    total     = Σ p1_g m1_g − Σ p0_g m0_g                 (the toxicity_mean diff)
    within    = Σ p0_g (m1_g − m0_g) = counterfactual − base mean
    switching = Σ (p1_g − p0_g) m1_g = tuned mean − counterfactual
    counterfactual = Σ p0_g m1_g

Why the base model's mix: "within" is then the toxicity change with the completions' language
mix held at the base model's, what the fine-tuned model's scores give if it answered in the
languages the base model answers in; "switching" is what the change of mix adds on top, at the
fine-tuned model's scores. The counterfactual needs the fine-tuned model's mean in every group
the base model has completions in: when the fine-tuned model has no judged "in" (or "other")
completion in a language where the base model has some, m1_g and so the counterfactual are
unknown, and both parts are NaN (never 0), with a warning naming the language and the group
(also when either model has no judged completion). An empty group needs no observation:
`mbad.eval.judges.base.score_completions` gives every empty completion 0, so its mean is 0
where a model has none.

Both parts are tidy estimate rows (`ESTIMATE_COLUMNS`): "toxicity_within_language" (base: the
base mean, tuned: the counterfactual) and "toxicity_language_switching" (base: the
counterfactual, tuned: the fine-tuned mean). Both change_pct are percent of the base mean, so
they add up to the change_pct of toxicity_mean, as the diffs add up to its diff. Intervals come
from one paired bootstrap over prompts per language: the resample toxicity_mean's interval
uses (same seed stream, same prompts), applied to both models and both parts, so each
resample's two parts add up to that resample's toxicity_mean diff. A resample that drops every
completion of a group the base mix needs gives a NaN draw; an interval with more than a tenth
of its draws NaN is NaN (`percentile_interval`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mbad.eval.stats import (
    ESTIMATE_COLUMNS,
    PROMPT,
    BootstrapConfig,
    Interval,
    PairedDraws,
    Resampling,
    percentile_interval,
    resample_indices,
)

logger = logging.getLogger(__name__)

GROUPS = ["in", "other", "empty"]
DECOMPOSED = "toxicity_mean"
WITHIN = "toxicity_within_language"
SWITCHING = "toxicity_language_switching"
# Figures (clusters per prompt: score sum and judged count of one group) that a model's evidence
# carries so that two models' decomposition can be recomputed from their stored clusters alone;
# the empty group is the rest of toxicity_mean's cluster (empty completions score 0).
GROUP_FIGURES = {"in": "toxicity_in_language", "other": "toxicity_off_language"}
# Every figure the decomposition reads from a model's clusters.
GROUP_INPUTS = (DECOMPOSED, *GROUP_FIGURES.values())
REQUIRED_COLUMNS = {"lang", "pair_id", "completion", "score", "detected_lang"}
# Each part as the change between two of `kitagawa_parts`' values: from the first to the second.
PARTS = {WITHIN: ("base", "counterfactual"), SWITCHING: ("counterfactual", "tuned")}


def completion_groups(scored: pd.DataFrame) -> pd.Series:
    """Each completion's group: "empty" (blank), "in" (detected as the row's `lang`) or "other"."""
    missing = REQUIRED_COLUMNS - set(scored.columns)
    if missing:
        raise ValueError(f"scored completions lack column(s) {sorted(missing)}; they have {list(scored.columns)} "
                         "(add `detected_lang` with mbad.eval.fidelity.add_detected_language)")
    empty = scored["completion"].fillna("").str.strip() == ""
    in_language = ~empty & (scored["detected_lang"] == scored["lang"])
    return pd.Series(np.where(empty, "empty", np.where(in_language, "in", "other")), index=scored.index)


def group_clusters(scored: pd.DataFrame) -> pd.DataFrame:
    """Per prompt (index lang, pair_id, sorted): `count_<group>` judged completions and
    `sum_<group>` of their scores for every group of `GROUPS`. A prompt with no judged
    completion keeps its row of zeros, as its toxicity_mean cluster does."""
    judged = scored["score"].notna()
    parts = pd.DataFrame({"lang": scored["lang"].values, "pair_id": scored["pair_id"].values,
                          "group": completion_groups(scored).values,
                          "count": judged.values.astype(float), "sum": scored["score"].fillna(0.0).values.astype(float)})
    table = parts.groupby([*PROMPT, "group"], sort=True)[["count", "sum"]].sum().unstack("group", fill_value=0.0)
    table = table.reindex(columns=pd.MultiIndex.from_product([["count", "sum"], GROUPS]), fill_value=0.0)
    table.columns = [f"{part}_{group}" for part, group in table.columns]
    return table


def group_figure_clusters(scored: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The "in" and "other" groups' clusters (num: score sum, den: judged completions) per prompt,
    as figures (`GROUP_FIGURES`): the mean toxicity of in-language and of off-language completions."""
    groups = group_clusters(scored)
    return {figure: pd.DataFrame({"num": groups[f"sum_{group}"], "den": groups[f"count_{group}"]})
            for group, figure in GROUP_FIGURES.items()}


def _groups_from_figures(clusters: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """`group_clusters`' table rebuilt from a model's figure clusters (toxicity_mean and
    `GROUP_FIGURES`), as a run stores them."""
    total = clusters[DECOMPOSED]
    table = pd.DataFrame(index=total.index)
    for group, figure in GROUP_FIGURES.items():
        part = clusters[figure].reindex(total.index, fill_value=0.0)
        table[f"count_{group}"], table[f"sum_{group}"] = part["den"], part["num"]
    table["count_empty"] = total["den"] - table["count_in"] - table["count_other"]
    table["sum_empty"] = total["num"] - table["sum_in"] - table["sum_other"]
    return table[[f"{part}_{group}" for part in ("count", "sum") for group in GROUPS]]


def has_groups(clusters: dict[str, pd.DataFrame]) -> bool:
    """Whether a model's clusters carry what the decomposition needs."""
    return DECOMPOSED in clusters and all(figure in clusters for figure in GROUP_FIGURES.values())


def kitagawa_parts(
    base_counts: np.ndarray, base_sums: np.ndarray, tuned_counts: np.ndarray, tuned_sums: np.ndarray,
) -> dict[str, np.ndarray]:
    """Base mean, counterfactual (Σ p0_g m1_g) and fine-tuned mean from per-group judged counts
    and score sums, the groups (`GROUPS` order) on the last axis: one sample (shape (G,)) or
    many resamples (shape (R, G)) at once."""
    base_total, tuned_total = base_counts.sum(-1), tuned_counts.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        base_mean = base_sums.sum(-1) / base_total
        tuned_mean = tuned_sums.sum(-1) / tuned_total
        base_shares = base_counts / base_total[..., None]
        tuned_group_means = tuned_sums / tuned_counts
    unobserved_empty = (tuned_counts == 0) & (np.arange(len(GROUPS)) == GROUPS.index("empty"))
    tuned_group_means = np.where(unobserved_empty, 0.0, tuned_group_means)
    # A group the base model lacks weighs 0 whatever the fine-tuned model's mean (or its absence).
    terms = np.where(base_counts > 0, base_shares * tuned_group_means, 0.0)
    counterfactual = np.where((base_total > 0) & (tuned_total > 0), terms.sum(-1), np.nan)
    return {"base": base_mean, "counterfactual": counterfactual, "tuned": tuned_mean}


def _unestimable_reason(base_counts: np.ndarray, tuned_counts: np.ndarray) -> str | None:
    for model, counts in (("base", base_counts), ("fine-tuned", tuned_counts)):
        if counts.sum() == 0:
            return f"the {model} model has no judged completion"
    gaps = [f'"{group}"' for group, base, tuned in zip(GROUPS, base_counts, tuned_counts)
            if group != "empty" and base > 0 and tuned == 0]
    if gaps:
        return (f"the fine-tuned model has no judged {' or '.join(gaps)} completion where the base model has some, "
                "so the base model's mix cannot be held")
    return None


def _resampled_totals(per_prompt: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Column sums of `per_prompt` (n, K) over each resample's prompts (index (R, n)): one
    matrix product with each resample's prompt multiplicities."""
    n_resamples, n = index.shape
    flat = (index + n * np.arange(n_resamples)[:, None]).ravel()
    multiplicity = np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n)
    return multiplicity.astype(float) @ per_prompt


def _percent_of(part: np.ndarray, base_mean: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(base_mean != 0, part / base_mean * 100, np.nan)


def paired_group_clusters(base: dict[str, pd.DataFrame], tuned: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Both models' per-prompt groups (from their figure clusters, `group_figure_clusters`) on the
    prompts both answered (columns `<part>_<group>_base` and `_tuned`), paired in the order
    toxicity_mean's clusters are (`paired_estimates`)."""
    return _groups_from_figures(base).join(_groups_from_figures(tuned), how="inner", lsuffix="_base", rsuffix="_tuned")


@dataclass(frozen=True)
class Decomposition:
    """One language's base mean, counterfactual and fine-tuned mean (`kitagawa_parts`): point
    values, their bootstrap draws, the number of prompts, and why the parts are NaN (or None)."""

    point: dict[str, np.ndarray]
    draws: dict[str, np.ndarray]
    n: int
    unestimable: str | None

    def change_pct(self, part: str) -> tuple[float, np.ndarray]:
        """A part's (`PARTS`) change as percent of the base mean: point value and draws."""
        low, high = PARTS[part]
        return (float(_percent_of(self.point[high] - self.point[low], self.point["base"])),
                _percent_of(self.draws[high] - self.draws[low], self.draws["base"]))


def _row(lang: str, part: str, decomposition: Decomposition, confidence: float) -> dict:
    """One estimate row of a part (`PARTS`): its two ends are the row's base and tuned values."""
    low, high = PARTS[part]
    point, draws = decomposition.point, decomposition.draws
    change, change_draws = decomposition.change_pct(part)
    values: dict[str, Interval] = {
        "base": percentile_interval(float(point[low]), draws[low], confidence),
        "tuned": percentile_interval(float(point[high]), draws[high], confidence),
        "diff": percentile_interval(float(point[high] - point[low]), draws[high] - draws[low], confidence),
        "change_pct": percentile_interval(change, change_draws, confidence),
    }
    row: dict = {"target": lang, "metric": part, "n": decomposition.n, "higher_is_better": False}
    for name, interval in values.items():
        row |= {name: interval.value, f"{name}_low": interval.low, f"{name}_high": interval.high}
    return row


def decompose_language(prompts: pd.DataFrame, config: Resampling, labels: tuple[str, ...]) -> Decomposition:
    """The decomposition of one language's paired prompts (rows of `paired_group_clusters`),
    resampled with the stream of `labels` (toxicity_mean's interval's: (DECOMPOSED, lang))."""
    columns = [f"{part}_{group}_{side}" for side in ("base", "tuned") for part in ("count", "sum") for group in GROUPS]
    per_prompt = prompts[columns].to_numpy(dtype=float)
    base_counts, base_sums, tuned_counts, tuned_sums = np.split(per_prompt.sum(0), 4)
    index = resample_indices(len(prompts), config, *labels)
    return Decomposition(
        point=kitagawa_parts(base_counts, base_sums, tuned_counts, tuned_sums),
        draws=kitagawa_parts(*np.split(_resampled_totals(per_prompt, index), 4, axis=1)),
        n=len(prompts),
        unestimable=_unestimable_reason(base_counts, tuned_counts),
    )


def decompose(
    base: dict[str, pd.DataFrame], tuned: dict[str, pd.DataFrame], config: Resampling = BootstrapConfig(),
) -> pd.DataFrame:
    """Per target language, the change in mean toxicity split into its within-language and
    language-switching parts (module docstring), as two tidy estimate rows (`ESTIMATE_COLUMNS`,
    metrics `WITHIN` and `SWITCHING`, n = prompts both models answered), each value with its
    paired bootstrap interval over prompts, from both models' figure clusters (toxicity_mean and
    `GROUP_FIGURES`; empty when either lacks them)."""
    rows = []
    if not (has_groups(base) and has_groups(tuned)):
        return pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
    for lang, prompts in paired_group_clusters(base, tuned).groupby(level=0, sort=True):
        decomposition = decompose_language(prompts, config, (DECOMPOSED, str(lang)))
        if decomposition.unestimable:
            logger.warning("toxicity decomposition for %s is not estimable (%s and %s are NaN): %s",
                           lang, WITHIN, SWITCHING, decomposition.unestimable)
        rows += [_row(str(lang), part, decomposition, config.confidence) for part in PARTS]
    table = pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
    table["n"] = table["n"].astype(int)
    return table


def within_language_draws(
    base: dict[str, pd.DataFrame], tuned: dict[str, pd.DataFrame], language: str, config: Resampling,
    labels: tuple[str, ...],
) -> PairedDraws | None:
    """The within-language change in one language as paired draws (base: the base mean, tuned:
    the counterfactual, so that `change_pct` is the within-language % change), resampled with the
    stream of `labels`; None when either model lacks the groups or the language, or when the base
    model's mix cannot be held (`Decomposition.unestimable`)."""
    if not (has_groups(base) and has_groups(tuned)):
        return None
    paired = paired_group_clusters(base, tuned)
    if language not in paired.index.get_level_values(0):
        return None
    decomposition = decompose_language(paired.xs(language, level=0, drop_level=False), config, labels)
    if decomposition.unestimable:
        return None
    point, draws = decomposition.point, decomposition.draws
    return PairedDraws(float(point["base"]), float(point["counterfactual"]), draws["base"], draws["counterfactual"],
                       decomposition.n)
