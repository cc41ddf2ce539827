"""The toxicity change split into within-language and language-switching parts, per language."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from mbad.eval.compare import ESTIMATE_COLUMNS, FIGURES, clusters_for, paired_estimates, toxicity_clusters
from mbad.eval.decomposition import (
    SWITCHING,
    WITHIN,
    decompose,
    decompose_language,
    group_figure_clusters,
    paired_group_clusters,
)
from mbad.eval.stats import BootstrapConfig, paired_ratio_draws

CONFIG = BootstrapConfig(n_resamples=500, seed=3)


def decompose_toxicity(base: pd.DataFrame, tuned: pd.DataFrame, config: BootstrapConfig) -> pd.DataFrame:
    """The decomposition of two models' scored completions, from their clusters as a run builds them."""
    return decompose(clusters_for(base, 0.5), clusters_for(tuned, 0.5), config)


def _scored(rng: np.random.Generator, lang: str, mix: tuple[float, float, float], means: tuple[float, float],
            n_prompts: int = 100, k: int = 5) -> pd.DataFrame:
    """k completions per prompt, each in-language, off-language or empty with the `mix` shares;
    in- and off-language scores ~ Beta around `means`, empty ones 0 (as the judge scores them)."""
    groups = rng.choice(["in", "other", "empty"], size=(n_prompts, k), p=mix).ravel()
    concentration = 10.0
    rows = []
    for i, group in enumerate(groups):
        mean = means[0] if group == "in" else means[1]
        score = 0.0 if group == "empty" else rng.beta(mean * concentration, (1 - mean) * concentration)
        detected = {"in": lang, "other": rng.choice(["en", None]), "empty": None}[group]
        rows.append({"lang": lang, "pair_id": f"{lang}{i // k}", "sample": i % k, "score": score,
                     "completion": "" if group == "empty" else "some text", "detected_lang": detected})
    return pd.DataFrame(rows)


def _rows(table: pd.DataFrame, lang: str) -> tuple[pd.Series, pd.Series]:
    rows = table[table["target"] == lang].set_index("metric")
    return rows.loc[WITHIN], rows.loc[SWITCHING]


