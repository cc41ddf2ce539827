"""What detoxification costs in general ability: knowledge probes behind one interface.

Every probe returns one row per item (lang, item, value, weight), the same items for the base
and the fine-tuned model, so that intervals can be paired over items. A language's figure is
a ratio of sums over its items, `transform(sum value / sum weight)`:

| probe | item | value / weight | figure | better | chance |
|---|---|---|---|---|---|
| `indomain_perplexity` | a held-out neutral ParaDetox test sentence | summed token NLL / tokens | exp: perplexity | lower | - |
| `udhr_perplexity` | an article of the UDHR (general, out-of-domain text) | summed token NLL / tokens | exp: perplexity | lower | - |
| `capitals_accuracy` | a country -> capital question, 4 options, PMI-scored | 1 if right else 0 / 1 | mean: accuracy | higher | 0.25 |

`indomain_perplexity` is the training domain: it falls after fine-tuning on ParaDetox text in
any language (domain adaptation), so it cannot show a cost; the other two can. Fluency of
completions (`fluency.completion_nll`) is scored with the same value/weight convention and
aggregated like a perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from mbad.config import KnowledgeConfig
from mbad.eval.probes.capitals import capitals_accuracy
from mbad.eval.probes.fluency import completion_nll
from mbad.eval.probes.indomain import indomain_perplexity
from mbad.eval.probes.scoring import continuation_nll, mean_token_nll, text_nll
from mbad.eval.probes.udhr import udhr_perplexity
from mbad.lm_head import split_lm_head
from mbad.models import LoadedModel

ProbeFunction = Callable[[LoadedModel, pd.DataFrame, KnowledgeConfig], pd.DataFrame]
PROBE_COLUMNS = ["probe", "lang", "item", "value", "weight"]


@dataclass(frozen=True)
class Probe:
    """A registered probe and how its items add up to a language's figure.

    `transform` names the function of sum(value) / sum(weight) that gives the figure (the names of
    `mbad.eval.stats.TRANSFORMS`): "exp" for a perplexity, "mean" for an accuracy."""

    name: str
    kind: Literal["perplexity", "accuracy"]
    run: ProbeFunction
    description: str
    chance: float | None = None

    @property
    def transform(self) -> Literal["exp", "mean"]:
        return "exp" if self.kind == "perplexity" else "mean"

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "accuracy"

    def aggregate(self, values: pd.Series, weights: pd.Series) -> float:
        """The figure of one language's items: exp(sum value / sum weight) or their weighted mean."""
        total = float(weights.sum())
        if total <= 0:
            return math.nan  # no scored tokens / items: not measured, never 0
        ratio = float(values.sum()) / total
        return math.exp(ratio) if self.transform == "exp" else ratio


PROBES: dict[str, Probe] = {
    probe.name: probe
    for probe in (
        Probe("indomain_perplexity", "perplexity", indomain_perplexity,
              "perplexity on held-out neutral ParaDetox test sentences (the training domain)"),
        Probe("udhr_perplexity", "perplexity", udhr_perplexity,
              "perplexity on the 30 articles of the Universal Declaration of Human Rights (drift on general text)"),
        Probe("capitals_accuracy", "accuracy", capitals_accuracy,
              "country -> capital multiple choice (4 options, PMI), CLDR names in each language", chance=0.25),
    )
}


def run_probes(loaded: LoadedModel, test_pairs: pd.DataFrame, config: KnowledgeConfig) -> pd.DataFrame:
    """Per-item results of every configured probe on the languages of `test_pairs`:
    one row per (probe, lang, item) with its value and weight (see the table above)."""
    unknown = sorted(set(config.probes) - set(PROBES))
    if unknown:
        raise ValueError(f"unknown knowledge probe(s) {unknown}; known: {sorted(PROBES)}")
    if test_pairs.empty:
        raise ValueError("no test pairs to run the knowledge probes on: check target_languages and the data")
    if not config.probes:
        return pd.DataFrame(columns=PROBE_COLUMNS)
    frames = [PROBES[name].run(loaded, test_pairs, config).assign(probe=name) for name in config.probes]
    return pd.concat(frames, ignore_index=True)[PROBE_COLUMNS]


def summarise_probes(items: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{probe: {language: figure}} from `run_probes`' per-item table (each probe's `aggregate`)."""
    missing = set(PROBE_COLUMNS) - set(items.columns)
    if missing:
        raise ValueError(f"not a per-item probe table: missing columns {sorted(missing)}")
    unknown = sorted(set(items["probe"]) - set(PROBES))
    if unknown:
        raise ValueError(f"unknown knowledge probe(s) {unknown} in the table; known: {sorted(PROBES)}")
    summary: dict[str, dict[str, float]] = {}
    for (name, lang), group in items.sort_values("lang", kind="stable").groupby(["probe", "lang"], sort=False):
        summary.setdefault(str(name), {})[str(lang)] = PROBES[str(name)].aggregate(group["value"], group["weight"])
    return summary


__all__ = [
    "PROBES", "PROBE_COLUMNS", "Probe", "completion_nll", "continuation_nll", "mean_token_nll", "run_probes",
    "split_lm_head", "summarise_probes", "text_nll",
]
