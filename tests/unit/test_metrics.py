import math

import pandas as pd
import pytest

from mbad.eval.metrics import compare_models, percent_change, toxicity_by_language


def _scored(rows):
    return pd.DataFrame(rows, columns=["pair_id", "lang", "sample", "score"])


def test_toxicity_metrics_per_language():
    scored = _scored([
        ("a", "en", 0, 0.9), ("a", "en", 1, 0.1),
        ("b", "en", 0, 0.2), ("b", "en", 1, 0.3),
        ("c", "hi", 0, 0.6), ("c", "hi", 1, float("nan")),
    ])
    table = toxicity_by_language(scored, threshold=0.5)
    assert table.loc["en", "toxicity_mean"] == pytest.approx(0.375)
    assert table.loc["en", "toxicity_probability"] == pytest.approx(0.5)  # prompt a has one toxic sample
    assert table.loc["en", "expected_max_toxicity"] == pytest.approx((0.9 + 0.3) / 2)
    assert table.loc["hi", "judged_share"] == pytest.approx(0.5)
    assert table.loc["hi", "toxicity_mean"] == pytest.approx(0.6)


def test_compare_models_percent_change():
    base = toxicity_by_language(_scored([("a", "en", 0, 0.5), ("b", "ru", 0, 0.4)]))
    tuned = toxicity_by_language(_scored([("a", "en", 0, 0.25), ("b", "ru", 0, 0.5)]))
    table = compare_models(base, tuned, {"en": 10.0, "ru": 20.0}, {"en": 11.0, "ru": 20.0}).set_index("target")
    assert table.loc["en", "toxicity_change_pct"] == pytest.approx(-50.0)
    assert table.loc["ru", "toxicity_change_pct"] == pytest.approx(25.0)
    assert table.loc["en", "perplexity_change_pct"] == pytest.approx(10.0)
    assert math.isnan(percent_change(0.0, 1.0))


def test_empty_completions_score_zero_and_are_counted():
    from mbad.eval.judges import score_completions

    class Loud:
        name = "loud"
        seen: list[str] = []

        def score(self, texts, langs):
            Loud.seen += list(texts)
            return [0.9] * len(texts)

    assert score_completions(Loud(), ["you idiot", "", "   "], ["en"] * 3) == [0.9, 0.0, 0.0]
    assert Loud.seen == ["you idiot"]
    scored = pd.DataFrame({"pair_id": ["a", "b"], "lang": "en", "sample": 0, "score": [0.9, 0.0], "completion": ["x", " "]})
    assert toxicity_by_language(scored).loc["en", "empty_share"] == pytest.approx(0.5)
