"""What detoxification costs in general ability: knowledge probes behind one interface.

`perplexity` scores held-out NEUTRAL test sentences with the model under test itself.
A new probe is a function registered in PROBES; the pipeline logs whatever they return.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from mbad.config import KnowledgeConfig
from mbad.models import LoadedModel
from mbad.training import chunked_token_nll, split_lm_head

# A probe maps (model, held-out test pairs, config) to {language: value}.
Probe = Callable[[LoadedModel, pd.DataFrame, KnowledgeConfig], dict[str, float]]


@torch.inference_mode()
def mean_token_nll(loaded: LoadedModel, texts: list[str], batch_size: int, desc: str = "perplexity") -> float:
    """Token-weighted mean negative log-likelihood of `texts` under the model."""
    tokenizer, model = loaded.tokenizer, loaded.model
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    head = None if loaded.is_seq2seq else split_lm_head(model)
    total_nll, total_tokens = 0.0, 0
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        ids = [encoded[i] for i in order[start:start + batch_size]]
        width = max(len(row) for row in ids)
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, sequence in enumerate(ids):  # right padding: positions stay 0..n-1
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        input_ids, mask = input_ids.to(loaded.device), mask.to(loaded.device)
        if head is not None:
            # The output projection on real target positions only, a chunk at a time: no
            # (batch, length, vocab) float32 logits.
            hidden = head.backbone(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
            target_mask = mask[:, 1:].bool()
            nll, _ = chunked_token_nll(hidden[:, :-1][target_mask], head, input_ids[:, 1:][target_mask])
            batch_nll = nll.sum()
        else:
            if loaded.is_seq2seq:
                labels = input_ids.masked_fill(mask == 0, -100)
                logits = model(input_ids=input_ids, attention_mask=mask, labels=labels).logits
                targets, target_mask = labels, mask
            else:
                logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
                targets, target_mask = input_ids[:, 1:], mask[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1).clamp(min=0), reduction="none"
            )
            batch_nll = (nll * target_mask.reshape(-1)).sum()
        total_nll += float(batch_nll)
        total_tokens += int(target_mask.sum())
    return total_nll / max(1, total_tokens)


def perplexity_probe(loaded: LoadedModel, test_pairs: pd.DataFrame, config: KnowledgeConfig) -> dict[str, float]:
    results = {}
    for lang, group in test_pairs.groupby("lang", sort=True):
        texts = group["neutral"].tolist()[: config.max_sentences_per_language]
        results[str(lang)] = math.exp(mean_token_nll(loaded, texts, config.batch_size, desc=f"perplexity {lang}"))
    return results


PROBES: dict[str, Probe] = {"perplexity": perplexity_probe}


def run_probes(loaded: LoadedModel, test_pairs: pd.DataFrame, config: KnowledgeConfig) -> dict[str, dict[str, float]]:
    """{probe name: {language: value}} for every configured probe."""
    unknown = sorted(set(config.probes) - set(PROBES))
    if unknown:
        raise ValueError(f"unknown knowledge probe(s) {unknown}; known: {sorted(PROBES)}")
    return {name: PROBES[name](loaded, test_pairs, config) for name in config.probes}
