"""LoRA fine-tuning, resumable: supervised on neutral sentences (the paper's X-FT), or by
preference (DPO, `mbad.dpo`) through the same loop.

A plain loop over accelerate: readable in one screen, data-parallel over several GPUs with
`train.num_processes` (one process per GPU, started by `torchrun`; a script already started
by `accelerate launch` or `torchrun` trains in place), and checkpoints small enough (adapter +
optimizer) to write often. What a method learns from and its loss are an `Objective`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from tqdm.auto import tqdm

from mbad.adapters import read_adapter_meta, write_adapter_meta
from mbad.config import LoraSettings, ModelConfig, TrainConfig
from mbad.lm_head import LMHead, causal_lm_loss, split_lm_head
from mbad.models import LoadedModel, load_base_model

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


def tokenize_for_lm(
    tokenizer, texts: list[str], max_length: int, is_seq2seq: bool, append_eos: bool = False
) -> list[dict[str, list[int]]]:
    """Token ids once per text. Causal LMs learn the whole sentence; seq2seq models learn
    to continue its first half (the same task the evaluation prompts ask for).

    Without `append_eos` the model is not taught to stop after a sentence: taught so, it
    answers "Complete the sentence: <a whole sentence>" with EOS at once, and an empty
    completion measures silence, not detoxification."""
    examples = []
    for text in texts:
        if is_seq2seq:
            words = text.split()
            cut = max(1, len(words) // 2)
            source = tokenizer(" ".join(words[:cut]), truncation=True, max_length=max_length)["input_ids"]
            target = tokenizer(" ".join(words[cut:]) or text, truncation=True, max_length=max_length)["input_ids"]
            examples.append({"input_ids": source, "labels": target})
        else:
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            if append_eos:
                ids = ids[: max_length - 1] + [tokenizer.eos_token_id]
            examples.append({"input_ids": ids, "labels": ids})
    return examples


def make_batches(examples: list[dict], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of similar length (little padding), in a seeded random order."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def shard_batches(batches: list[list[int]], process_index: int, num_processes: int) -> list[list[int]]:
    """This process's share of the batches: every `num_processes`-th, from its index. All
    processes get the same number (they step together), so the last round wraps around to the
    first batches when the count does not divide evenly."""
    if num_processes == 1:
        return batches
    rounds = math.ceil(len(batches) / num_processes)
    return [batches[(round_ * num_processes + process_index) % len(batches)] for round_ in range(rounds)]


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in examples)
    label_width = max(len(e["labels"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), label_width), -100)
    for row, example in enumerate(examples):
        input_ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        attention[row, : len(example["input_ids"])] = 1
        labels[row, : len(example["labels"])] = torch.tensor(example["labels"])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int, losses: list[float],
                     learning_rates: list[float]) -> None:
    """Adapter weights + optimizer state, written atomically (a kill never leaves half a file)."""
    path.mkdir(parents=True, exist_ok=True)
    state = {
        "adapter": get_peft_model_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "losses": losses,
        "learning_rates": learning_rates,
        "rng": torch.get_rng_state(),
    }
    scratch = path / "state.pt.tmp"
    torch.save(state, scratch)
    os.replace(scratch, path / "state.pt")


@dataclass
class Objective:
    """What a training method learns from and how: tokenized examples (each with `input_ids`,
    by whose length batches are formed), how a list of them becomes a batch, and the loss of a
    batch given the model under training and, when it has one, its split output layer."""

    examples: list[dict]
    collate: Callable[[list[dict]], dict[str, torch.Tensor]]
    loss: Callable[[torch.nn.Module, LMHead | None, dict[str, torch.Tensor]], torch.Tensor]


def sft_objective(loaded: LoadedModel, texts: list[str], config: TrainConfig) -> Objective:
    """Next-token prediction on the texts (the paper's supervised fine-tuning)."""
    examples = tokenize_for_lm(loaded.tokenizer, texts, config.max_length, loaded.is_seq2seq, config.append_eos)
    pad_id = loaded.tokenizer.pad_token_id

    def loss(model: torch.nn.Module, head: LMHead | None, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return causal_lm_loss(head, batch) if head is not None else model(**batch).loss

    return Objective(examples, lambda chosen: collate(chosen, pad_id), loss)


def train_lora_adapter(
    texts: list[str],
    model_config: ModelConfig,
    config: TrainConfig,
    output_dir: Path,
    checkpoint_dir: Path | None = None,
    loaded: LoadedModel | None = None,
) -> TrainSummary:
    """Fine-tune a LoRA adapter on `texts` (supervised); save it (adapter only) to `output_dir`.

    With `checkpoint_dir`, state is saved every `config.checkpoint_every` steps and a
    rerun with the same directory continues from the last saved step.
    """
    if not texts:
        raise ValueError("no training texts: check train.source_languages and the data")
    if config.num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return _launch_processes({"method": "sft", "texts": texts}, model_config, config, output_dir, checkpoint_dir)
    return train_with_objective(lambda base: sft_objective(base, texts, config), model_config, config, output_dir,
                                checkpoint_dir, loaded)


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
    state_file = checkpoint_dir / "state.pt" if checkpoint_dir else None
    if state_file and state_file.exists():
        state = torch.load(state_file, weights_only=False)
        set_peft_model_state_dict(accelerator.unwrap_model(model), state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, losses, rates = state["step"], state["losses"], state.get("learning_rates", [])
        torch.set_rng_state(state["rng"])
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
                        _save_checkpoint(checkpoint_dir, accelerator.unwrap_model(model), optimizer, scheduler, step,
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


def _launch_processes(
    data: dict, model_config: ModelConfig, config: TrainConfig, output_dir: Path, checkpoint_dir: Path | None
) -> TrainSummary:
    """`config.num_processes` training processes on this machine (one per GPU), started by
    torchrun; they train one adapter data-parallel and the first one saves it. Returns its summary."""
    with tempfile.TemporaryDirectory(prefix="mbad-train-") as scratch:
        job = Path(scratch) / "job.json"
        job.write_text(json.dumps({
            **data, "model": model_config.model_dump(), "train": config.model_dump(),
            "output_dir": str(output_dir), "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
        }))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={config.num_processes}", "-m", "mbad.training", str(job)]
        logger.info("training with %d processes: %s", config.num_processes, " ".join(command))
        finished = subprocess.run(command, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"multi-process training ({config.num_processes} processes) failed with exit "
                           f"code {finished.returncode}; its processes' errors are above")
    return TrainSummary(**read_adapter_meta(output_dir)["summary"])


def peft_lora_config(lora: LoraSettings, is_seq2seq: bool = False) -> LoraConfig:
    """peft's LoRA config for mbad's LoRA settings: what the pipeline trains (and what the bench
    gives TRL and the engines it compares)."""
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      task_type="SEQ_2_SEQ_LM" if is_seq2seq else "CAUSAL_LM")


def checkpoint_key(model_config: ModelConfig, config: TrainConfig, data_hash: str) -> str:
    """A stable name for one training setting, so that a rerun finds its checkpoint."""
    payload = json.dumps([model_config.model_dump(), config.model_dump(), data_hash], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


if __name__ == "__main__":
    # One of the processes `_launch_processes` starts: `python -m mbad.training job.json`.
    spec = json.loads(Path(sys.argv[1]).read_text())
    arguments = (ModelConfig(**spec["model"]), TrainConfig(**spec["train"]), Path(spec["output_dir"]),
                 Path(spec["checkpoint_dir"]) if spec["checkpoint_dir"] else None)
    if spec["method"] == "dpo":
        from mbad.dpo import train_dpo_adapter

        train_dpo_adapter(spec["toxic"], spec["neutral"], *arguments)
    else:
        train_lora_adapter(spec["texts"], *arguments)
