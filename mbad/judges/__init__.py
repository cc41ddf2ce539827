"""Toxicity judges: one interface, interchangeable backends (see `base.ToxicityJudge`)."""

from mbad.judges.base import ToxicityJudge, make_judge, score_completions

__all__ = ["ToxicityJudge", "make_judge", "score_completions"]
