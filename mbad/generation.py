"""The one generation path: batched, left-padded, seeded sampling of completions.

Only the completion is returned (and later scored), never the prompt.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from mbad.config import GenerationConfig
from mbad.models import LoadedModel
from mbad.protocols import get_protocol


def build_prompts(toxic_texts: list[str], languages: list[str], protocol: str) -> list[str]:
    """The prompt of each toxic sentence of language `languages[i]` under the prompt protocol
    `protocol` (a name of `mbad.protocols.PROTOCOLS`)."""
    prompt_protocol = get_protocol(protocol)
    return [prompt_protocol.build(text, lang) for text, lang in zip(toxic_texts, languages, strict=True)]


class TopKTopPSampler(LogitsProcessor):
    """Temperature, top-k, then top-p over the k survivors only, and the draw itself.

    `transformers`' own top-p sorts the whole vocabulary at every step (262k entries for
    Gemma) and its sampler draws over it again; here only `top_k` candidates are sorted and
    drawn from. Same distribution as HF's TopK -> TopP warpers. Our decoding loop calls
    `draw`; as a logits processor (encoder-decoder models, through `generate`) it returns a
    row that is -inf except at the drawn token, so `generate` runs greedily on top of it.

    Each row draws with its own uniform numbers (`uniforms`: rows x steps, see
    `stream_uniforms`) by inverting the candidates' CDF: a row's draw depends on its own
    stream only, not on the batch it sits in, and two models given the same stream are
    sampled with common random numbers.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.uniforms: torch.Tensor | None = None
        self.step = 0

    def start(self, uniforms: torch.Tensor) -> None:
        """Begin a batch: one row of uniform numbers per sequence, one column per new token."""
        self.uniforms, self.step = uniforms, 0

    def candidates(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, unnormalised probabilities) of the tokens that may be drawn, per row."""
        k = scores.shape[-1] if self.top_k <= 0 else min(self.top_k, scores.shape[-1])
        top_scores, top_ids = scores.topk(k, dim=-1)  # sorted, largest first
        probs = torch.softmax(top_scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            # Drop a candidate once the candidates before it already hold `top_p` of the mass.
            mass_before = probs.cumsum(dim=-1) - probs
            probs = probs.masked_fill(mass_before >= self.top_p, 0.0)
        return top_ids, probs

    def draw(self, scores: torch.Tensor) -> torch.Tensor:
        """One token id per row, from this step's column of each row's stream."""
        top_ids, probs = self.candidates(scores)
        cdf = probs.cumsum(dim=-1)
        if self.uniforms is None:  # not started: torch's global generator, as torch.multinomial would use
            column = torch.rand(probs.shape[0], device=cdf.device, dtype=cdf.dtype)
        else:
            column = self.uniforms[:, self.step].to(cdf.device, cdf.dtype)
            self.step += 1
        u = column[:, None] * cdf[:, -1:]
        # The first candidate whose cumulative mass exceeds u (float rounding: never past the last).
        index = (cdf <= u).sum(dim=-1, keepdim=True).clamp(max=probs.shape[-1] - 1)
        return top_ids.gather(-1, index).squeeze(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        drawn = self.draw(scores)
        return torch.full_like(scores, -float("inf")).scatter_(-1, drawn[:, None], 0.0)


WEIGHT_MAJOR_BLOCK = 4096  # vocabulary rows per block of the weight-major output layer


@contextmanager
def weight_major_output_layer(model: torch.nn.Module) -> Iterator[None]:
    """On CPU, compute the output layer as (W @ h.T).T instead of h @ W.T while inside, into one
    buffer reused by every call: a call's logits are valid until the next call.

    Same numbers, another loop order: for Gemma's 262k x 640 output layer and a few dozen
    rows, CPU BLAS runs the weight-major product faster, and that layer is a large share of
    a decoding step's work (`make bench` times generation). Other devices and layers with a
    bias are left alone."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or head.bias is not None or head.weight.device.type != "cpu":
        yield
        return

    # The logits of every call go into one buffer: a step's logits are read (drawn from) before the
    # next step's forward pass, and a new (rows, vocab) tensor per step would be mapped and zeroed
    # by the kernel page by page each time.
    buffers: list[torch.Tensor] = []

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        rows_t = hidden.reshape(-1, hidden.shape[-1]).T.contiguous()
        vocab = head.weight.shape[0]
        if not buffers or buffers[0].shape[0] < rows_t.shape[1] or buffers[0].dtype != hidden.dtype:
            buffers[:] = [hidden.new_empty(rows_t.shape[1], vocab)]
        logits = buffers[0][: rows_t.shape[1]]
        # A block of the vocabulary at a time: its (block, rows) product is small enough to turn
        # into row-major order in cache. A whole transposed result would leave the logits
        # column-major, and top-k and argmax over such rows are several times slower.
        for start in range(0, vocab, WEIGHT_MAJOR_BLOCK):
            logits[:, start:start + WEIGHT_MAJOR_BLOCK] = (head.weight[start:start + WEIGHT_MAJOR_BLOCK] @ rows_t).T
        return logits.reshape(*hidden.shape[:-1], vocab)

    head.forward = forward  # an instance attribute: shadows nn.Linear.forward for this module only
    try:
        yield
    finally:
        del head.forward


def stream_uniforms(stream_keys: Sequence[str], steps: int, seed: int) -> torch.Tensor:
    """(len(stream_keys), steps) uniform numbers in [0, 1): row i comes from a generator seeded
    by (seed, stream_keys[i]) alone, so a sequence's random stream never depends on which other
    sequences share its batch, on the batch size or on the device."""
    rows = []
    for key in stream_keys:
        digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        rows.append(torch.rand(steps, generator=generator, dtype=torch.float64))
    return torch.stack(rows) if rows else torch.empty(0, steps, dtype=torch.float64)


