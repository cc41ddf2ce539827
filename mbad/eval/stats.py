"""Intervals for every figure: a paired bootstrap that resamples prompts (or probe items).

Every per-language figure mbad reports is a ratio of sums over clusters: a mean toxicity is
(sum of scores) / (number of judged completions), a perplexity is exp(summed NLL / tokens), an
accuracy is (correct) / (items). A cluster is one prompt with all its k samples (or one probe
item). The base and the fine-tuned model are measured on the same clusters, so one resample
of clusters is applied to both: the interval of their difference is paired, and much narrower
than two independent intervals would suggest when the two models agree on which prompts are
hard. Intervals are percentile intervals over `n_resamples` resamples, seeded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

# The tidy estimates table: one row per figure and target language (`PairedEstimate.as_dict`).
ESTIMATE_COLUMNS = [
    "target", "metric", "n", "higher_is_better",
    "base", "base_low", "base_high", "tuned", "tuned_low", "tuned_high",
    "diff", "diff_low", "diff_high", "change_pct", "change_pct_low", "change_pct_high",
]
# A prompt cluster's key: its language and pair id.
PROMPT = ["lang", "pair_id"]


def identity(values: np.ndarray) -> np.ndarray:
    return values


TRANSFORMS: dict[str, Transform] = {"mean": identity, "exp": np.exp}


class Resampling(Protocol):
    """How a bootstrap resamples: how many resamples, the interval's confidence and the seed.
    A run's `mbad.config.StatisticsConfig` is one, so is `BootstrapConfig`."""

    @property
    def n_resamples(self) -> int: ...

    @property
    def confidence(self) -> float: ...

    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class BootstrapConfig:
    """Resampling settings without a run config (the defaults of `StatisticsConfig`)."""

    n_resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class PairedEstimate:
    """Base, fine-tuned, their difference and the % change, each with its interval; n clusters."""

    base: Interval
    tuned: Interval
    diff: Interval
    change_pct: Interval
    n: int

    def as_dict(self) -> dict[str, float]:
        flat: dict[str, float] = {"n": float(self.n)}
        for part in ("base", "tuned", "diff", "change_pct"):
            for key, value in asdict(getattr(self, part)).items():
                flat[f"{part}_{key}" if key != "value" else part] = value
        return flat


def stream_seed(seed: int, *labels: str) -> int:
    """A seed for one figure's resampling, from the run's seed and the figure's labels
    (so that adding a language or a metric does not change another's interval)."""
    digest = hashlib.sha256("\0".join([str(seed), *labels]).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def resample_indices(n_clusters: int, config: Resampling, *labels: str) -> np.ndarray:
    """(n_resamples, n_clusters) cluster indices drawn with replacement."""
    rng = np.random.default_rng(stream_seed(config.seed, *labels))
    return rng.integers(0, n_clusters, size=(config.n_resamples, n_clusters))


def _ratio(numerators: np.ndarray, denominators: np.ndarray, transform: Transform) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return transform(numerators / denominators)


def percentile_interval(point: float, draws: np.ndarray, confidence: float) -> Interval:
    """The point value with the percentile interval of its draws (NaN when too few are finite)."""
    finite = draws[np.isfinite(draws)]
    if not math.isfinite(point) or len(finite) < 0.9 * len(draws):
        return Interval(point, math.nan, math.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high))


@dataclass(frozen=True)
class PairedDraws:
    """Point values and bootstrap draws of one paired figure (base, fine-tuned), n clusters."""

    base: float
    tuned: float
    base_draws: np.ndarray
    tuned_draws: np.ndarray
    n: int

    @property
    def diff(self) -> float:
        return self.tuned - self.base

    @property
    def diff_draws(self) -> np.ndarray:
        return self.tuned_draws - self.base_draws

    @property
    def change_pct(self) -> float:
        return (self.tuned - self.base) / self.base * 100 if self.base else math.nan

    @property
    def change_pct_draws(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.tuned_draws - self.base_draws) / self.base_draws * 100


def paired_ratio_draws(
    base_num: np.ndarray, base_den: np.ndarray, tuned_num: np.ndarray, tuned_den: np.ndarray,
    transform: str = "mean", config: Resampling = BootstrapConfig(), labels: tuple[str, ...] = (),
) -> PairedDraws:
    """Resample clusters once for both models: transform(sum num / sum den) of base and
    fine-tuned per resample, cluster i of each array being the same prompt (or item)."""
    arrays = [np.asarray(a, dtype=float) for a in (base_num, base_den, tuned_num, tuned_den)]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("paired bootstrap: base and fine-tuned need one value per shared cluster")
    if n == 0:
        empty = np.full(config.n_resamples, math.nan)
        return PairedDraws(math.nan, math.nan, empty, empty, 0)
    f = TRANSFORMS[transform]
    index = resample_indices(n, config, *labels)
    return PairedDraws(
        base=float(_ratio(arrays[0].sum(), arrays[1].sum(), f)),
        tuned=float(_ratio(arrays[2].sum(), arrays[3].sum(), f)),
        base_draws=_ratio(arrays[0][index].sum(1), arrays[1][index].sum(1), f),
        tuned_draws=_ratio(arrays[2][index].sum(1), arrays[3][index].sum(1), f),
        n=n,
    )


def paired_ratio_bootstrap(
    base_num: np.ndarray, base_den: np.ndarray, tuned_num: np.ndarray, tuned_den: np.ndarray,
    transform: str = "mean", config: Resampling = BootstrapConfig(), labels: tuple[str, ...] = (),
) -> PairedEstimate:
    """Paired bootstrap of transform(sum num / sum den) for base and fine-tuned: each value,
    their difference and the % change with its percentile interval."""
    draws = paired_ratio_draws(base_num, base_den, tuned_num, tuned_den, transform, config, labels)
    level = config.confidence
    return PairedEstimate(
        base=percentile_interval(draws.base, draws.base_draws, level),
        tuned=percentile_interval(draws.tuned, draws.tuned_draws, level),
        diff=percentile_interval(draws.diff, draws.diff_draws, level),
        change_pct=percentile_interval(draws.change_pct, draws.change_pct_draws, level),
        n=draws.n,
    )
