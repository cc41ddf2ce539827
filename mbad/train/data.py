"""Training examples: token ids of the texts, batches of similar length, each process's share
of them, and a padded batch."""

from __future__ import annotations

import math
import random

import torch


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
