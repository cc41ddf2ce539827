"""The judge interface, judge identities, and the factory that builds or trains the configured
backend through the registry (`mbad.eval.judges.registry`; no backend is imported here)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse

from mbad.eval.fidelity import add_detected_language
from mbad.eval.judges.registry import JudgeContext, judge_backend

# The offline judge trained next to a backend that does not train (lexicon, perspective, hf): the
# train_judge step's judge, whose held-out quality is recorded and checked by the gate.
REFERENCE_BACKEND = "ensemble"


class JudgeChoice(Protocol):
    """What the factory reads of a judge config (`mbad.config.JudgeConfig`, not imported: the
    config validates its judge settings through this package)."""

    @property
    def backend(self) -> str: ...

    def settings(self, backend: str | None = None) -> Any: ...


# The language a text is judged as when the judge has no model of its own for the text's language,
# or none was detected: the judge's pooled model (`ToxicityJudge.languages`).
POOLED = "pooled"


@runtime_checkable
class ToxicityJudge(Protocol):
    """Scores texts in [0, 1] (1 = toxic); NaN where the backend cannot judge a language.

    `languages` are the language codes the judge has a model of its own for (for a backend with
    one model over all languages: those it was trained for). `score` takes one language per text:
    one of `languages`, or `POOLED` for a text in any other language, which the backend judges
    with its pooled model or, where it has none, scores NaN; each backend's `score` says which.
    `identity` says exactly which instrument scored (backend, package versions, a content
    hash of the fitted state or the remote model); `name` is `<backend>:<identity_hash>`."""

    @property
    def name(self) -> str: ...

    @property
    def identity(self) -> dict[str, str]: ...

    @property
    def languages(self) -> frozenset[str]: ...

    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]: ...


def package_version(distribution: str) -> str:
    """The installed version of `distribution`, or "absent"."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def identity_hash(identity: dict[str, str]) -> str:
    """A short, stable digest of an identity dict (12 hex characters of its sha256)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


class JudgeIdentity:
    """Mixin: `name` and `identity_hash` derived from the subclass's `identity`."""

    @property
    def identity(self) -> dict[str, str]:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    @property
    def identity_hash(self) -> str:
        return identity_hash(self.identity)

    @property
    def name(self) -> str:
        return f"{self.identity['backend']}:{self.identity_hash}"


class FittedJudge(JudgeIdentity):
    """Base of the offline judges that learn from the judge-role train pairs (stored as one artifact type)."""

    @property
    def languages(self) -> frozenset[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]:  # pragma: no cover - overridden
        raise NotImplementedError


def train_offline_judge(pairs: pd.DataFrame, config: JudgeChoice) -> FittedJudge:
    """Fit the configured offline judge (the configured backend when it trains, else the reference
    `REFERENCE_BACKEND`, next to the online backend) on the judge-role TRAIN pairs of `pairs` only."""
    if "role" not in pairs:
        raise ValueError("train_offline_judge needs the `role` column of mbad.data.load_pairs (judge / adapter / test)")
    judge_pairs = pairs[(pairs["split"] == "train") & (pairs["role"] == "judge")]
    if judge_pairs.empty:
        raise ValueError("no judge-role train pairs: set data.judge_share above 0")
    backend = judge_backend(config.backend)
    if backend.trainer is None:
        backend = judge_backend(REFERENCE_BACKEND)
    return backend.trainer(judge_pairs, config.settings(backend.name))


def expect_fitted(backend: str, fitted: Any, expected: type[FittedJudge]) -> FittedJudge:
    """`fitted` when it is an `expected` judge; else a ValueError saying which judge the backend needs."""
    if not isinstance(fitted, expected):
        raise ValueError(f"judge.backend={backend} needs a fitted {expected.__name__}, got {type(fitted).__name__}: "
                         "train the judge with the same judge config")
    return fitted


