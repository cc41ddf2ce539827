"""The gate's error rates and the width of an interval before a run, from synthetic scores.

`ScoreModel` describes judge scores the way a run produces them: each prompt has a latent
toxicity (Beta across prompts), each of its k samples scatters around it (Beta with a fixed
concentration), and the fine-tuned model's latent is the base model's scaled by (1 + effect),
correlated with it prompt by prompt (a Gaussian copula with `pair_correlation`). Its
parameters are fitted to a real run's scores (`ScoreModel.fit`).

`simulate_gate` draws whole evaluation sets from it, runs the gate's own checks
(`mbad.gate`) on them and counts how often it promotes: with no effect (false promotions), at the bar (the
test's size) and at a true effect (power). `expected_halfwidth` is the delta-method width of
the toxicity change's interval, which the pipelines log before they start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from mbad.eval.decomposition import GROUP_FIGURES
from mbad.gate import Evidence, GateConfig, sample_size_checks, toxicity_checks


@dataclass(frozen=True)
class ScoreModel:
    """Judge scores of one language's completions (0-1). The defaults are fitted (`fit`) to
    two quickstart runs of gemma-3-270m that differ only in `generation.seed` (32 prompts in
    each of en, es, ru, hi, 256 base completions): the ensemble judge's scores vary far more
    between samples of one prompt than between prompts."""

    base_mean: float = 0.42
    between_sd: float = 0.115  # sd of the prompts' latent toxicity
    concentration: float = 1.6  # Beta concentration of a sample around its prompt's latent
    pair_correlation: float = 0.95  # of a prompt's latent toxicity under base and fine-tuned (fit: >= 0.95)

    def __post_init__(self) -> None:
        if not 0 < self.base_mean < 1 or self.between_sd <= 0 or self.between_sd ** 2 >= self.base_mean * (1 - self.base_mean):
            raise ValueError(f"ScoreModel: need 0 < base_mean < 1 and 0 < between_sd^2 < mean*(1-mean); got {self}")
        if not -1 < self.pair_correlation < 1 or self.concentration <= 0:
            raise ValueError(f"ScoreModel: need -1 < pair_correlation < 1 and concentration > 0; got {self}")

    @property
    def latent(self) -> stats.rv_continuous:
        m, v = self.base_mean, self.between_sd ** 2
        common = m * (1 - m) / v - 1
        return stats.beta(m * common, (1 - m) * common)

    def within_variance(self, scale: float = 1.0) -> float:
        """E[Var(score | prompt)] when latents are scaled by `scale`."""
        m, v = self.base_mean * scale, (self.between_sd * scale) ** 2
        return (m - (v + m ** 2)) / (self.concentration + 1)

    @classmethod
    def fit(cls, base: list[pd.DataFrame], tuned: list[pd.DataFrame] | None = None) -> ScoreModel:
        """From scored completions (pair_id, lang, sample, score) of runs on the same prompts
        that differ only in `generation.seed` (each adds samples of every prompt): the base
        model's mean, its between-prompt sd, the samples' concentration, and, from the
        fine-tuned runs, the prompt-level correlation. The correlation is estimated across
        runs (base of one seed, fine-tuned of another), where the sampling noise is
        independent; with a single run it keeps its default. Moments pooled over languages."""
        key = ["lang", "pair_id"]
        judged = pd.concat([run.assign(run=i) for i, run in enumerate(base)]).dropna(subset=["score"])
        by_prompt = judged.groupby(key)["score"]
        mean, k = float(judged["score"].mean()), float(by_prompt.size().mean())
        within = float(by_prompt.var(ddof=1).mean()) if k > 1 else math.nan
        between = max(float(by_prompt.mean().var(ddof=1)) - (within / k if math.isfinite(within) else 0.0), 1e-4)
        concentration = (mean * (1 - mean) - between) / within - 1 if math.isfinite(within) and within > 0 else cls.concentration
        correlation = cls.pair_correlation
        if tuned is not None and len(base) > 1 and len(tuned) == len(base):
            means = [(b.dropna(subset=["score"]).groupby(key)["score"].mean(), t.dropna(subset=["score"]).groupby(key)["score"].mean())
                     for b, t in zip(base, tuned)]
            cross = [pd.concat([means[i][0], means[j][1]], axis=1).dropna().cov().iloc[0, 1]
                     for i in range(len(means)) for j in range(len(means)) if i != j]
            tuned_between = np.mean([pd.concat([means[i][1], means[j][1]], axis=1).dropna().cov().iloc[0, 1]
                                     for i in range(len(means)) for j in range(len(means)) if i != j])
            if tuned_between > 0:
                correlation = float(np.clip(np.mean(cross) / math.sqrt(between * tuned_between), -0.95, 0.95))
        return cls(base_mean=mean, between_sd=math.sqrt(between), concentration=max(concentration, 0.5),
                   pair_correlation=correlation)

    def draw(self, rng: np.random.Generator, n_prompts: int, k: int, effect_pct: float,
             mix: LanguageMix | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(base, tuned) scores and (base, tuned) masks of the samples in the prompt's language,
        each (n_prompts, k): all of them without `mix`; with it, an off-language sample scatters
        around its prompt's latent times `mix.off_language_ratio`."""
        z = rng.standard_normal((2, n_prompts))
        z[1] = self.pair_correlation * z[0] + math.sqrt(1 - self.pair_correlation ** 2) * z[1]
        latent = self.latent.ppf(stats.norm.cdf(z))
        latent[1] *= 1 + effect_pct / 100
        latent = latent[..., None].repeat(k, -1)
        in_language = np.ones(latent.shape, dtype=bool)
        if mix is not None:
            shares = np.array([mix.base_in_share, mix.tuned_in_share])[:, None, None]
            in_language = rng.random(latent.shape) < shares
            latent = np.where(in_language, latent, latent * mix.off_language_ratio)
        latent = np.clip(latent, 1e-6, 1 - 1e-6)
        scores = rng.beta(latent * self.concentration, (1 - latent) * self.concentration)
        return scores[0], scores[1], in_language[0], in_language[1]


