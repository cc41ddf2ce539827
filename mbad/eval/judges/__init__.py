"""Toxicity judges: one interface, interchangeable backends (see `base.ToxicityJudge`), each with
an identity; `quality` measures a judge per language (`python -m mbad.eval.judges`).

A backend module registers itself (`registry.register_judge`) when it is imported below, which makes
it a valid `judge.backend` (docs/extending.md)."""

# One line per backend. Their order is the order of their settings in a dumped config, which
# ZenML's cache keys are made from: a new backend goes last, and this block is not sorted.
# isort: off
from mbad.eval.judges import classifier  # noqa: F401
from mbad.eval.judges import ensemble  # noqa: F401
from mbad.eval.judges import lexicon  # noqa: F401
from mbad.eval.judges import perspective  # noqa: F401
from mbad.eval.judges import hf  # noqa: F401
# isort: on
from mbad.eval.judges.base import (
    POOLED,
    FittedJudge,
    ToxicityJudge,
    identity_hash,
    judged_languages,
    make_judge,
    score_completions,
    score_frame,
    train_offline_judge,
)
from mbad.eval.judges.registry import JudgeContext, backend_settings, judge_backend, offline_backends, register_judge

__all__ = ["POOLED", "FittedJudge", "JudgeContext", "ToxicityJudge", "backend_settings", "identity_hash", "judge_backend",
           "judged_languages", "make_judge", "offline_backends", "register_judge", "score_completions", "score_frame",
           "train_offline_judge"]
