"""The device and dtype to compute on (torch only: the judges use these without the model loaders)."""

from __future__ import annotations

import os

import torch


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
