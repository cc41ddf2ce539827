"""The paper's experiment grid: which settings to run, what they cost, and the tidy table."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mbad.config import StatisticsConfig, SweepConfig, TrainConfig
from mbad.eval.compare import FIGURES, Figure, ModelEvidence, compare_models, paired_estimates
from mbad.eval.decomposition import (
    DECOMPOSED,
    GROUP_INPUTS,
    PARTS,
    WITHIN,
    decompose_language,
    has_groups,
    paired_group_clusters,
)
from mbad.eval.stats import TRANSFORMS, Resampling, percentile_interval, resample_indices
from mbad.languages import LanguageRegistry

RESULT_COLUMNS = ["model", "method", "mode", "source", "fraction", "target", "metric", "value", "ci_low", "ci_high", "n"]


class SweepBudgetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Setting:
    """One adapter to train (or, for `zs`, the base model), named uniquely within a sweep."""

    name: str
    mode: str
    source: str  # a language code for xft, `all` otherwise
    fraction: float
    train_languages: tuple[str, ...]
    # `sft` or `dpo` (`none` for zs, the base model).
    method: str = "sft"

    def as_dict(self) -> dict:
        return asdict(self)

    def step_id(self, kind: str) -> str:
        """The id of this setting's `kind` step (`train`, `generate`, `score`, ...) in a sweep run:
        the pipeline names its steps with it and the fan-in step finds their outputs with it."""
        return f"{kind}__{self.name}"


def plan_settings(config: SweepConfig) -> list[Setting]:
    """zs, then per method xft per source language, pft per fraction, and mft, in the configured
    modes. SFT settings keep their plain names (`xft_en`), the others are prefixed (`dpo_xft_en`)."""
    languages = tuple(config.languages)
    settings = []
    if "zs" in config.modes:
        settings.append(Setting("zs", "zs", "all", 1.0, (), "none"))
    for method in config.methods:
        prefix = "" if method == "sft" else f"{method}_"
        if "xft" in config.modes:
            settings += [Setting(f"{prefix}xft_{lang}", "xft", lang, 1.0, (lang,), method) for lang in languages]
        if "pft" in config.modes:
            settings += [Setting(f"{prefix}pft_{round(f * 100)}", "pft", "all", f, languages, method) for f in config.fractions]
        if "mft" in config.modes:
            settings.append(Setting(f"{prefix}mft", "mft", "all", 1.0, languages, method))
    return settings


def train_config_for(setting: Setting, config: SweepConfig) -> TrainConfig:
    """The base training config with this setting's languages, fraction and length."""
    overrides: dict = {"source_languages": list(setting.train_languages), "fraction": setting.fraction,
                       "method": setting.method}
    if setting.mode == "mft":
        overrides["max_length"] = config.mft_max_length
    return config.base.train.model_copy(update=overrides)


@dataclass
class SweepEstimate:
    settings: int
    trainings: int
    generations: int
    judge_calls: int
    perspective_hours: float | None

    def describe(self) -> str:
        text = (f"{self.settings} settings: {self.trainings} adapter trainings, {self.generations} generated "
                f"completions, {self.judge_calls} judge calls")
        if self.perspective_hours is not None:
            text += f"; Perspective API: {self.judge_calls} calls, about {self.perspective_hours:.1f} h at its quota"
        return text


def estimate(config: SweepConfig, settings: list[Setting], test_prompts_per_language: int) -> SweepEstimate:
    """What the sweep will cost before it starts; raises when a Perspective run is over budget."""
    prompts = min(test_prompts_per_language, config.base.generation.max_prompts_per_language or test_prompts_per_language)
    per_model = prompts * len(config.languages) * config.base.generation.num_samples
    evaluated = len(settings) + (0 if "zs" in config.modes else 1)  # the base model is always evaluated
    judge_calls = per_model * evaluated
    perspective = config.base.judge.backend == "perspective"
    result = SweepEstimate(
        settings=len(settings),
        trainings=sum(setting.mode != "zs" for setting in settings),
        generations=judge_calls,
        judge_calls=judge_calls,
        perspective_hours=judge_calls / config.base.judge.perspective.queries_per_second / 3600 if perspective else None,
    )
    if perspective and judge_calls > config.perspective_budget_calls and not config.allow_over_budget:
        raise SweepBudgetError(
            f"this sweep needs {judge_calls} Perspective API calls (~{result.perspective_hours:.1f} h), over the budget of "
            f"{config.perspective_budget_calls}: raise perspective_budget_calls or set allow_over_budget: true"
        )
    return result


