"""Loading base models and tokenizers: an HF id, a local directory, or a packaged model."""

from __future__ import annotations

import copy
import functools
import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mbad.config import ModelConfig
from mbad.devices import pick_device, pick_dtype
from mbad.model_files import resolve_model_path


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    is_seq2seq: bool


@contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (reference counting still frees memory).

    For work that builds millions of objects it keeps: each full collection it would trigger
    walks every object in the process (many, with torch, transformers, ZenML and MLflow
    imported), and none of them can be garbage yet."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _tokenizer_files(path: str) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of a model directory's tokenizer files (empty for a hub id)."""
    directory = Path(path)
    if not directory.is_dir():
        return ()
    return tuple((file.name, file.stat().st_size, file.stat().st_mtime_ns)
                 for file in sorted(directory.glob("*token*")) if file.is_file())


@functools.lru_cache(maxsize=4)
def _load_tokenizer_once(path: str, files: tuple[tuple[str, int, int], ...]) -> PreTrainedTokenizerBase:
    with garbage_collection_paused():  # gemma's large tokenizer.json parses into millions of objects
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path: str, padding_side: str = "left") -> PreTrainedTokenizerBase:
    """The tokenizer of the model at `path`, read once per process while its files are unchanged.

    Every pipeline step loads its model, and parsing gemma's tokenizer took longer than loading
    its weights. Each call returns its own shallow copy: its padding side is its own, while the
    vocabulary and special tokens are shared and are not to be changed."""
    tokenizer = copy.copy(_load_tokenizer_once(path, _tokenizer_files(path)))
    tokenizer.padding_side = padding_side
    return tokenizer


def load_base_model(config: ModelConfig) -> LoadedModel:
    """Load the base model in eval mode on the configured device."""
    device = pick_device(config.device)
    path = resolve_model_path(config.name_or_path)
    kwargs: dict[str, Any] = {"dtype": pick_dtype(config.dtype, device)}
    if config.quantization == "4bit":
        if device.type != "cuda":
            raise ValueError("model.quantization: 4bit (QLoRA) needs CUDA; use quantization: none on CPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": device.index or 0}
    model_class = AutoModelForSeq2SeqLM if config.architecture == "seq2seq" else AutoModelForCausalLM
    model = model_class.from_pretrained(path, **kwargs)
    if config.quantization != "4bit":
        model.to(device)
    model.eval()
    return LoadedModel(model, load_tokenizer(path), device, config.architecture == "seq2seq")


if __name__ == "__main__":  # `python -m mbad.models packaged:gemma-3-270m`: unpack once, ahead of a run
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in sys.argv[1:]:
        print(f"{name} -> {resolve_model_path(name)}")
