"""Toxicity judges: one interface, interchangeable backends (see `base.ToxicityJudge`)."""

from mbad.eval.judges.base import ToxicityJudge, make_judge, score_completions, score_frame

__all__ = ["ToxicityJudge", "make_judge", "score_completions", "score_frame"]
