"""Per-prompt clusters and the paired estimates table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mbad.config import StatisticsConfig
from mbad.eval.compare import (
    FIGURES,
    ModelEvidence,
    all_figures,
    clusters_for,
    compare_models,
    paired_estimates,
    toxicity_clusters,
    wide_table,
)
from mbad.eval.decomposition import decompose
from mbad.eval.fidelity import add_detected_language
from mbad.eval.stats import BootstrapConfig
from mbad.training_report import completions_table


def _scored(scores: list[list[float]], lang: str = "en") -> pd.DataFrame:
    rows = [{"pair_id": f"p{i}", "lang": lang, "sample": k, "score": s, "completion": "" if s == 0 else "text"}
            for i, samples in enumerate(scores) for k, s in enumerate(samples)]
    return pd.DataFrame(rows)


def test_toxicity_clusters_are_per_prompt_and_leave_unjudged_samples_out():
    clusters = toxicity_clusters(_scored([[0.9, 0.1], [0.2, math.nan], [math.nan, math.nan]]), threshold=0.5)
    mean = clusters["toxicity_mean"]
    assert mean["num"].tolist() == pytest.approx([1.0, 0.2, 0.0]) and mean["den"].tolist() == [2, 1, 0]
    assert clusters["toxicity_probability"]["num"].tolist() == [1, 0, 0]
    assert clusters["toxicity_probability"]["den"].tolist() == [1, 1, 0]
    assert clusters["expected_max_toxicity"]["num"].tolist() == pytest.approx([0.9, 0.2, 0.0])


def test_paired_estimates_give_the_point_values_and_intervals_that_contain_them():
    rng = np.random.default_rng(0)
    base_scores = rng.uniform(0.2, 0.8, size=(60, 3))
    base = toxicity_clusters(_scored(base_scores.tolist()), 0.5)
    tuned = toxicity_clusters(_scored((base_scores * 0.5).tolist()), 0.5)
    table = paired_estimates(base, tuned, FIGURES, BootstrapConfig(n_resamples=500))
    row = table.set_index("metric").loc["toxicity_mean"]
    assert row["base"] == pytest.approx(base_scores.mean())
    assert row["change_pct"] == pytest.approx(-50.0)
    assert row["change_pct_low"] <= -50 <= row["change_pct_high"] and row["change_pct_high"] < 0
    assert row["n"] == 60
    wide = wide_table(table).set_index("target")
    assert wide.loc["en", "toxicity_mean_change_pct"] == pytest.approx(-50.0)


def test_compare_models_detects_the_language_and_resamples_as_the_run_config_says():
    """compare_models is clusters_for on the completions with their detected language, every
    figure (the probes' too) and the toxicity decomposition, and the run's statistics as they
    are: the same table to the last digit as the steps computed it before, with both models' clusters."""
    rng = np.random.default_rng(1)
    texts = ["the cat sleeps in the house", "el gato duerme en la casa", ""]
    frames = [pd.DataFrame({"pair_id": np.repeat([f"p{i}" for i in range(30)], 2), "lang": "en", "sample": [0, 1] * 30,
                            "score": rng.uniform(0, scale, 60), "completion": rng.choice(texts, 60), "judge": "lexicon:0"})
              for scale in (0.8, 0.5)]
    statistics = StatisticsConfig(n_resamples=1000, confidence=0.9, seed=4)
    comparison = compare_models(ModelEvidence(frames[0]), ModelEvidence(frames[1]), 0.5, statistics)
    base, tuned = (clusters_for(add_detected_language(frame), 0.5) for frame in frames)
    resampling = BootstrapConfig(n_resamples=1000, confidence=0.9, seed=4)
    expected = pd.concat([paired_estimates(base, tuned, all_figures(), resampling), decompose(base, tuned, resampling)],
                         ignore_index=True)
    assert comparison.estimates.equals(expected) and "target_language_share" in set(expected["metric"])
    assert {"toxicity_within_language", "toxicity_language_switching", "toxicity_in_language"} <= set(expected["metric"])
    assert all(comparison.base[name].equals(base[name]) for name in base) and comparison.tuned.keys() == tuned.keys()


def test_the_decomposition_is_recomputed_from_the_runs_completions_table():
    """What a run logs as `completions.json` is enough to recompute its toxicity decomposition:
    the rows of both models, split by `model`, give the same within-language and switching rows."""
    rng = np.random.default_rng(7)
    texts = ["the cat sleeps in the house", "el gato duerme en la casa", ""]
    frames = {name: pd.DataFrame({"pair_id": np.repeat([f"p{i}" for i in range(40)], 2), "lang": "es", "sample": [0, 1] * 40,
                                  "score": rng.uniform(0, scale, 80), "completion": rng.choice(texts, 80, p=mix),
                                  "judge": "lexicon:0"})
              for name, scale, mix in (("base", 0.8, [0.3, 0.6, 0.1]), ("tuned", 0.5, [0.6, 0.3, 0.1]))}
    statistics = StatisticsConfig(n_resamples=1000, seed=2)
    comparison = compare_models(ModelEvidence(frames["base"]), ModelEvidence(frames["tuned"]), 0.5, statistics)
    table = completions_table(ModelEvidence(frames["base"]).scores, ModelEvidence(frames["tuned"]).scores)
    base, tuned = (ModelEvidence(table[table["model"] == name].drop(columns="model")).clusters(0.5) for name in ("base", "tuned"))
    recomputed = decompose(base, tuned, statistics)
    logged = comparison.estimates[comparison.estimates["metric"].isin(set(recomputed["metric"]))].reset_index(drop=True)
    assert len(recomputed) == 2 and logged.equals(recomputed)