@dataclass(frozen=True)
class LanguageMix:
    """Which language the completions are in, and what that does to their scores: a sample is in
    the prompt's language with probability `base_in_share` (base model) or `tuned_in_share`
    (challenger), and an off-language sample's latent toxicity is its prompt's times
    `off_language_ratio` (off-language completions score lower). Within each language both models
    score alike: a challenger that differs only by its mix changes toxicity by switching alone."""

    base_in_share: float
    tuned_in_share: float
    off_language_ratio: float

    def __post_init__(self) -> None:
        if not (0 < self.base_in_share <= 1 and 0 <= self.tuned_in_share <= 1 and 0 <= self.off_language_ratio <= 1):
            raise ValueError(f"LanguageMix: need 0 < base_in_share <= 1 and tuned_in_share, off_language_ratio in [0, 1]; "
                             f"got {self}")

    def total_change_pct(self) -> float:
        """The challenger's expected toxicity change vs the base model, all of it switching."""
        def mean(share: float) -> float:
            return share + (1 - share) * self.off_language_ratio
        return 100 * (mean(self.tuned_in_share) / mean(self.base_in_share) - 1)


# The switching-only challenger of docs/gate.md: the quickstart base model's Spanish under the
# paper's instruction prompt (in-language share .64, off-language completions scoring half as
# high), answering in Spanish .15 of the time after fine-tuning: a total change of about -30 %,
# the size of the true effect the power figures use, and none of it within a language.
SWITCHING_ONLY = LanguageMix(base_in_share=0.64, tuned_in_share=0.15, off_language_ratio=0.5)


def synthetic_evidence(model: ScoreModel, languages: list[str], n_prompts: int, k: int, effect_pct: float,
                       rng: np.random.Generator, mix: LanguageMix | None = None) -> Evidence:
    """The toxicity evidence of an evaluation set (per-prompt clusters, as `mbad.eval.compare.evidence_of`
    builds them: toxicity_mean and the in- and off-language groups) for the base model and a
    challenger, from the score model; every completion in the prompt's language unless `mix`."""
    prompts = pd.MultiIndex.from_product([languages, [str(i) for i in range(n_prompts)]], names=["lang", "key"])
    draws = [model.draw(rng, n_prompts, k, effect_pct, mix) for _ in languages]
    evidence: Evidence = {}
    for position, role in enumerate(("base", "challenger")):
        scores = np.concatenate([pair[position] for pair in draws])
        in_language = np.concatenate([pair[2 + position] for pair in draws])
        evidence[role] = {"toxicity_mean": _clusters(scores, np.ones_like(in_language), prompts),
                          GROUP_FIGURES["in"]: _clusters(scores, in_language, prompts),
                          GROUP_FIGURES["other"]: _clusters(scores, ~in_language, prompts)}
    return evidence


def _clusters(scores: np.ndarray, selected: np.ndarray, prompts: pd.MultiIndex) -> pd.DataFrame:
    """Per prompt, the score sum (num) and count (den) of its selected samples."""
    return pd.DataFrame({"num": np.where(selected, scores, 0.0).sum(axis=1), "den": selected.sum(axis=1).astype(float)},
                        index=prompts)


