"""The paired bootstrap agrees with the analytic interval where one exists, and pairs."""

from __future__ import annotations

import numpy as np
import pytest

from mbad.eval.stats import BootstrapConfig, paired_ratio_bootstrap


def test_bootstrap_interval_of_a_paired_mean_difference_matches_the_normal_interval():
    rng = np.random.default_rng(0)
    base = rng.beta(2, 3, size=300)
    tuned = np.clip(base - 0.05 + rng.normal(0, 0.1, size=300), 0, 1)
    ones = np.ones(300)
    estimate = paired_ratio_bootstrap(base, ones, tuned, ones, config=BootstrapConfig(n_resamples=4000, seed=1))
    diff = tuned - base
    half_width = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert estimate.diff.value == pytest.approx(diff.mean())
    assert estimate.diff.low == pytest.approx(diff.mean() - half_width, abs=0.15 * half_width)
    assert estimate.diff.high == pytest.approx(diff.mean() + half_width, abs=0.15 * half_width)
    # Pairing: the interval of the difference is far narrower than the two models' own spread implies.
    unpaired = 1.96 * np.sqrt(base.var(ddof=1) / 300 + tuned.var(ddof=1) / 300)
    assert estimate.diff.high - estimate.diff.low < 0.5 * 2 * unpaired
    assert estimate.n == 300


def test_ratio_of_sums_and_exp_transform_give_a_perplexity_and_its_change():
    nll = np.array([10.0, 20.0, 30.0, 40.0])
    tokens = np.array([5.0, 10.0, 10.0, 20.0])
    estimate = paired_ratio_bootstrap(nll, tokens, nll * 1.1, tokens, transform="exp")
    assert estimate.base.value == pytest.approx(np.exp(100 / 45))
    assert estimate.change_pct.value == pytest.approx((np.exp(110 / 45) / np.exp(100 / 45) - 1) * 100)
    assert estimate.base.low <= estimate.base.value <= estimate.base.high


def test_intervals_are_seeded_and_cover_the_truth_at_about_the_stated_rate():
    config = BootstrapConfig(n_resamples=1000, seed=3)
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(200):
        base = rng.binomial(1, 0.4, size=80).astype(float)
        tuned = rng.binomial(1, 0.3, size=80).astype(float)
        estimate = paired_ratio_bootstrap(base, np.ones(80), tuned, np.ones(80), config=config)
        covered += estimate.diff.low <= -0.1 <= estimate.diff.high
    assert 0.88 <= covered / 200 <= 0.99
    again = paired_ratio_bootstrap(base, np.ones(80), tuned, np.ones(80), config=config)
    assert again == estimate


def test_misaligned_inputs_are_refused():
    with pytest.raises(ValueError, match="one value per shared cluster"):
        paired_ratio_bootstrap(np.ones(3), np.ones(3), np.ones(2), np.ones(2))
