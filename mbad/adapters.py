"""A saved LoRA adapter on disk: peft's files plus `mbad_adapter.json` (the base model, the
training config and the training summary), written by training and read by evaluation,
serving, the registry and the reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbad.config import ModelConfig

if TYPE_CHECKING:
    from mbad.models import LoadedModel

ADAPTER_META = "mbad_adapter.json"


@dataclass(frozen=True)
class AdapterDirectory:
    """A saved LoRA adapter: peft files plus `mbad_adapter.json` (base model, config, summary)."""

    path: str


def write_adapter_meta(adapter_dir: Path, meta: dict) -> None:
    (Path(adapter_dir) / ADAPTER_META).write_text(json.dumps(meta, indent=2))


def read_adapter_meta(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / ADAPTER_META
    return json.loads(path.read_text()) if path.exists() else {}


def load_adapter(loaded: LoadedModel, adapter_dir: Path) -> LoadedModel:
    """The base model with an adapter applied, for generation and evaluation."""
    # peft (and torch) imported here, not with the module: every step imports this module through
    # its adapter materializer, and most steps' pods never load a model.
    from peft import PeftModel

    from mbad.models import LoadedModel

    model = PeftModel.from_pretrained(loaded.model, str(adapter_dir))
    model.eval()
    return LoadedModel(model, loaded.tokenizer, loaded.device, loaded.is_seq2seq)


def load_model_under_test(model: ModelConfig, adapter_dir: Path | str | None) -> LoadedModel:
    """The base model, with the adapter at `adapter_dir` applied when there is one."""
    from mbad.models import load_base_model

    loaded = load_base_model(model)
    return load_adapter(loaded, Path(adapter_dir)) if adapter_dir else loaded
