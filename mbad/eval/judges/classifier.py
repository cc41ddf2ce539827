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

from mbad.config import ClassifierJudgeConfig


def labelled_texts(pairs: pd.DataFrame) -> tuple[list[str], list[int], list[str]]:
    """Toxic sentences labelled 1, their neutral rewrites 0, with their languages."""
    texts = pairs["toxic"].tolist() + pairs["neutral"].tolist()
    labels = [1] * len(pairs) + [0] * len(pairs)
    return texts, labels, pairs["lang"].tolist() * 2


def train_classifier(train_pairs: pd.DataFrame, config: ClassifierJudgeConfig) -> Pipeline:
    """Fit on the TRAIN split only."""
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
    # as its own object: plain ints make the stored judge 30 % smaller and 14x faster to save
    # (0.65 -> 0.05 s for the quickstart's 180k n-grams), with the same scores.
    vectorizer = pipeline.named_steps["ngrams"]
    vectorizer.vocabulary_ = {term: int(index) for term, index in vectorizer.vocabulary_.items()}
    return pipeline


def auc_by_language(classifier: Pipeline, heldout_pairs: pd.DataFrame) -> dict[str, float]:
    """ROC-AUC of toxic vs neutral per language on held-out pairs."""
    texts, labels, langs = labelled_texts(heldout_pairs)
    scores = classifier.predict_proba(texts)[:, 1]
    frame = pd.DataFrame({"lang": langs, "label": labels, "score": scores})
    return {
        lang: float(roc_auc_score(group["label"], group["score"]))
        for lang, group in frame.groupby("lang", sort=True)
    }


class ClassifierJudge:
    name = "classifier"

    def __init__(self, classifier: Pipeline):
        self.classifier = classifier

    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self.classifier.predict_proba(list(texts))[:, 1]]


if __name__ == "__main__":  # `python -m mbad.eval.judges.classifier`: held-out ROC-AUC per language
    from mbad.config import ClassifierJudgeConfig, DataConfig
    from mbad.data import load_pairs, select

    pairs = load_pairs(DataConfig())
    classifier = train_classifier(select(pairs, "train"), ClassifierJudgeConfig())
    scores = auc_by_language(classifier, select(pairs, "test"))
    print("| language | " + " | ".join(scores) + " |\n|---|" + "---|" * len(scores))
    print("| ROC-AUC | " + " | ".join(f"{value:.3f}" for value in scores.values()) + " |")
