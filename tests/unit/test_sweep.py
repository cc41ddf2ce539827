"""The sweep's aggregates over source -> target cells carry intervals that resample prompts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mbad.eval.compare import FIGURES, paired_estimates
from mbad.eval.decomposition import SWITCHING, WITHIN, decompose
from mbad.eval.stats import BootstrapConfig
from mbad.languages import LanguageRegistry
from mbad.sweep import Setting, aggregate_by_script, compare_methods
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



TWO_METHODS = [Setting("xft_en", "xft", "en", 1.0, ("en",), "sft"), Setting("dpo_xft_en", "xft", "en", 1.0, ("en",), "dpo")]
N_PROMPTS = 200
BASE_IN_LANGUAGE = {lang: scores(0.4, n=N_PROMPTS, seed=i) for i, lang in enumerate(["en", "ru"])}
# An adapter's in-language scores: the base model's cut by a fifth, prompt by prompt, with scatter.
DETOXIFIED = {lang: np.clip(values * 0.8 + np.random.default_rng(20 + i).normal(0, 0.05, N_PROMPTS), 0, 1)
              for i, (lang, values) in enumerate(BASE_IN_LANGUAGE.items())}


def speaking(in_language: dict[str, float], in_language_scores: dict[str, np.ndarray]) -> dict:
    """A model answering the first `in_language` share of each target's prompts in the prompt's
    language with `in_language_scores` and the rest in another language, which scores 0.05."""
    models = [side({lang: np.where(np.arange(N_PROMPTS) < round(share * N_PROMPTS), in_language_scores[lang], 0.05)},
                   in_language=share) for lang, share in in_language.items()]
    return {figure: pd.concat([model[figure] for model in models]) for figure in models[0]}


BASE = speaking({"en": 0.9, "ru": 0.9}, BASE_IN_LANGUAGE)
SFT = speaking({"en": 0.9, "ru": 0.9}, DETOXIFIED)


def methods(dpo: dict) -> pd.DataFrame:
    table = compare_methods(BASE, {"xft_en": SFT, "dpo_xft_en": dpo}, TWO_METHODS, BootstrapConfig(n_resamples=1000))
    assert (table[["mode", "source", "fraction"]] == ["xft", "en", 1.0]).all().all()
    return table.set_index(["target", "metric"])


def test_a_dpo_that_only_switches_language_more_is_no_less_toxic_within_language():
    """DPO answers as SFT does in the prompt's language, only less often: its mean toxicity is
    lower, its within-language change the same, and the switching part carries the difference."""
    table = methods(speaking({"en": 0.4, "ru": 0.4}, DETOXIFIED))
    for target in ("en", "ru"):
        total, within = table.loc[(target, "toxicity_mean")], table.loc[(target, f"{WITHIN}_change_pct")]
        switching = table.loc[(target, f"{SWITCHING}_change_pct")]
        assert total["ci_high"] < 0 and total["diff"] < -0.1
        assert within["sft"] == pytest.approx(-20, abs=4) and within["diff"] == pytest.approx(within["dpo"] - within["sft"])
        # What is left within language is the noise of DPO answering fewer prompts in their language.
        assert within["ci_low"] < 0 < within["ci_high"] and abs(within["diff"]) < 0.2 * abs(switching["diff"])
        assert switching["sft"] == pytest.approx(0, abs=1e-9) and switching["diff"] < -25 and switching["ci_high"] < 0
        assert within["n"] == switching["n"] == N_PROMPTS


def test_the_columns_are_each_methods_own_change_and_a_real_difference_excludes_zero():
    """DPO's in-language completions a tenth less toxic than SFT's, the same language mix."""
    table = methods(speaking({"en": 0.9, "ru": 0.9}, {lang: values * 0.9 for lang, values in DETOXIFIED.items()}))
    config = BootstrapConfig(n_resamples=1000)
    sft_rows = decompose(BASE, SFT, config).set_index(["target", "metric"])
    for target in ("en", "ru"):
        within = table.loc[(target, f"{WITHIN}_change_pct")]
        # Each method's column is its setting's own within-language change vs the base model.
        assert within["sft"] == pytest.approx(sft_rows.loc[(target, WITHIN), "change_pct"])
        assert within["diff"] == pytest.approx(within["dpo"] - within["sft"]) and within["diff"] < -5
        assert within["ci_low"] < within["diff"] < within["ci_high"] < 0
        # One resample of the prompts for both methods: DPO's cut, the same on every prompt, leaves
        # the difference almost no noise (two separate resamples would leave points of it).
        assert within["ci_high"] - within["ci_low"] < 1


def test_a_method_that_never_answers_in_the_prompts_language_has_no_within_language_difference():
    table = methods(speaking({"en": 0.0, "ru": 0.9}, DETOXIFIED))
    for part in (WITHIN, SWITCHING):
        en, ru = table.loc[("en", f"{part}_change_pct")], table.loc[("ru", f"{part}_change_pct")]
        assert np.isfinite(en["sft"]) and all(math.isnan(en[column]) for column in ("dpo", "diff", "ci_low", "ci_high"))
        assert np.isfinite(ru[["sft", "dpo", "diff", "ci_low", "ci_high"]].astype(float)).all()
    assert np.isfinite(table.loc[("en", "toxicity_mean"), "diff"])
