import math

import pandas as pd
import pytest

from mbad.eval.metrics import percent_change, toxicity_by_language


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


def test_percent_change_of_zero_is_undefined():
    assert percent_change(0.5, 0.25) == pytest.approx(-50.0)
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
