"""Direct preference optimisation (Rafailov et al. 2023) on the toxic/neutral pairs, with LoRA.

Each train pair becomes a preference: the prompt is the toxic sentence's first half in the form of
the prompt protocol the adapter is evaluated under (`train.dpo.protocol`, `mbad.protocols`; for
`paper_instruction`, "Complete the sentence: <first half>"), the chosen continuation is
the rest of the neutral rewrite and the rejected one the rest of the toxic sentence. The loss is
DPO's sigmoid loss, -log sigmoid(beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected)
- log ref(rejected)))), with log-probabilities summed over the continuation's tokens. The
reference is the base model itself, scored once before the adapter exists (the adapter starts
as the identity, so no second copy of the model is held). Training runs through the same loop
as SFT (`mbad.train.loop.train_with_objective`): LoRA/QLoRA, checkpoints and resume, several
processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mbad.config import ModelConfig, TrainConfig
from mbad.lm_head import LMHead, chunked_token_nll, split_lm_head
from mbad.models import LoadedModel
from mbad.protocols import DEFAULT_PROTOCOL, get_protocol, half_length, sentence_units
from mbad.train.launch import TrainingJob, launch_processes, needs_launch
from mbad.train.loop import Objective, TrainSummary, train_with_objective


@dataclass(frozen=True)
class Preference:
    prompt: str
    chosen: str
    rejected: str


def preference_pairs(toxic: list[str], neutral: list[str], languages: list[str],
                     protocol: str = DEFAULT_PROTOCOL) -> list[Preference]:
    """One preference per pair whose toxic and neutral continuations differ (others are dropped);
    `languages[i]` is pair i's language, `protocol` the prompt protocol its prompt takes the form of."""
    prompt_protocol = get_protocol(protocol)
    pairs = []
    for toxic_text, neutral_text, lang in zip(toxic, neutral, languages, strict=True):
        toxic_units, toxic_sep = sentence_units(toxic_text)
        neutral_units, neutral_sep = sentence_units(neutral_text)
        if len(toxic_units) < 2 or not neutral_units:
            continue
        cut = half_length(toxic_units)
        # The neutral rewrite is cut at the same relative position, so both continuations
        # say the second half of the same sentence.
        neutral_cut = min(len(neutral_units) - 1, round(cut * len(neutral_units) / len(toxic_units)))
        rejected = toxic_sep + toxic_sep.join(toxic_units[cut:]) if toxic_sep else "".join(toxic_units[cut:])
        chosen = neutral_sep + neutral_sep.join(neutral_units[neutral_cut:]) if neutral_sep \
            else "".join(neutral_units[neutral_cut:])
        if chosen.strip() and chosen.strip() != rejected.strip():
            prompt = prompt_protocol.frame(toxic_sep.join(toxic_units[:cut]), lang)
            pairs.append(Preference(prompt, chosen, rejected))
    return pairs


def tokenize_preferences(tokenizer, pairs: list[Preference], max_length: int) -> list[dict]:
    """Prompt (with the tokenizer's special tokens, as generation encodes it) + continuation
    ids for chosen and rejected, truncated to `max_length`, and where the continuation starts."""
    examples = []
    for pair in pairs:
        prompt = tokenizer(pair.prompt, add_special_tokens=True)["input_ids"][: max_length - 1]
        sides = {}
        for name in ("chosen", "rejected"):
            continuation = tokenizer(getattr(pair, name), add_special_tokens=False)["input_ids"]
            sides[name] = (prompt + continuation)[:max_length]
        examples.append({"input_ids": max(sides.values(), key=len), "prompt_length": len(prompt), **sides})
    return examples


def collate_preferences(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows 0..B-1 chosen, B..2B-1 rejected; labels -100 on the prompt and the padding; the
    reference log-probabilities when the examples carry them."""
    rows = [(e["chosen"], e["prompt_length"]) for e in examples] + [(e["rejected"], e["prompt_length"]) for e in examples]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for row, (ids, prompt_length) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, prompt_length: len(ids)] = torch.tensor(ids[prompt_length:])
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if "reference_chosen" in examples[0]:
        batch["reference"] = torch.tensor([e["reference_chosen"] for e in examples] + [e["reference_rejected"] for e in examples])
    return batch


class _FusedTokenNLL(torch.autograd.Function):
    """Per-token NLL with its gradient computed alongside (`chunked_token_nll`): each token's
    NLL depends on its own hidden row only, so backward scales each row by its upstream grad."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head: LMHead, targets: torch.Tensor) -> torch.Tensor:
        nll, grad = chunked_token_nll(hidden.detach(), head, targets, with_grad=True)
        ctx.save_for_backward(grad)
        return nll

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype)[:, None], None, None


