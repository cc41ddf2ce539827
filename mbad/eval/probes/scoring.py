"""Log-likelihood of a continuation given a context, under a model: what every probe measures.

A perplexity item is a continuation with an empty context (scored from the first token after
BOS), a multiple-choice option is a continuation of its prompt, a completion is a
continuation of the prompt it was generated from. Context and continuation are tokenized
separately and joined, so a continuation's tokens are the same whatever its context: changing
the context changes the conditioning, never what is counted.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from mbad.lm_head import chunked_token_nll, split_lm_head
from mbad.models import LoadedModel


def _encode(loaded: LoadedModel, contexts: list[str], continuations: list[str]) -> list[tuple[list[int], list[int]]]:
    tokenizer = loaded.tokenizer
    context_ids = tokenizer(contexts, add_special_tokens=True)["input_ids"]
    continuation_ids = tokenizer(continuations, add_special_tokens=False)["input_ids"]
    return list(zip(context_ids, continuation_ids, strict=True))


def _causal_batch(loaded: LoadedModel, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
    """(summed NLL, scored tokens) of each row's continuation, one right-padded forward pass."""
    tokenizer, model = loaded.tokenizer, loaded.model
    sequences = [context + continuation for context, continuation in rows]
    width = max(1, max(len(sequence) for sequence in sequences))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)  # positions whose token is a scored target
    for row, ((context, _), sequence) in enumerate(zip(rows, sequences, strict=True)):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
        # Without a BOS/context token the first token has nothing to be predicted from.
        scored[row, max(1, len(context)): len(sequence)] = True
    input_ids, mask, scored = input_ids.to(loaded.device), mask.to(loaded.device), scored.to(loaded.device)
    target_mask = scored[:, 1:]
    targets = input_ids[:, 1:]
    head = split_lm_head(model)
    if head is not None:
        # The output projection on scored positions only, a chunk at a time: no (batch, length, vocab) logits.
        hidden = head.backbone(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        nll_flat, _ = chunked_token_nll(hidden[:, :-1][target_mask], head, targets[target_mask])
        nll = torch.zeros(target_mask.shape, dtype=torch.float32, device=loaded.device)
        nll[target_mask] = nll_flat
    else:
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).reshape(target_mask.shape) * target_mask
    return [(float(nll[row].sum()), int(target_mask[row].sum())) for row in range(len(rows))]


def _seq2seq_batch(loaded: LoadedModel, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
    """Encoder-decoder models: the context is the encoder's input, the continuation the decoder's labels."""
    tokenizer, model = loaded.tokenizer, loaded.model
    batch = tokenizer.pad({"input_ids": [context for context, _ in rows]}, return_tensors="pt").to(loaded.device)
    width = max(1, max(len(continuation) for _, continuation in rows))
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for row, (_, continuation) in enumerate(rows):
        labels[row, : len(continuation)] = torch.tensor(continuation, dtype=torch.long)
    labels = labels.to(loaded.device)
    logits = model(**batch, labels=labels).logits
    target_mask = labels != -100
    nll = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1).clamp(min=0), reduction="none"
    ).reshape(labels.shape) * target_mask
    return [(float(nll[row].sum()), int(target_mask[row].sum())) for row in range(len(rows))]


@torch.inference_mode()
def continuation_nll(
    loaded: LoadedModel, contexts: list[str], continuations: list[str], batch_size: int, desc: str = "score"
) -> list[tuple[float, int]]:
    """(summed NLL in nats, token count) of each continuation given its context, in input order.

    An empty continuation scores (0.0, 0). Rows are batched by length so that padding wastes little.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    encoded = _encode(loaded, contexts, continuations)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    score_batch = _seq2seq_batch if loaded.is_seq2seq else _causal_batch
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        indices = [i for i in order[start:start + batch_size] if encoded[i][1]]
        if indices:
            for index, result in zip(indices, score_batch(loaded, [encoded[i] for i in indices]), strict=True):
                results[index] = result
    return results


def text_nll(loaded: LoadedModel, texts: list[str], batch_size: int, desc: str = "perplexity") -> list[tuple[float, int]]:
    """(summed NLL, token count) of each text on its own: every token after BOS is scored."""
    return continuation_nll(loaded, [""] * len(texts), texts, batch_size, desc=desc)


def mean_token_nll(loaded: LoadedModel, texts: list[str], batch_size: int, desc: str = "perplexity") -> float:
    """Token-weighted mean negative log-likelihood of `texts` under the model."""
    scores = text_nll(loaded, texts, batch_size, desc=desc)
    return sum(nll for nll, _ in scores) / max(1, sum(tokens for _, tokens in scores))
