"""The sweep's aggregates over source -> target cells carry intervals that resample prompts."""

from __future__ import annotations

import numpy as np
import pytest

from mbad.eval.compare import FIGURES, paired_estimates
from mbad.eval.stats import BootstrapConfig
from mbad.languages import LanguageRegistry
from mbad.sweep import aggregate_by_script
from tests.synthetic import scores, side

REGISTRY = LanguageRegistry.from_yaml("configs/languages.yaml")
TARGETS = ["en", "es", "ru"]
BASE_SCORES = {lang: scores(0.4, n=50, seed=i) for i, lang in enumerate(TARGETS)}


def tuned(factor: dict[str, float], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return side({lang: np.clip(values * factor[lang] + rng.normal(0, 0.05, len(values)), 0, 1)
                 for lang, values in BASE_SCORES.items()})


def test_aggregates_carry_intervals_over_prompts_and_name_their_cells():
    base = side(BASE_SCORES)
    # Training on a language halves its own toxicity and cuts the others' by a fifth.
    xft = {source: tuned({t: 0.5 if t == source else 0.8 for t in TARGETS}, seed=k) for k, source in enumerate(TARGETS)}
    table = aggregate_by_script(base, xft, REGISTRY, config=BootstrapConfig(n_resamples=2000)).set_index(["by", "group"])
    same, latin = table.loc[("script", "same language")], table.loc[("script", "same script")]
    assert same["count"] == 3 and same["prompts"] == 150
    assert same["mean"] == pytest.approx(-50, abs=5) and same["ci_low"] < same["mean"] < same["ci_high"] < 0
    assert latin["count"] == 2 and latin["mean"] == pytest.approx(-20, abs=5)  # en <-> es
    assert table.loc[("script", "different script"), "count"] == 4  # ru <-> en, es
    assert set(table.index.get_level_values("by")) == {"script", "target resource level"}


def test_a_one_cell_group_has_the_interval_of_its_cell():
    base, one = side({"en": BASE_SCORES["en"]}), tuned({"en": 0.7, "es": 1, "ru": 1}, seed=3)
    row = aggregate_by_script(base, {"en": one}, REGISTRY).set_index("group").loc["same language"]
    cell = paired_estimates(base, one, FIGURES).query("metric == 'toxicity_mean' and target == 'en'").iloc[0]
    assert row["mean"] == pytest.approx(cell["change_pct"])
    assert row["ci_high"] - row["ci_low"] == pytest.approx(cell["change_pct_high"] - cell["change_pct_low"], rel=0.15)


def test_the_within_language_aggregate_separates_detoxification_from_switching():
    """Adapters that only switch language lower the total but not the within-language change;
    adapters that detoxify in the prompt's language lower both alike."""
    base = side(BASE_SCORES, in_language=0.9)
    detox = {s: side({t: BASE_SCORES[t] * 0.6 for t in TARGETS}, in_language=0.9) for s in TARGETS}
    # Switching: the off-language completions score lower, and the adapter answers off-language more often.
    switch_base = side({t: np.where(np.arange(50) < 45, BASE_SCORES[t], 0.05) for t in TARGETS}, in_language=0.9)
    switch = {s: side({t: np.where(np.arange(50) < 15, BASE_SCORES[t], 0.05) for t in TARGETS}, in_language=0.3)
              for s in TARGETS}
    config = BootstrapConfig(n_resamples=1000)
    for xft, reference, within_expected in ((detox, base, -40), (switch, switch_base, 0)):
        total = aggregate_by_script(reference, xft, REGISTRY, config=config).set_index(["by", "group"])
        within = aggregate_by_script(reference, xft, REGISTRY, figure="toxicity_within_language", config=config)
        within = within.set_index(["by", "group"])
        same = within.loc[("script", "same language")]
        assert same["mean"] == pytest.approx(within_expected, abs=3) and same["ci_low"] <= same["mean"] <= same["ci_high"]
        assert total.loc[("script", "same language"), "mean"] < -30  # both look like detoxification in the total
    assert within.loc[("script", "same language"), "ci_low"] < 0 < within.loc[("script", "same language"), "ci_high"]
