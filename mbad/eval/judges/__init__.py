"""Toxicity judges: one interface, interchangeable backends (see `base.ToxicityJudge`), each with
an identity; `quality` measures a judge per language (`python -m mbad.eval.judges`)."""

from mbad.eval.judges.base import (
    FittedJudge,
    ToxicityJudge,
    identity_hash,
    make_judge,
    score_completions,
    score_frame,
    train_offline_judge,
)

__all__ = ["FittedJudge", "ToxicityJudge", "identity_hash", "make_judge", "score_completions", "score_frame", "train_offline_judge"]