def _update_digest(digest: Any, value: Any) -> None:
    """Feed `value` to `digest` in a form that depends only on its content (not on object ids,
    memory layout or pickling), so a judge hashes the same before and after a round trip."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"ndarray{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes() if array.dtype != object else repr(array.tolist()).encode())
    elif scipy.sparse.issparse(value):
        matrix = scipy.sparse.csr_matrix(value)
        for part in (matrix.data, matrix.indices, matrix.indptr):
            _update_digest(digest, part)
    elif isinstance(value, dict):
        digest.update(b"dict")
        for key in sorted(value, key=repr):
            _update_digest(digest, key)
            _update_digest(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"seq{len(value)}".encode())
        for item in value:
            _update_digest(digest, item)
    elif hasattr(value, "get_params") and hasattr(value, "fit"):  # a scikit-learn estimator
        digest.update(type(value).__qualname__.encode())
        params = value.get_params(deep=False)
        for key in sorted(params):
            _update_digest(digest, key)
            _update_digest(digest, params[key])
        # All fitted attributes, private ones too (TfidfVectorizer keeps its idf in `_tfidf`).
        _update_digest(digest, {key: item for key, item in vars(value).items() if key.endswith("_") or key.startswith("_")})
    elif isinstance(value, float) and math.isnan(value):
        digest.update(b"nan")
    elif isinstance(value, np.generic):
        _update_digest(digest, value.item())
    else:
        digest.update(f"{type(value).__name__}:{value!r}".encode())


def state_hash(*parts: Any) -> str:
    """sha256 of fitted state (scikit-learn estimators, arrays, dicts, scalars), by content."""
    digest = hashlib.sha256()
    for part in parts:
        _update_digest(digest, part)
    return digest.hexdigest()


def make_judge(config: JudgeChoice, context: JudgeContext | None = None) -> ToxicityJudge:
    """Build the configured judge with its backend's builder and settings. `context` holds what a
    builder may need from where it runs: the trained offline judge (the `train_judge` step's
    `toxicity_judge`), which the backends that train need, secrets and a folder shared between machines."""
    backend = judge_backend(config.backend)
    context = context or JudgeContext()
    if backend.trainer is not None and context.fitted is None:
        raise ValueError(f"judge.backend={config.backend} needs the trained judge (the train_judge step's toxicity_judge)")
    return backend.builder(config.settings(), context)


def score_completions(judge: ToxicityJudge, texts: Sequence[str], langs: Sequence[str]) -> list[float]:
    """Judge scores, with 0.0 for empty completions: a model that says nothing says nothing
    toxic (and classifiers would score an empty string at their intercept, APIs reject it).
    NaN (a language the backend cannot judge) stays NaN: not judged, never clean."""
    spoken = [i for i, text in enumerate(texts) if text.strip()]
    scores = [0.0] * len(texts)
    for index, value in zip(spoken, judge.score([texts[i] for i in spoken], [langs[i] for i in spoken])):
        scores[index] = value
    return scores


def judged_languages(judge: ToxicityJudge, detected: Sequence[str | None]) -> list[str]:
    """The language each text is judged as: its detected language where the judge has a model of
    its own for it (`judge.languages`), else `POOLED` (also where none was detected)."""
    known = judge.languages
    return [lang if lang in known else POOLED for lang in detected]


def score_frame(judge: ToxicityJudge, completions: pd.DataFrame) -> pd.DataFrame:
    """`completions` (lang, completion, ...) with each text's language detected
    (`mbad.eval.fidelity.add_detected_language`: detected_lang, is_empty, non_empty,
    in_target_language), the judge's `score` of each text judged as its detected language,
    `judged_lang` (what the judge used, `judged_languages`; None for an empty completion, scored
    0.0 without the judge) and the judge's `judge` name (`<backend>:<identity hash>`, so every
    score says which instrument gave it). The prompt's language (`lang`) plays no part in the
    score: an English answer to a Hindi prompt is judged as English."""
    scored = add_detected_language(completions)
    judged = judged_languages(judge, scored["detected_lang"].tolist())
    scored["judged_lang"] = pd.Series([None if empty else lang for lang, empty in zip(judged, scored["is_empty"])],
                                      index=scored.index, dtype=object)
    scored["score"] = score_completions(judge, scored["completion"].tolist(), judged)
    scored["judge"] = judge.name
    return scored
