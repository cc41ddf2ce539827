"""The console report: the judge's quality per language beside the results."""

import math

from mbad.report import format_judge_quality


def test_the_judges_quality_is_printed_with_its_interval_and_flagged_below_the_goal():
    quality = {"auc": {"de": 0.862, "en": 0.976, "am": math.nan}, "auc_ci_low": {"de": 0.819, "en": 0.959},
               "auc_ci_high": {"de": 0.904, "en": 0.991}, "n_test_pairs": {"de": 100.0, "en": 100.0}}
    lines = format_judge_quality(quality, ["de", "en", "am", "zh"]).splitlines()
    assert lines == ["  de: 0.862 [0.819, 0.904], n=100 test pairs  below the 0.90 goal",
                     "  en: 0.976 [0.959, 0.991], n=100 test pairs",
                     "  am: not measured", "  zh: not measured"]