def tidy_rows(model: str, setting: Setting, estimates: pd.DataFrame) -> list[dict]:
    """Rows of the results table for one setting, from its paired estimates versus the base model
    (`mbad.eval.compare.compare_models`): each figure of the setting's model with its 95 %
    interval, and its % change versus the base model (`toxicity_change_pct`,
    `<probe>_change_pct`, ...) with the paired interval."""
    rows = []
    for estimate in estimates.to_dict("records"):
        metric = estimate["metric"]
        change = "toxicity_change_pct" if metric == "toxicity_mean" else f"{metric}_change_pct"
        for name, part in ((metric, "tuned"), (change, "change_pct")):
            if setting.mode == "zs" and part == "change_pct":
                continue  # the base model against itself
            rows.append({"model": model, "method": setting.method, "mode": setting.mode, "source": setting.source,
                         "fraction": setting.fraction,
                         "target": estimate["target"], "metric": name, "value": float(estimate[part]),
                         "ci_low": float(estimate[f"{part}_low"]), "ci_high": float(estimate[f"{part}_high"]),
                         "n": int(estimate["n"])})
    return rows


def transfer_matrix(results: pd.DataFrame, metric: str, column: str = "value", method: str = "sft") -> pd.DataFrame:
    """Source x target matrix of one metric over one method's xft settings (`column`: value,
    ci_low, ci_high)."""
    xft = results[(results["mode"] == "xft") & (results["metric"] == metric) & (results["method"] == method)]
    return xft.pivot_table(index="source", columns="target", values=column, aggfunc="mean")


def significant_cells(results: pd.DataFrame, metric: str, method: str = "sft") -> pd.DataFrame:
    """Source x target: True where the cell's 95 % interval excludes 0."""
    low, high = transfer_matrix(results, metric, "ci_low", method), transfer_matrix(results, metric, "ci_high", method)
    return (low > 0) | (high < 0)


def _figure(joined: pd.DataFrame, suffix: str, transform: str, resamples: np.ndarray | None = None):
    """transform(sum num / sum den) of one model's columns, on all prompts or per resample."""
    num, den = joined[f"num{suffix}"].to_numpy(), joined[f"den{suffix}"].to_numpy()
    f = TRANSFORMS[transform]
    return f(num.sum() / den.sum()) if resamples is None else f(num[resamples].sum(1) / den[resamples].sum(1))


def _pair_group(source: str, target: str, registry: LanguageRegistry) -> str:
    if source == target:
        return "same language"
    return "same script" if registry.script(source) == registry.script(target) else "different script"


def aggregate_by_script(
    base: dict[str, pd.DataFrame], xft: dict[str, dict[str, pd.DataFrame]], registry: LanguageRegistry,
    figure: str = "toxicity_mean", config: Resampling = StatisticsConfig(),
) -> pd.DataFrame:
    """Mean % change of `figure` vs the base model over the xft cells (source -> target) whose
    languages are the same, share a script, or do not; and by the target's resource level. Each
    interval resamples prompts as clusters: one resample of a target's prompts serves the base
    model and every adapter evaluated on them, so cells that share a target stay correlated as
    they are. `base` and each `xft[source]` are clusters (`mbad.eval.compare.ModelEvidence.clusters`)."""
    cells: list[tuple[str, str, float, np.ndarray, int]] = []  # source, target, change, draws, prompts
    cluster_figure = DECOMPOSED if figure in PARTS else figure
    for target, base_rows in base[cluster_figure].groupby(level=0, sort=True):
        tuned = {source: clusters for source, clusters in sorted(xft.items())
                 if target in clusters[cluster_figure].index.get_level_values(0)}
        if not tuned:
            continue
        # The prompts every adapter was evaluated on, resampled once for all of them.
        prompts = base_rows.index
        for clusters in tuned.values():
            prompts = prompts.intersection(clusters[cluster_figure].index)
        labels = ("aggregate", figure, str(target))
        for source, clusters in tuned.items():
            change, draws = _cell_change(base, clusters, figure, prompts, config, labels)
            cells.append((source, str(target), change, draws, len(prompts)))
    rows = []
    for by, label in (("script", lambda s, t: _pair_group(s, t, registry)),
                      ("target resource level", lambda s, t: registry[t].resource)):
        groups: dict[str, list] = {}
        for cell in cells:
            groups.setdefault(label(cell[0], cell[1]), []).append(cell)
        for group, members in sorted(groups.items()):
            mean_draws = np.mean([cell[3] for cell in members], axis=0)
            interval = percentile_interval(float(np.mean([cell[2] for cell in members])), mean_draws, config.confidence)
            rows.append({"by": by, "group": group, "mean": interval.value, "ci_low": interval.low, "ci_high": interval.high,
                         "count": len(members), "prompts": int(sum(cell[4] for cell in members))})
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)


