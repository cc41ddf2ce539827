"""How good a toxicity judge is, per language: the instrument's own measurement.

- `auc`: ROC-AUC of toxic (1) vs neutral (0) TEST sentences, with `auc_se`, `auc_ci_low` and
  `auc_ci_high`: its bootstrap standard error and 95 % percentile interval, resampling test pairs
  (a toxic sentence and its own rewrite stay together; 2,000 resamples, seed 0).
- `brier`: mean squared error of the score as a probability on the same sentences.
- `pair_accuracy`: share of test pairs whose toxic sentence scores above its own neutral rewrite
  (ties count half).
- `style_bias`: mean score on the adapter-role train NEUTRAL sentences minus the mean on the test
  NEUTRAL sentences, with `style_bias_se` (Welch standard error). Negative means the judge finds
  the sentences the adapters learn from cleaner than unseen ones of the same kind: an adapter that
  repeats them would look detoxified for free.
- `rank_agreement`: on a run's actual completions, how well the judge's scores rank the texts the
  glin-profanity lexicon flags above those it does not (an out-of-distribution check).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from mbad.eval.judges.base import ToxicityJudge  # noqa: E402

QUALITY_FIGURES = ("auc", "auc_se", "auc_ci_low", "auc_ci_high", "brier", "pair_accuracy", "style_bias", "style_bias_se",
                   "n_test_pairs", "n_adapter_neutral")


def heldout_scores(judge: ToxicityJudge, pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per scored sentence: lang, pair_id, kind (`test_toxic`, `test_neutral`,
    `adapter_neutral`), label (1 toxic, 0 neutral) and the judge's score, from one `score` call."""
    test = pairs[pairs["split"] == "test"]
    adapter = pairs[(pairs["split"] == "train") & (pairs["role"] == "adapter")]
    if test.empty:
        raise ValueError("judge quality needs the test split: the pairs have no split == 'test' rows")
    parts = [(test, "toxic", "test_toxic", 1), (test, "neutral", "test_neutral", 0), (adapter, "neutral", "adapter_neutral", 0)]
    rows = pd.concat([pd.DataFrame({"lang": frame["lang"].to_numpy(), "pair_id": frame["pair_id"].to_numpy(), "kind": kind,
                                    "label": label, "text": frame[column].to_numpy()})
                      for frame, column, kind, label in parts], ignore_index=True)
    rows["score"] = np.asarray(judge.score(rows["text"].tolist(), rows["lang"].tolist()), dtype=float)
    return rows.drop(columns="text")


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else math.nan


def pair_bootstrap_auc(toxic: np.ndarray, neutral: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """ROC-AUC of `toxic` vs `neutral` scores (aligned: row i is one pair) in `n_resamples`
    resamples of the pairs, with replacement. One comparison matrix serves every resample: a
    resample's AUC is its pairs' weighted share of (toxic > neutral) comparisons, ties half."""
    toxic, neutral = np.asarray(toxic, dtype=float), np.asarray(neutral, dtype=float)
    if toxic.shape != neutral.shape or toxic.ndim != 1 or len(toxic) < 2:
        raise ValueError(f"pair_bootstrap_auc needs two aligned score vectors of at least 2 pairs, got {toxic.shape} and {neutral.shape}")
    wins = (toxic[:, None] > neutral[None, :]) + 0.5 * (toxic[:, None] == neutral[None, :])
    n = len(toxic)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_resamples).astype(float)
    return np.einsum("bi,ij,bj->b", counts, wins, counts) / n ** 2