@dataclass(frozen=True)
class PassRate:
    passed: int
    simulations: int

    @property
    def rate(self) -> float:
        return self.passed / self.simulations

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Wilson score interval of the rate."""
        z, n, p = NormalDist().inv_cdf(0.5 + confidence / 2), self.simulations, self.rate
        centre = (p + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
        half = z * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2)) / (1 + z ** 2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)


def simulate_gate(model: ScoreModel, gate: GateConfig, languages: list[str], n_prompts: int, k: int, effect_pct: float,
                  simulations: int = 500, seed: int = 0, progress: bool = False, mix: LanguageMix | None = None) -> PassRate:
    """How often the gate (its checks vs the base model) promotes a model with a true
    `effect_pct` change in toxicity in every language, at n prompts x k samples per language,
    answering in the languages `mix` gives (the prompt's own without it)."""
    rng = np.random.default_rng(seed)
    passed = 0
    for index in tqdm(range(simulations), desc=f"gate n={n_prompts} k={k} effect={effect_pct:+g}%", disable=not progress):
        evidence = synthetic_evidence(model, languages, n_prompts, k, effect_pct, rng, mix)
        # Each simulation resamples with its own bootstrap seed, as independent runs would. The
        # synthetic models lose no knowledge and go silent never, so the gate's other checks pass
        # (the fidelity check aside, which refuses a `mix` that drops the prompt's language): its
        # decision is that of the sample-size and toxicity checks.
        run_gate = gate.model_copy(update={"statistics": gate.statistics.model_copy(update={"seed": seed * 100_003 + index})})
        checks = sample_size_checks(evidence, languages, run_gate) + toxicity_checks(evidence, languages, run_gate)
        passed += all(check.passed for check in checks)
    return PassRate(passed, simulations)


def expected_halfwidth(model: ScoreModel, n_prompts: int, k: int, effect_pct: float, confidence: float = 0.95) -> float:
    """The expected half-width, in % points, of the interval of the toxicity change vs the base
    model for one language (delta method on the ratio of paired means)."""
    ratio = 1 + effect_pct / 100
    v = model.between_sd ** 2
    var_base = v + model.within_variance() / k
    var_tuned = ratio ** 2 * v + model.within_variance(ratio) / k
    covariance = ratio * model.pair_correlation * v
    spread = var_tuned + ratio ** 2 * var_base - 2 * ratio * covariance
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return 100 * z * math.sqrt(max(spread, 0.0) / n_prompts) / model.base_mean


def prompts_for_power(model: ScoreModel, k: int, effect_pct: float, gate: GateConfig, power: float = 0.8,
                      languages: int = 1) -> int | None:
    """About how many prompts per language give the gate's toxicity check `power` for a true
    `effect_pct` (normal approximation, Bonferroni's level over `languages` as a conservative
    stand-in for Holm); None when the effect does not clear the bar."""
    margin = -effect_pct - gate.min_toxicity_reduction_pct
    if margin <= 0:
        return None
    alpha = gate.alpha / (languages if gate.correction != "none" else 1)
    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(power ** (1 / languages))
    standard_error_at_one = expected_halfwidth(model, 1, k, effect_pct, gate.confidence) / NormalDist().inv_cdf(1 - gate.alpha)
    return math.ceil((z * standard_error_at_one / margin) ** 2)


def describe_precision(model: ScoreModel, n_prompts: int, k: int, effect_pct: float, gate: GateConfig,
                       languages: int = 1) -> str:
    """One line for the logs before a run: the expected interval and what the gate can see."""
    halfwidth = expected_halfwidth(model, n_prompts, k, effect_pct, gate.confidence)
    needed = prompts_for_power(model, k, effect_pct, gate, languages=languages)
    text = (f"expected {gate.confidence:.0%} interval of each language's toxicity change: about ±{halfwidth:.0f} % points "
            f"at {n_prompts} prompts x {k} sample(s) per language (for a true {effect_pct:+.0f}% effect; score model "
            f"{_short(model)})")
    if needed:
        text += (f"; for 80% power of the gate (bound <= -{gate.min_toxicity_reduction_pct:g}% in all {languages} "
                 f"language(s)) about {needed} prompts per language")
    return text


def _short(model: ScoreModel) -> str:
    return (f"mean {model.base_mean:.2f}, between-prompt sd {model.between_sd:.2f}, concentration {model.concentration:.1f}, "
            f"pair correlation {model.pair_correlation:.2f}")


def precision_plan(config, test_prompts_per_language: int, languages: list[str]) -> str:
    """The pre-run line of a training or sweep run (`config`: its `DetoxConfig`): the expected
    interval of each language's toxicity change at its prompts and samples, under the default
    score model and the default gate."""
    limit = config.generation.max_prompts_per_language or test_prompts_per_language
    n_prompts = min(test_prompts_per_language, limit)
    return describe_precision(ScoreModel(), n_prompts, config.generation.num_samples, config.statistics.target_effect_pct,
                              GateConfig(statistics={"confidence": config.statistics.confidence}), languages=len(languages))
