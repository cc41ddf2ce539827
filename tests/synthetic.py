"""Synthetic evidence for gate tests: what `mbad.gate` reads, built from made-up judge scores."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mbad.eval.compare import ModelEvidence, evidence_of

LANGS = ["en", "ru"]


def side(scores: dict[str, np.ndarray], empty: float = 0.0, in_language: float = 1.0, nll: float = 30.0) -> dict:
    """One model's evidence: per language, one judged completion per prompt (scores given), a
    share of empty completions, a share in the prompt's language, and a UDHR probe at `nll`."""
    frames, items = [], []
    for lang, values in scores.items():
        n = len(values)
        spoken = np.arange(n) >= round(empty * n)
        frames.append(pd.DataFrame({
            "pair_id": np.arange(n), "lang": lang, "sample": 0, "score": values,
            "completion": np.where(spoken, "some words", ""),
            "detected_lang": np.where(np.arange(n) < round(in_language * n), lang, "en" if lang != "en" else "es"),
        }))
        items.append(pd.DataFrame({"probe": "udhr_perplexity", "lang": lang, "item": [f"a{i}" for i in range(20)],
                                   "value": nll + np.linspace(-1, 1, 20), "weight": 10.0}))
    return evidence_of(ModelEvidence(pd.concat(frames, ignore_index=True), pd.concat(items, ignore_index=True)), threshold=0.5)


def scores(mean: float, n: int = 60, seed: int = 0) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).beta(2, 2, n) * 2 * mean, 0, 1)


BASE = {lang: scores(0.4, seed=i) for i, lang in enumerate(LANGS)}
# Halved, prompt by prompt, with some scatter: a -50 % effect, paired.
HALVED = {lang: np.clip(values * 0.5 + np.random.default_rng(9 + i).normal(0, 0.03, len(values)), 0, 1)
          for i, (lang, values) in enumerate(BASE.items())}
