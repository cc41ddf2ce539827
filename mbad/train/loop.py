"""The training loop of every method: LoRA (or QLoRA) on the base model, batches, optimizer,
checkpoints and the saved adapter. What a method learns from and its loss are an `Objective`
(`mbad.train.sft`, `mbad.train.dpo`).

A plain loop over accelerate: readable in one screen, data-parallel over several GPUs with
`train.num_processes` (one process per GPU, started by `mbad.train.launch`; a script already
started by `accelerate launch` or `torchrun` trains in place), and checkpoints small enough
(adapter + optimizer) to write often.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm

from mbad.adapters import write_adapter_meta
from mbad.config import LoraSettings, ModelConfig, TrainConfig
from mbad.lm_head import LMHead, split_lm_head
from mbad.models import LoadedModel, load_base_model
from mbad.train.checkpoints import STATE, restore_checkpoint, save_checkpoint
from mbad.train.data import make_batches, shard_batches

logger = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    steps: int
    examples: int
    tokens: int
    seconds: float
    tokens_per_second: float
    final_loss: float
    resumed_from_step: int = 0
    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)  # the rate each optimizer step used


@dataclass
class Objective:
    """What a training method learns from and how: tokenized examples (each with `input_ids`,
    by whose length batches are formed), how a list of them becomes a batch, and the loss of a
    batch given the model under training and, when it has one, its split output layer."""

    examples: list[dict]
    collate: Callable[[list[dict]], dict[str, torch.Tensor]]
    loss: Callable[[torch.nn.Module, LMHead | None, dict[str, torch.Tensor]], torch.Tensor]


def train_with_objective(
    objective_for: Callable[[LoadedModel], Objective],
    model_config: ModelConfig,
    config: TrainConfig,
    output_dir: Path,
    checkpoint_dir: Path | None = None,
    loaded: LoadedModel | None = None,
) -> TrainSummary:
    """The training loop of every method: LoRA on the base model, `objective_for(base model)`
    (called before the adapter exists, so an objective can score with the base model itself,
    e.g. DPO's reference), batches, optimizer, checkpoints, the saved adapter."""
    torch.manual_seed(config.seed)
    loaded = loaded or load_base_model(model_config)
    accelerator = Accelerator(cpu=loaded.device.type == "cpu", gradient_accumulation_steps=config.gradient_accumulation_steps)
    main = accelerator.is_main_process
    objective = objective_for(loaded)
    model = loaded.model
    if model_config.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    model = get_peft_model(model, peft_lora_config(config.lora, loaded.is_seq2seq))
    model.train()
    examples = objective.examples
    batches = shard_batches(make_batches(examples, config.batch_size, config.seed),
                            accelerator.process_index, accelerator.num_processes)
    total_steps = math.ceil(len(batches) * config.epochs / config.gradient_accumulation_steps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    # Linear decay over the optimizer steps. The scheduler is stepped by this loop once per
    # optimizer step and not handed to accelerate: a prepared scheduler steps once per process
    # per call, so with N processes the rate would reach 0 after 1/N of training.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(1, total_steps)))
    model, optimizer = accelerator.prepare(model, optimizer)
    # The fused loss calls the backbone directly: only where no wrapper (DDP) needs its own forward.
    head = split_lm_head(model) if accelerator.num_processes == 1 else None
    if head is not None and head.weight.requires_grad:
        head = None  # a trained output layer needs its weight gradient: the library's loss computes it

    step, losses, rates = 0, [], []
    state_file = checkpoint_dir / STATE if checkpoint_dir else None
    if state_file and state_file.exists():
        step, losses, rates = restore_checkpoint(checkpoint_dir, accelerator.unwrap_model(model), optimizer, scheduler)
        logger.info("resuming training from step %d of %d", step, total_steps)
    resumed_from = step

    schedule = [batch for _ in range(config.epochs) for batch in batches]
    started, tokens = time.perf_counter(), 0
    micro_done = step * config.gradient_accumulation_steps
    window: list[torch.Tensor] = []  # the losses of this optimizer step's micro-batches
    with tqdm(total=total_steps, initial=step, desc="train", unit="step", leave=False, disable=not main) as progress:
        for micro, batch_ids in enumerate(schedule):
            if micro < micro_done:
                continue  # already trained before the checkpoint
            batch = objective.collate([examples[i] for i in batch_ids])
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            with accelerator.accumulate(model):
                loss = objective.loss(model, head, batch)
                window.append(loss.detach())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    rates.append(float(optimizer.param_groups[0]["lr"]))
                optimizer.step()  # a no-op between accumulation boundaries
                optimizer.zero_grad()
            tokens += int(batch["attention_mask"].sum())
            if accelerator.sync_gradients:
                scheduler.step()
                step += 1
                # The step's loss: the mean over its micro-batches and over the processes (each
                # saw its own batches), so it does not depend on how a global batch was split.
                step_loss = torch.stack(window).mean()
                window = []
                losses.append(float(accelerator.reduce(step_loss, reduction="mean")))
                progress.update(1)
                progress.set_postfix(loss=f"{losses[-1]:.3f}")
                if state_file and config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
                    if main:
                        save_checkpoint(checkpoint_dir, accelerator.unwrap_model(model), optimizer, scheduler, step,
                                        losses, rates)
                    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - started
    tokens = int(accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum"))

    summary = TrainSummary(
        steps=step, examples=len(examples), tokens=tokens, seconds=seconds,
        tokens_per_second=tokens / seconds if seconds else 0.0,
        final_loss=losses[-1] if losses else math.nan, resumed_from_step=resumed_from, losses=losses,
        learning_rates=rates,
    )
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(output_dir)
        meta = {"base_model": model_config.model_dump(), "train": config.model_dump(), "summary": asdict(summary)}
        write_adapter_meta(output_dir, meta)
        if state_file and state_file.exists():
            state_file.unlink()  # finished: the adapter itself is the result
    accelerator.wait_for_everyone()
    # Leave the base model as it was for later users of `loaded`.
    accelerator.unwrap_model(model).unload()
    return summary


def peft_lora_config(lora: LoraSettings, is_seq2seq: bool = False) -> LoraConfig:
    """peft's LoRA config for mbad's LoRA settings: what the pipeline trains (and what the bench
    gives TRL and the engines it compares)."""
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      task_type="SEQ_2_SEQ_LM" if is_seq2seq else "CAUSAL_LM")
