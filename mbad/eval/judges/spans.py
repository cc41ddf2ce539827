"""The ensemble's span member: which words a rewrite removed.

A MultiParaDetox pair is a toxic sentence and its neutral rewrite, and the rewrite mostly keeps
the sentence and drops or replaces the insult. Aligning the two (difflib over words; over
characters in Chinese, which has no spaces) names the removed words: those are the positive
examples, every word of the neutral rewrite a negative one. A character n-gram classifier over
single words learns the insults themselves rather than the topics around them, and a sentence
scores as its most toxic word. On the judge half's grouped cross-validation it raises the
ensemble's ROC-AUC, most in de (docs/judge.md).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np
import regex
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mbad.eval.judges.classifier import plain_vocabulary

# A word: letters with their combining marks (Devanagari and Ethiopic vowel signs) and digits.
_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+")
# Languages written without spaces: aligned and scored by characters and short character runs.
UNSPACED = frozenset({"zh", "ja"})
_MAX_RUN = 3


def tokens(text: str, lang: str) -> list[str]:
    """Lower-cased words, or the characters (spaces dropped) of an unspaced language."""
    if lang in UNSPACED:
        return [char for char in text if not char.isspace()]
    return [word.lower() for word in _WORD.findall(text)]


def units(text: str, lang: str) -> list[str]:
    """What a sentence is scored on: its words of two or more characters; in an unspaced language,
    every run of one to three characters."""
    found = tokens(text, lang)
    if lang in UNSPACED:
        return ["".join(found[start:start + size]) for size in range(1, _MAX_RUN + 1) for start in range(len(found) - size + 1)]
    return [word for word in found if len(word) > 1]


def removed_words(toxic: str, neutral: str, lang: str) -> list[str]:
    """The words (or, unspaced, the character runs) of `toxic` that its rewrite `neutral` deleted or replaced."""
    source, rewrite = tokens(toxic, lang), tokens(neutral, lang)
    matcher = difflib.SequenceMatcher(a=source, b=rewrite, autojunk=False)
    removed: list[str] = []
    for operation, start, end, _, _ in matcher.get_opcodes():
        if operation == "equal":
            continue
        if lang in UNSPACED:
            removed.append("".join(source[start:end]))
        else:
            removed.extend(word for word in source[start:end] if len(word) > 1)
    return removed


def word_examples(toxic: Iterable[str], neutral: Iterable[str], langs: Iterable[str]) -> tuple[list[str], list[int]]:
    """Removed words labelled 1, the rewrites' units labelled 0."""
    words: list[str] = []
    labels: list[int] = []
    for toxic_text, neutral_text, lang in zip(toxic, neutral, langs):
        removed, kept = removed_words(toxic_text, neutral_text, lang), units(neutral_text, lang)
        words += removed + kept
        labels += [1] * len(removed) + [0] * len(kept)
    return words, labels


def train_span_model(toxic: Sequence[str], neutral: Sequence[str], langs: Sequence[str], C: float, seed: int) -> Pipeline:
    """The word classifier (character 2-5 grams within words, balanced logistic regression)."""
    words, labels = word_examples(toxic, neutral, langs)
    if len(set(labels)) < 2:
        raise ValueError("the span member needs pairs whose rewrite removed at least one word and kept one")
    model = Pipeline([
        ("ngrams", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True)),
        ("logreg", LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=seed)),
    ])
    model.fit(words, labels)
    plain_vocabulary(model.named_steps["ngrams"])
    return model


def span_logits(model: Pipeline, texts: Sequence[str], langs: Sequence[str]) -> np.ndarray:
    """Per text, the highest word logit (a text without words scores as the empty word)."""
    per_text = [units(text, lang) or [""] for text, lang in zip(texts, langs)]
    flat = [unit for text_units in per_text for unit in text_units]
    if not flat:
        return np.zeros(0)
    logits = model.decision_function(flat)
    bounds = np.cumsum([0] + [len(text_units) for text_units in per_text])
    return np.maximum.reduceat(logits, bounds[:-1])