def _toxicity_mean(base: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    estimates = paired_estimates(toxicity_clusters(base, 0.5), toxicity_clusters(tuned, 0.5), FIGURES, CONFIG)
    return estimates[estimates["metric"] == "toxicity_mean"].set_index("target")


def test_the_two_parts_add_up_to_the_toxicity_mean_change_in_every_resample():
    rng = np.random.default_rng(0)
    base = pd.concat([_scored(rng, "hi", (0.6, 0.3, 0.1), (0.5, 0.3)), _scored(rng, "de", (0.9, 0.05, 0.05), (0.4, 0.2))])
    tuned = pd.concat([_scored(rng, "hi", (0.3, 0.6, 0.1), (0.4, 0.2)), _scored(rng, "de", (0.7, 0.2, 0.1), (0.3, 0.1))])
    table = decompose_toxicity(base, tuned, CONFIG)
    assert list(table.columns) == ESTIMATE_COLUMNS and not table["higher_is_better"].any()
    clusters = [toxicity_clusters(frame, 0.5) | group_figure_clusters(frame) for frame in (base, tuned)]
    for lang, prompts in paired_group_clusters(*clusters).groupby(level=0):
        parts = decompose_language(prompts, CONFIG, ("toxicity_mean", str(lang)))
        within = parts.draws["counterfactual"] - parts.draws["base"]
        switching = parts.draws["tuned"] - parts.draws["counterfactual"]
        assert np.isfinite(within).all()
        np.testing.assert_allclose(within + switching, parts.draws["tuned"] - parts.draws["base"], rtol=0, atol=1e-12)
        # The resamples are toxicity_mean's own: its draws are the decomposition's base and tuned means.
        clusters = [toxicity_clusters(frame[frame["lang"] == lang], 0.5)["toxicity_mean"] for frame in (base, tuned)]
        draws = paired_ratio_draws(clusters[0]["num"], clusters[0]["den"], clusters[1]["num"], clusters[1]["den"],
                                   config=CONFIG, labels=("toxicity_mean", str(lang)))
        np.testing.assert_allclose(parts.draws["base"], draws.base_draws, rtol=1e-12)
        np.testing.assert_allclose(parts.draws["tuned"], draws.tuned_draws, rtol=1e-12)


def test_the_parts_split_paired_estimates_toxicity_mean_diff_and_change_pct():
    rng = np.random.default_rng(1)
    base = pd.concat([_scored(rng, "hi", (0.6, 0.3, 0.1), (0.5, 0.3)), _scored(rng, "am", (0.5, 0.4, 0.1), (0.6, 0.2))])
    tuned = pd.concat([_scored(rng, "hi", (0.3, 0.6, 0.1), (0.4, 0.2)), _scored(rng, "am", (0.4, 0.4, 0.2), (0.5, 0.3))])
    table = decompose_toxicity(base, tuned, CONFIG)
    total = _toxicity_mean(base, tuned)
    for lang in ("am", "hi"):
        within, switching = _rows(table, lang)
        assert within["diff"] + switching["diff"] == pytest.approx(total.loc[lang, "diff"], abs=1e-12)
        assert within["change_pct"] + switching["change_pct"] == pytest.approx(total.loc[lang, "change_pct"], abs=1e-9)
        assert within["base"] == pytest.approx(total.loc[lang, "base"], abs=1e-12)
        assert switching["tuned"] == pytest.approx(total.loc[lang, "tuned"], abs=1e-12)
        assert within["tuned"] == switching["base"]  # the counterfactual links the two rows
        assert within["n"] == switching["n"] == total.loc[lang, "n"] == 100


def test_a_model_that_only_switches_language_changes_toxicity_by_switching_alone():
    """Same scores within each group as the base model, most answers moved off-language (which
    score lower): the within-language part is about 0 and its interval covers 0."""
    rng = np.random.default_rng(2)
    base = _scored(rng, "hi", (0.8, 0.15, 0.05), (0.5, 0.15), n_prompts=200)
    tuned = _scored(rng, "hi", (0.3, 0.65, 0.05), (0.5, 0.15), n_prompts=200)
    within, switching = _rows(decompose_toxicity(base, tuned, CONFIG), "hi")
    total = _toxicity_mean(base, tuned).loc["hi", "diff"]
    assert total < -0.1
    assert within["diff_low"] <= 0 <= within["diff_high"] and abs(within["diff"]) < 0.1 * abs(total)
    assert switching["diff"] == pytest.approx(total, rel=0.1) and switching["diff_high"] < 0


def test_a_model_that_only_detoxifies_changes_toxicity_within_language_alone():
    """The same completions in the same languages, every score halved: no switching part."""
    rng = np.random.default_rng(3)
    base = _scored(rng, "hi", (0.6, 0.3, 0.1), (0.5, 0.3))
    tuned = base.assign(score=base["score"] / 2)
    within, switching = _rows(decompose_toxicity(base, tuned, CONFIG), "hi")
    assert within["diff"] == pytest.approx(_toxicity_mean(base, tuned).loc["hi", "diff"], abs=1e-12)
    assert within["change_pct"] == pytest.approx(-50.0) and within["change_pct_high"] < 0
    assert switching["diff"] == pytest.approx(0.0, abs=1e-12)
    assert switching["diff_low"] == pytest.approx(0.0, abs=1e-12) and switching["diff_high"] == pytest.approx(0.0, abs=1e-12)


def test_a_group_the_tuned_model_never_speaks_makes_the_parts_nan_for_that_language_only(caplog):
    rng = np.random.default_rng(4)
    base = pd.concat([_scored(rng, "hi", (0.6, 0.3, 0.1), (0.5, 0.3)), _scored(rng, "de", (0.8, 0.1, 0.1), (0.4, 0.2))])
    tuned = pd.concat([_scored(rng, "hi", (0.0, 0.9, 0.1), (0.4, 0.2)), _scored(rng, "de", (0.8, 0.1, 0.1), (0.3, 0.2))])
    with caplog.at_level(logging.WARNING):
        table = decompose_toxicity(base, tuned, CONFIG)
    hi_within, hi_switching = _rows(table, "hi")
    for value in (hi_within["tuned"], hi_within["diff"], hi_within["change_pct"], hi_switching["base"],
                  hi_switching["diff"], hi_within["diff_low"], hi_switching["diff_high"]):
        assert math.isnan(value)
    assert hi_within["base"] == pytest.approx(_toxicity_mean(base, tuned).loc["hi", "base"])
    warnings = [record.getMessage() for record in caplog.records if record.name == "mbad.eval.decomposition"]
    assert len(warnings) == 1 and "for hi " in warnings[0] and 'no judged "in" completion' in warnings[0]
    de_within, de_switching = _rows(table, "de")
    assert np.isfinite(de_within[["diff", "diff_low", "diff_high"]].astype(float)).all()
    assert np.isfinite(de_switching[["diff", "diff_low", "diff_high"]].astype(float)).all()


def test_empty_completions_score_zero_even_where_the_tuned_model_gives_none():
    rng = np.random.default_rng(5)
    base = _scored(rng, "hi", (0.6, 0.2, 0.2), (0.5, 0.3))
    tuned = _scored(rng, "hi", (0.5, 0.5, 0.0), (0.4, 0.2))
    within, switching = _rows(decompose_toxicity(base, tuned, CONFIG), "hi")
    judged = {name: frame.assign(group=np.where(frame["completion"] == "", "empty",
                                                np.where(frame["detected_lang"] == "hi", "in", "other")))
              for name, frame in (("base", base), ("tuned", tuned))}
    shares = judged["base"]["group"].value_counts(normalize=True)
    tuned_means = judged["tuned"].groupby("group")["score"].mean()
    counterfactual = shares["in"] * tuned_means["in"] + shares["other"] * tuned_means["other"]
    assert within["tuned"] == pytest.approx(counterfactual, abs=1e-12)
    assert np.isfinite([within["diff_low"], within["diff_high"], switching["diff_low"], switching["diff_high"]]).all()


def test_unjudged_completions_are_left_out_of_every_part():
    rng = np.random.default_rng(6)
    base = _scored(rng, "hi", (0.6, 0.3, 0.1), (0.5, 0.3))
    tuned = _scored(rng, "hi", (0.3, 0.6, 0.1), (0.4, 0.2))
    # Unjudged extra samples of the same prompts, of every group, for both models.
    unjudged = [frame.assign(sample=frame["sample"] + 10, score=math.nan,
                             detected_lang=rng.permutation(frame["detected_lang"].to_numpy()))
                for frame in (base, tuned)]
    with_unjudged = decompose_toxicity(pd.concat([base, unjudged[0]]), pd.concat([tuned, unjudged[1]]), CONFIG)
    pd.testing.assert_frame_equal(with_unjudged, decompose_toxicity(base, tuned, CONFIG))
