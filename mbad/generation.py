"""The one generation path: batched, left-padded, seeded sampling of completions.

Only the completion is returned (and later scored), never the prompt.
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm.auto import tqdm

from mbad.config import GenerationConfig
from mbad.models import LoadedModel


def build_prompts(toxic_texts: list[str], template: str) -> list[str]:
    return [template.format(toxic=text) for text in toxic_texts]


@torch.inference_mode()
def generate_completions(
    loaded: LoadedModel, prompts: list[str], config: GenerationConfig, desc: str = "generate"
) -> list[list[str]]:
    """`config.num_samples` completions per prompt, in prompt order.

    Prompts are tokenized once and batched longest first, so that a batch holds prompts
    of similar length and left padding wastes little compute.
    """
    tokenizer, model = loaded.tokenizer, loaded.model
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    completions: list[list[str]] = [[] for _ in prompts]
    torch.manual_seed(config.seed)
    sampling = config.temperature > 0
    with tqdm(total=len(prompts), desc=desc, unit="prompt", leave=False) as progress:
        for start in range(0, len(order), config.batch_size):
            batch_ids = order[start:start + config.batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in batch_ids]}, return_tensors="pt").to(loaded.device)
            output = model.generate(
                **batch,
                do_sample=sampling,
                temperature=config.temperature if sampling else None,
                top_p=config.top_p if sampling else None,
                top_k=config.top_k if sampling else None,
                max_new_tokens=config.max_new_tokens,
                num_return_sequences=config.num_samples,
                pad_token_id=tokenizer.pad_token_id,
            )
            # Decoder-only models echo the (padded) prompt: keep only the new tokens.
            new_tokens = output if loaded.is_seq2seq else output[:, batch["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for row, text in enumerate(texts):
                completions[batch_ids[row // config.num_samples]].append(text.strip())
            progress.update(len(batch_ids))
    return completions


def generate_for_targets(
    loaded: LoadedModel, test_pairs: pd.DataFrame, config: GenerationConfig, desc: str = "generate"
) -> pd.DataFrame:
    """Completions of the toxic test prompts of every language in `test_pairs`, in one pass.

    Returns one row per sample: pair_id, lang, sample, prompt, completion.
    """
    prompts = build_prompts(test_pairs["toxic"].tolist(), config.prompt_template)
    completions = generate_completions(loaded, prompts, config, desc=desc)
    rows = [
        {"pair_id": pair_id, "lang": lang, "sample": k, "prompt": prompt, "completion": text}
        for pair_id, lang, prompt, samples in zip(test_pairs["pair_id"], test_pairs["lang"], prompts, completions)
        for k, text in enumerate(samples)
    ]
    return pd.DataFrame(rows, columns=["pair_id", "lang", "sample", "prompt", "completion"])