AGGREGATE_COLUMNS = ["by", "group", "mean", "ci_low", "ci_high", "count", "prompts"]


def _cell_change(
    base: dict[str, pd.DataFrame], tuned: dict[str, pd.DataFrame], figure: str, prompts: pd.Index, config: Resampling,
    labels: tuple[str, ...],
) -> tuple[float, np.ndarray]:
    """One xft cell's % change of `figure` vs the base model on `prompts` (one target's), with its
    draws under the resampling stream of `labels`: a ratio of clusters, or for a part of the
    toxicity change (`mbad.eval.decomposition.PARTS`) its decomposition, NaN where the base
    model's language mix cannot be held."""
    if figure in PARTS:
        paired = paired_group_clusters({name: frame.loc[prompts] for name, frame in base.items() if name in GROUP_INPUTS},
                                       {name: frame.loc[prompts] for name, frame in tuned.items() if name in GROUP_INPUTS})
        decomposition = decompose_language(paired, config, labels)
        if decomposition.unestimable:
            return math.nan, np.full(config.n_resamples, np.nan)
        return decomposition.change_pct(figure)
    transform = FIGURES.get(figure, Figure(figure)).transform
    joined = base[figure].loc[prompts].join(tuned[figure].loc[prompts].add_suffix("_tuned"), how="inner")
    index = resample_indices(len(joined), config, *labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        change = (_figure(joined, "_tuned", transform) / _figure(joined, "", transform) - 1) * 100
        draws = (_figure(joined, "_tuned", transform, index) / _figure(joined, "", transform, index) - 1) * 100
    return float(change), draws


COMPARISON_COLUMNS = ["mode", "source", "fraction", "target", "metric", "sft", "dpo", "diff", "ci_low", "ci_high", "n"]


def compare_methods(
    base: dict[str, pd.DataFrame], clusters: dict[str, dict[str, pd.DataFrame]], settings: list[Setting],
    config: Resampling = StatisticsConfig(), figures: tuple[str, ...] = ("toxicity_mean",),
) -> pd.DataFrame:
    """DPO vs SFT in each setting both ran (same mode, source, fraction), per target: the
    difference dpo - sft of each figure, paired on the same prompts, with its interval; and the
    parts of their toxicity change vs the base model (`_part_differences`), so that a method
    that only switches language more does not pass for one that detoxifies. `base` holds the
    base model's clusters, `clusters` each setting's by setting name."""
    by_key = {(s.method, s.mode, s.source, s.fraction): s.name for s in settings}
    rows = []
    for (method, mode, source, fraction), name in sorted(by_key.items()):
        partner = by_key.get(("dpo", mode, source, fraction))
        if method != "sft" or partner is None:
            continue
        wanted = {figure: FIGURES.get(figure, Figure(figure)) for figure in figures}
        sft, dpo = ({figure: clusters[setting][figure] for figure in figures if figure in clusters[setting]}
                    for setting in (name, partner))
        estimates = paired_estimates(sft, dpo, wanted, config)
        cell = {"mode": mode, "source": source, "fraction": fraction}
        for row in estimates.to_dict("records"):
            rows.append(cell | {"target": row["target"], "metric": row["metric"], "sft": row["base"], "dpo": row["tuned"],
                                "diff": row["diff"], "ci_low": row["diff_low"], "ci_high": row["diff_high"],
                                "n": int(row["n"])})
        rows += [cell | row for row in _part_differences(base, clusters[name], clusters[partner], config)]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _part_differences(
    base: dict[str, pd.DataFrame], sft: dict[str, pd.DataFrame], dpo: dict[str, pd.DataFrame], config: Resampling,
) -> list[dict]:
    """Per target, each part of the toxicity change (`mbad.eval.decomposition.PARTS`) as rows
    `<part>_change_pct`: SFT's and DPO's % change vs the base model and dpo - sft in percentage
    points, on the prompts all three answered. One resample of those prompts serves the base
    model and both methods (toxicity_mean's stream), so the interval of the difference is
    paired. NaN where either method's part is unestimable; none when a model lacks the groups."""
    if not all(has_groups(model) for model in (base, sft, dpo)):
        return []
    rows = []
    for target, base_rows in base[DECOMPOSED].groupby(level=0, sort=True):
        prompts = base_rows.index.intersection(sft[DECOMPOSED].index).intersection(dpo[DECOMPOSED].index)
        if prompts.empty:
            continue
        for part in PARTS:
            (sft_change, sft_draws), (dpo_change, dpo_draws) = (
                _cell_change(base, model, part, prompts, config, (DECOMPOSED, str(target))) for model in (sft, dpo))
            diff = percentile_interval(dpo_change - sft_change, dpo_draws - sft_draws, config.confidence)
            rows.append({"target": str(target), "metric": f"{part}_change_pct", "sft": sft_change, "dpo": dpo_change,
                         "diff": diff.value, "ci_low": diff.low, "ci_high": diff.high, "n": len(prompts)})
    return rows


@dataclass(frozen=True)
class SweepResults:
    """A sweep's figures: every setting against the base model (`results`, `RESULT_COLUMNS`;
    each setting's own rows by name in `rows`), the xft cells' % change by script and resource
    level (`aggregates`), DPO - SFT in each setting both ran, in mean toxicity and in each part
    of the toxicity change vs the base model (`methods`, `compare_methods`), and the knowledge
    probes the models were measured with."""

    results: pd.DataFrame
    rows: dict[str, list[dict]]
    aggregates: pd.DataFrame
    methods: pd.DataFrame
    probes: list[str]


# A setting's evaluation by its name: its scored completions, knowledge probe items and fluency.
SettingOutputs = Callable[[str], ModelEvidence]


def compare_sweep(settings: list[Setting], outputs: SettingOutputs, config: SweepConfig) -> SweepResults:
    """Every setting against the base model (the evaluation of `zs`), paired on prompts and probe
    items (`mbad.eval.compare.compare_models`, with the base config's statistics), and the
    aggregates and method comparison over the settings' clusters."""
    statistics, threshold = config.base.statistics, config.base.judge.threshold
    base_evidence = outputs("zs")
    base = base_evidence.clusters(threshold)
    clusters, rows = {}, {}
    for setting in settings:
        comparison = compare_models(base_evidence, outputs(setting.name), threshold, statistics)
        clusters[setting.name] = comparison.tuned
        rows[setting.name] = tidy_rows(config.model_label, setting, comparison.estimates)
    aggregates = pd.DataFrame()
    if "xft" in config.modes:
        registry = LanguageRegistry.from_yaml(config.base.data.languages_file)
        # The total toxicity change and its within-language part, by script, per method.
        aggregates = pd.concat([aggregate_by_script(base, {s.source: clusters[s.name] for s in settings
                                                           if s.mode == "xft" and s.method == method}, registry,
                                                    figure=figure, config=statistics).assign(method=method, figure=figure)
                                for method in config.methods for figure in ("toxicity_mean", WITHIN)],
                               ignore_index=True)
    results = pd.DataFrame([row for setting_rows in rows.values() for row in setting_rows], columns=RESULT_COLUMNS)
    return SweepResults(results, rows, aggregates, compare_methods(base, clusters, settings, statistics),
                        sorted(set(base_evidence.knowledge["probe"])))
