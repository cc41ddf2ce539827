"""`indomain_perplexity`: perplexity on held-out neutral ParaDetox TEST sentences.

These sentences come from the same corpus, style and length as the fine-tuning data, so a
fall in this perplexity after fine-tuning is domain adaptation, not knowledge kept: read it
as how well the model fits ParaDetox, and the out-of-domain probes for what fine-tuning cost.
"""

from __future__ import annotations

import pandas as pd

from mbad.config import KnowledgeConfig
from mbad.eval.probes.scoring import text_nll
from mbad.models import LoadedModel

ITEM_COLUMNS = ["lang", "item", "value", "weight"]


def indomain_perplexity(loaded: LoadedModel, test_pairs: pd.DataFrame, config: KnowledgeConfig) -> pd.DataFrame:
    """One row per neutral test sentence: value = summed token NLL, weight = its token count.

    `item` is the sentence's pair_id (its position in the language's rows when the frame has none),
    the first `config.max_sentences_per_language` sentences of each language."""
    missing = {"lang", "neutral"} - set(test_pairs.columns)
    if missing:
        raise ValueError(f"indomain_perplexity needs the columns lang and neutral; missing {sorted(missing)}")
    rows = []
    for lang, group in test_pairs.groupby("lang", sort=True):
        if config.max_sentences_per_language is not None:
            group = group.head(config.max_sentences_per_language)
        items = group["pair_id"].astype(str).tolist() if "pair_id" in group else [str(i) for i in range(len(group))]
        scores = text_nll(loaded, group["neutral"].tolist(), config.batch_size, desc=f"indomain_perplexity {lang}")
        rows += [(str(lang), item, nll, tokens) for item, (nll, tokens) in zip(items, scores, strict=True)]
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)
