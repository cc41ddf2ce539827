"""The judge interface and the factory that picks a backend from the config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from mbad.config import JudgeConfig


@runtime_checkable
class ToxicityJudge(Protocol):
    """Scores texts in [0, 1] (1 = toxic); NaN where the backend cannot judge a language."""

    name: str

    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]: ...


def make_judge(config: JudgeConfig, classifier: Any = None, api_key: str | None = None) -> ToxicityJudge:
    """Build the configured judge. `classifier` is the fitted offline model for `classifier`."""
    if config.backend == "classifier":
        from mbad.eval.judges.classifier import ClassifierJudge

        if classifier is None:
            raise ValueError("judge.backend=classifier needs the trained classifier (the train_judge step)")
        return ClassifierJudge(classifier)
    if config.backend == "lexicon":
        from mbad.eval.judges.lexicon import LexiconJudge

        return LexiconJudge()
    if config.backend == "perspective":
        from mbad.eval.judges.perspective import PerspectiveJudge

        if not api_key:
            raise ValueError(
                "judge.backend=perspective needs an API key: create the ZenML secret "
                f"'{config.perspective.secret_name}' with key api_key, or set PERSPECTIVE_API_KEY"
            )
        return PerspectiveJudge(api_key, config.perspective)
    if config.backend == "hf":
        from mbad.eval.judges.hf import HFJudge

        return HFJudge(config.hf)
    raise ValueError(f"unknown judge backend {config.backend!r}")


def score_completions(judge: ToxicityJudge, texts: Sequence[str], langs: Sequence[str]) -> list[float]:
    """Judge scores, with 0.0 for empty completions: a model that says nothing says nothing
    toxic (and classifiers would score an empty string at their intercept, APIs reject it)."""
    spoken = [i for i, text in enumerate(texts) if text.strip()]
    scores = [0.0] * len(texts)
    for index, value in zip(spoken, judge.score([texts[i] for i in spoken], [langs[i] for i in spoken])):
        scores[index] = value
    return scores


def score_frame(judge: ToxicityJudge, completions: pd.DataFrame) -> pd.DataFrame:
    """`completions` (lang, completion, ...) with the judge's `score` and name added."""
    scored = completions.copy()
    scored["score"] = score_completions(judge, scored["completion"].tolist(), scored["lang"].tolist())
    scored["judge"] = judge.name
    return scored