def quality_from_scores(scored: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The figures of the module docstring per language, from `heldout_scores` rows
    (NaN scores, i.e. sentences the judge could not judge, are left out)."""
    quality: dict[str, dict[str, float]] = {figure: {} for figure in QUALITY_FIGURES}
    for lang, group in scored[scored["score"].notna()].groupby("lang", sort=True):
        test = group[group["kind"].isin(["test_toxic", "test_neutral"])]
        toxic = test[test["kind"] == "test_toxic"].set_index("pair_id")["score"]
        neutral = test[test["kind"] == "test_neutral"].set_index("pair_id")["score"]
        adapter = group.loc[group["kind"] == "adapter_neutral", "score"]
        both = toxic.index.intersection(neutral.index)
        margin = toxic[both] - neutral[both]
        quality["auc"][lang] = _auc(test["label"].to_numpy(), test["score"].to_numpy())
        draws = pair_bootstrap_auc(toxic[both].to_numpy(), neutral[both].to_numpy()) if len(both) > 1 else np.array([math.nan])
        quality["auc_se"][lang] = float(draws.std(ddof=1)) if len(draws) > 1 else math.nan
        quality["auc_ci_low"][lang], quality["auc_ci_high"][lang] = (float(value) for value in np.quantile(draws, [0.025, 0.975]))
        quality["brier"][lang] = float(((test["score"] - test["label"]) ** 2).mean()) if len(test) else math.nan
        quality["pair_accuracy"][lang] = float(((margin > 0) + 0.5 * (margin == 0)).mean()) if len(both) else math.nan
        enough = len(adapter) > 1 and len(neutral) > 1
        quality["style_bias"][lang] = float(adapter.mean() - neutral.mean()) if enough else math.nan
        standard_error = math.sqrt(adapter.var() / len(adapter) + neutral.var() / len(neutral)) if enough else math.nan
        quality["style_bias_se"][lang] = float(standard_error)
        quality["n_test_pairs"][lang] = float(len(both))
        quality["n_adapter_neutral"][lang] = float(len(adapter))
    return quality


def auc_with_interval(quality: dict[str, dict[str, float]], lang: str) -> str:
    """A language's held-out AUC and its 95 % interval as printed everywhere: `0.862 [0.819, 0.904]`."""
    return f"{quality['auc'][lang]:.3f} [{quality['auc_ci_low'][lang]:.3f}, {quality['auc_ci_high'][lang]:.3f}]"


def judge_quality(judge: ToxicityJudge, pairs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """`{figure: {lang: value}}` for the figures of the module docstring (auc and its interval, brier, pair_accuracy,
    style_bias, style_bias_se, n_test_pairs, n_adapter_neutral), measured on `pairs`' test split
    and adapter-role neutral sentences; the shape `mbad.report.metrics_for_mlflow` logs as
    `judge_<figure>/<lang>`."""
    return quality_from_scores(heldout_scores(judge, pairs))


def reliability_curve(scores: Sequence[float], labels: Sequence[int], bins: int = 10) -> pd.DataFrame:
    """Per equal-width score bin: mean score, share of toxic labels, and count (empty bins dropped)."""
    if bins < 1:
        raise ValueError(f"reliability_curve needs at least one bin, got {bins}")
    frame = pd.DataFrame({"score": np.asarray(scores, dtype=float), "label": np.asarray(labels, dtype=float)}).dropna()
    frame["bin"] = np.minimum((frame["score"] * bins).astype(int), bins - 1)
    curve = frame.groupby("bin").agg(mean_score=("score", "mean"), toxic_share=("label", "mean"), n=("label", "size"))
    return curve.reset_index()


def plot_reliability(curves: Mapping[str, tuple[Sequence[float], Sequence[int]]], bins: int = 10,
                     title: str = "judge reliability (test split)") -> bytes:
    """A reliability diagram as PNG bytes: for each named judge `(scores, labels)`, the share of
    toxic sentences against the mean score per bin (on the diagonal = calibrated)."""
    if not curves:
        raise ValueError("plot_reliability needs at least one (scores, labels) curve")
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for name, (scores, labels) in curves.items():
        curve = reliability_curve(scores, labels, bins)
        axis.plot(curve["mean_score"], curve["toxic_share"], marker="o", label=f"{name} (n={int(curve['n'].sum())})")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean judge score in bin", ylabel="share of toxic sentences", title=title)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def rank_agreement(judge_scores: Sequence[float], lexicon_scores: Sequence[float], langs: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per language, the ROC-AUC of the judge's scores against the lexicon's 0/1 flag: the chance
    that a text the lexicon flags scores above one it does not (ties count half; 0.5 = no
    agreement). The lexicon only flags explicit profanity and judges some languages only (NaN
    elsewhere), so this checks the judge's ranking on out-of-distribution text (a run's
    completions), it does not measure accuracy. Returns `{"lexicon_auc": ..., "lexicon_flagged":
    ..., "lexicon_judged": ...}` by language; the AUC is NaN where the lexicon flags none or all."""
    if not len(judge_scores) == len(lexicon_scores) == len(langs):
        raise ValueError(f"rank_agreement needs aligned inputs: {len(judge_scores)} judge scores, "
                         f"{len(lexicon_scores)} lexicon scores, {len(langs)} languages")
    frame = pd.DataFrame({"lang": list(langs), "judge": np.asarray(judge_scores, dtype=float),
                          "lexicon": np.asarray(lexicon_scores, dtype=float)})
    if not frame["lexicon"].dropna().isin([0.0, 1.0]).all():
        raise ValueError("rank_agreement expects lexicon scores of 0, 1 or NaN (mbad.eval.judges.lexicon.LexiconJudge)")
    agreement: dict[str, dict[str, float]] = {"lexicon_auc": {}, "lexicon_flagged": {}, "lexicon_judged": {}}
    for lang, group in frame.groupby("lang", sort=True):
        judged = group.dropna()
        agreement["lexicon_auc"][lang] = _auc(judged["lexicon"].to_numpy(), judged["judge"].to_numpy())
        agreement["lexicon_flagged"][lang] = float(judged["lexicon"].sum())
        agreement["lexicon_judged"][lang] = float(len(judged))
    return agreement
