"""The offline judge: character n-gram TF-IDF + logistic regression over all languages.

Character n-grams need no tokenizer per language and catch the insults and slurs that
separate MultiParaDetox's toxic sentences from their neutral rewrites in every script.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from mbad.eval.judges.base import FittedJudge, expect_fitted, package_version, state_hash
from mbad.eval.judges.registry import JudgeContext, JudgeSettings, register_judge


class ClassifierJudgeConfig(JudgeSettings):
    """`judge.classifier`: the character n-grams and the logistic regression's C."""

    ngram_min: int = 1
    ngram_max: int = 5
    max_features: int = 300_000
    C: float = 10.0
    seed: int = 42


def labelled_texts(pairs: pd.DataFrame) -> tuple[list[str], list[int], list[str]]:
    """Toxic sentences labelled 1, their neutral rewrites 0, with their languages."""
    texts = pairs["toxic"].tolist() + pairs["neutral"].tolist()
    labels = [1] * len(pairs) + [0] * len(pairs)
    return texts, labels, pairs["lang"].tolist() * 2


def train_classifier(train_pairs: pd.DataFrame, config: ClassifierJudgeConfig) -> Pipeline:
    """Toxic (1) vs neutral (0) sentences of `train_pairs` (never test pairs); one model for all languages."""
    texts, labels, _ = labelled_texts(train_pairs)
    pipeline = Pipeline(
        [
            ("ngrams", TfidfVectorizer(analyzer="char_wb", ngram_range=(config.ngram_min, config.ngram_max),
                                       max_features=config.max_features, sublinear_tf=True, lowercase=True)),
            ("logreg", LogisticRegression(C=config.C, max_iter=2000, random_state=config.seed)),
        ]
    )
    pipeline.fit(texts, labels)
    # With `max_features`, scikit-learn leaves numpy ints as the vocabulary's values. Each pickles
    # as its own object: plain ints make the stored judge smaller and much faster to save, with
    # the same scores.
    plain_vocabulary(pipeline.named_steps["ngrams"])
    return pipeline


def plain_vocabulary(vectorizer: TfidfVectorizer) -> None:
    """Replace the numpy ints of a fitted vectorizer's vocabulary with plain ints (same scores)."""
    vectorizer.vocabulary_ = {term: int(index) for term, index in vectorizer.vocabulary_.items()}


def auc_by_language(classifier: Pipeline, heldout_pairs: pd.DataFrame) -> dict[str, float]:
    """ROC-AUC of toxic vs neutral per language on held-out pairs."""
    texts, labels, langs = labelled_texts(heldout_pairs)
    scores = classifier.predict_proba(texts)[:, 1]
    frame = pd.DataFrame({"lang": langs, "label": labels, "score": scores})
    return {
        lang: float(roc_auc_score(group["label"], group["score"]))
        for lang, group in frame.groupby("lang", sort=True)
    }


class ClassifierJudge(FittedJudge):
    """The n-gram judge (backend `classifier`) around a fitted `train_classifier` pipeline and the
    languages it was trained on (none known for a bare pipeline stored before they were kept)."""

    def __init__(self, classifier: Pipeline, trained_languages: Sequence[str] = ()):
        self.classifier = classifier
        self.trained_languages = sorted(trained_languages)
        self._state_hash: str | None = None

    def __getstate__(self) -> dict:
        return {"classifier": self.classifier, "trained_languages": self.trained_languages}

    def __setstate__(self, state: dict) -> None:
        self.classifier, self._state_hash = state["classifier"], None
        self.trained_languages = state.get("trained_languages", [])

    @property
    def languages(self) -> frozenset[str]:
        """The languages it was trained on (one model for all of them)."""
        return frozenset(self.trained_languages)

    @property
    def identity(self) -> dict[str, str]:
        if self._state_hash is None:  # hashing the whole n-gram vocabulary is slow: once per judge
            self._state_hash = state_hash(self.classifier)
        return {"backend": "classifier", "scikit-learn": package_version("scikit-learn"), "state_sha256": self._state_hash}

    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]:
        """P(toxic) per text by its one n-gram model, whatever the language (`POOLED` included:
        the n-grams need no language, `langs` is not used)."""
        if not texts:
            return []
        return [float(p) for p in self.classifier.predict_proba(list(texts))[:, 1]]


def train_classifier_judge(judge_pairs: pd.DataFrame, config: ClassifierJudgeConfig) -> ClassifierJudge:
    return ClassifierJudge(train_classifier(judge_pairs, config), judge_pairs["lang"].unique().tolist())


@register_judge("classifier", settings=ClassifierJudgeConfig, trainer=train_classifier_judge)
def build_classifier_judge(config: ClassifierJudgeConfig, context: JudgeContext) -> FittedJudge:
    """The trained n-gram judge; a bare scikit-learn pipeline (an older stored `toxicity_classifier`) is wrapped."""
    fitted = context.fitted
    if not isinstance(fitted, ClassifierJudge) and hasattr(fitted, "predict_proba"):
        fitted = ClassifierJudge(fitted)
    return expect_fitted("classifier", fitted, ClassifierJudge)