def sequence_logps(model: torch.nn.Module, head: LMHead | None, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row, the summed log-probability of its labelled tokens (the continuation)."""
    targets = batch["labels"][:, 1:]
    labelled = targets != -100
    if head is not None:
        hidden = head.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        nll = _FusedTokenNLL.apply(hidden.last_hidden_state[:, :-1][labelled], head, targets[labelled])
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        nll = -logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)[labelled]
    rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[labelled]
    return -torch.zeros(targets.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's sigmoid loss from per-row log-probabilities (chosen rows first, then rejected), and
    each pair's margin beta * (chosen log-ratio - rejected log-ratio)."""
    half = policy.shape[0] // 2
    ratios = policy - reference
    margins = beta * (ratios[:half] - ratios[half:])
    return -F.logsigmoid(margins).mean(), margins


@torch.no_grad()
def reference_logps(loaded: LoadedModel, examples: list[dict], batch_size: int) -> None:
    """Score chosen and rejected under the model as it is (the reference), into the examples."""
    model, pad_id = loaded.model, loaded.tokenizer.pad_token_id
    model.eval()
    head = split_lm_head(model)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start: start + batch_size]
        batch = {key: value.to(loaded.device) for key, value in collate_preferences(chunk, pad_id).items()}
        logps = sequence_logps(model, head, batch).float().cpu()
        for index, example in enumerate(chunk):
            example["reference_chosen"], example["reference_rejected"] = float(logps[index]), float(logps[index + len(chunk)])


def dpo_objective(loaded: LoadedModel, toxic: list[str], neutral: list[str], languages: list[str],
                  config: TrainConfig) -> Objective:
    """Preferences from the pairs, tokenized and scored by the reference (the base model)."""
    if loaded.is_seq2seq:
        raise ValueError("train.method 'dpo' needs a causal LM; this model is encoder-decoder (use 'sft')")
    pairs = preference_pairs(toxic, neutral, languages, config.dpo.protocol or DEFAULT_PROTOCOL)
    if not pairs:
        raise ValueError("no preference pairs: every pair's toxic and neutral continuations were empty or equal")
    examples = tokenize_preferences(loaded.tokenizer, pairs, config.max_length)
    reference_logps(loaded, examples, config.batch_size)
    pad_id, beta = loaded.tokenizer.pad_token_id, config.dpo.beta

    def loss(model: torch.nn.Module, head: LMHead | None, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return dpo_loss(sequence_logps(model, head, batch), batch["reference"], beta)[0]

    return Objective(examples, lambda chosen: collate_preferences(chosen, pad_id), loss)


def train_dpo_adapter(
    toxic: list[str],
    neutral: list[str],
    languages: list[str],
    model_config: ModelConfig,
    config: TrainConfig,
    output_dir: Path,
    checkpoint_dir: Path | None = None,
    loaded: LoadedModel | None = None,
) -> TrainSummary:
    """Fine-tune a LoRA adapter by DPO on the pairs (neutral preferred, `languages[i]` pair i's
    language); resumable as SFT is."""
    if not toxic:
        raise ValueError("no training pairs: check train.source_languages and the data")
    if needs_launch(config):
        return launch_processes(TrainingJob("dpo", [toxic, neutral, languages], model_config, config, output_dir,
                                            checkpoint_dir))
    return train_with_objective(lambda base: dpo_objective(base, toxic, neutral, languages, config), model_config, config,
                                output_dir, checkpoint_dir, loaded)


def describe_dpo(train: dict) -> str:
    beta = train.get("dpo", {}).get("beta", 0.1)
    return f"direct preference optimisation (beta {beta}), neutral rewrite preferred over toxic"


@torch.no_grad()
def preference_margins(loaded: LoadedModel, toxic: list[str], neutral: list[str], languages: list[str],
                       config: TrainConfig) -> torch.Tensor:
    """Per pair, (chosen log-ratio - rejected log-ratio) of `loaded` (e.g. base + adapter) vs the
    base model, which `loaded` must wrap as a peft model (its adapter is disabled for the reference)."""
    preferences = preference_pairs(toxic, neutral, languages, config.dpo.protocol or DEFAULT_PROTOCOL)
    examples = tokenize_preferences(loaded.tokenizer, preferences, config.max_length)
    with loaded.model.disable_adapter():
        reference_logps(loaded, examples, config.batch_size)
    batch = {key: value.to(loaded.device) for key, value in
             collate_preferences(examples, loaded.tokenizer.pad_token_id).items()}
    policy = sequence_logps(loaded.model, split_lm_head(loaded.model), batch)
    return dpo_loss(policy, batch["reference"], 1.0)[1].cpu()
