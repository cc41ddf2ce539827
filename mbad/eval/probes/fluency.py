"""Fluency of completions: their perplexity under ONE fixed scorer, the base model without adapter.

The paper's fluency measure (with a multilingual scorer): base and fine-tuned completions are
scored by the same model, so a fine-tuned model cannot look fluent by scoring its own text.
Each completion's tokens are scored given the prompt it was generated from; the prompt itself
is never counted. Aggregate per language: exp(sum value / sum weight).
"""

from __future__ import annotations

import pandas as pd

from mbad.eval.probes.scoring import continuation_nll
from mbad.models import LoadedModel

FLUENCY_COLUMNS = ["pair_id", "lang", "sample", "value", "weight", "empty"]


def completion_nll(scorer: LoadedModel, completions: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """One row per completion (pair_id, lang, sample as given): value = summed NLL of the
    completion's tokens given its prompt, weight = their count; an empty completion has
    value 0, weight 0 and `empty` True (it counts in no perplexity; report its share instead)."""
    missing = {"pair_id", "lang", "sample", "prompt", "completion"} - set(completions.columns)
    if missing:
        raise ValueError(f"completion_nll needs a completions frame (pair_id, lang, sample, prompt, completion); "
                         f"missing {sorted(missing)}")
    texts = [text if text.strip() else "" for text in completions["completion"].fillna("").astype(str)]
    scores = continuation_nll(scorer, completions["prompt"].astype(str).tolist(), texts, batch_size, desc="fluency")
    result = completions[["pair_id", "lang", "sample"]].reset_index(drop=True).copy()
    result["value"] = [nll for nll, _ in scores]
    result["weight"] = [float(tokens) for _, tokens in scores]
    result["empty"] = [tokens == 0 for _, tokens in scores]
    return result[FLUENCY_COLUMNS]