def _stop_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a completion: the model's generation config's, as `generate` uses."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = tokenizer.eos_token_id if eos is None else eos
    return sorted(set(eos if isinstance(eos, list) else [eos]))


def _decode(loaded: LoadedModel, rows: list[list[int]], config: GenerationConfig,
            sampler: TopKTopPSampler | None) -> list[list[int]]:
    """New token ids for each prompt row; after a row's stop token, padding (decoding skips both).

    Our own loop over the model's forward pass with a key/value cache, instead of
    `model.generate`: the prefill computes logits for the last position only, and each step
    draws straight from those logits, with no full-vocabulary copies or masks. Positions
    count real tokens only (left padding does not shift them), as `generate` does.
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(loaded.device)
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    output = model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache, logits, positions = output.past_key_values, output.logits[:, -1, :], positions[:, -1:] + 1
    stops = torch.tensor(_stop_token_ids(model, tokenizer), device=loaded.device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=loaded.device)
    steps = []
    for step in range(config.max_new_tokens):
        drawn = sampler.draw(logits) if sampler else logits.argmax(dim=-1)
        drawn = drawn.masked_fill(done, tokenizer.pad_token_id)
        steps.append(drawn)
        done |= torch.isin(drawn, stops)
        if bool(done.all()) or step == config.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        output = model(input_ids=drawn[:, None], attention_mask=mask, position_ids=positions,
                       past_key_values=cache, use_cache=True)
        logits, positions = output.logits[:, -1, :], positions + 1
    return torch.stack(steps, dim=1).tolist()


def _generate_seq2seq(loaded: LoadedModel, rows: list[list[int]], config: GenerationConfig,
                      sampler: TopKTopPSampler | None) -> list[list[int]]:
    """Encoder-decoder models go through `model.generate` with the same sampler."""
    batch = loaded.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(loaded.device)
    output = loaded.model.generate(
        **batch,
        do_sample=False,  # the sampler draws; generate keeps its one finite token
        logits_processor=LogitsProcessorList([sampler] if sampler else []),
        max_new_tokens=config.max_new_tokens,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    return output.tolist()


@torch.inference_mode()
def generate_completions(
    loaded: LoadedModel, prompts: list[str], config: GenerationConfig, desc: str = "generate",
    prompt_keys: Sequence[str] | None = None,
) -> list[list[str]]:
    """`config.num_samples` completions per prompt, in prompt order.

    Prompts are tokenized once and batched longest first, so that a batch holds prompts
    of similar length and left padding wastes little compute. Sample k of a prompt draws from
    the random stream (config.seed, prompt key, k), the prompt key being `prompt_keys[i]` (the
    pair id) or else the prompt itself: the base and the fine-tuned model sample a prompt with
    the same stream (paired, common random numbers), whatever the batch or the other prompts.
    """
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    completions: list[list[str]] = [[] for _ in prompts]
    keys = list(prompt_keys) if prompt_keys is not None else list(prompts)
    if len(keys) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(keys)} prompt keys")
    sampler = TopKTopPSampler(config.temperature, config.top_k, config.top_p) if config.temperature > 0 else None
    generate = _generate_seq2seq if loaded.is_seq2seq else _decode
    loaded = in_dtype(loaded, config.dtype)
    with weight_major_output_layer(loaded.model), tqdm(total=len(prompts), desc=desc, unit="prompt", leave=False) as progress:
        for start in range(0, len(order), config.batch_size):
            batch_ids = order[start:start + config.batch_size]
            # Each prompt repeated num_samples times, next to each other (as HF's num_return_sequences does).
            rows = [encoded[i] for i in batch_ids for _ in range(config.num_samples)]
            if sampler is not None:
                streams = [f"{keys[i]}\0{k}" for i in batch_ids for k in range(config.num_samples)]
                sampler.start(stream_uniforms(streams, config.max_new_tokens, config.seed))
            texts = tokenizer.batch_decode(generate(loaded, rows, config, sampler), skip_special_tokens=True)
            for row, text in enumerate(texts):
                completions[batch_ids[row // config.num_samples]].append(text.strip())
            progress.update(len(batch_ids))
    return completions


def in_dtype(loaded: LoadedModel, dtype: str) -> LoadedModel:
    """`loaded` itself for `model` or its own dtype; else a copy of the model (adapter included) in
    `dtype`: the caller's model keeps its weights, as a cast there and back would round them."""
    if dtype == "model" or getattr(torch, dtype) == loaded.model.dtype:
        return loaded
    return dataclasses.replace(loaded, model=copy.deepcopy(loaded.model).to(getattr(torch, dtype)).eval())


def generate_for_targets(
    loaded: LoadedModel, test_pairs: pd.DataFrame, config: GenerationConfig, desc: str = "generate"
) -> pd.DataFrame:
    """Completions of the toxic test prompts of every language in `test_pairs`, in one pass.

    Returns one row per sample: pair_id, lang, sample, prompt, completion.
    """
    prompts = build_prompts(test_pairs["toxic"].tolist(), test_pairs["lang"].tolist(), config.protocol)
    completions = generate_completions(loaded, prompts, config, desc=desc, prompt_keys=test_pairs["pair_id"].tolist())
    rows = [
        {"pair_id": pair_id, "lang": lang, "sample": k, "prompt": prompt, "completion": text}
        for pair_id, lang, prompt, samples in zip(test_pairs["pair_id"], test_pairs["lang"], prompts, completions)
        for k, text in enumerate(samples)
    ]
    return pd.DataFrame(rows, columns=["pair_id", "lang", "sample", "prompt", "completion"])
