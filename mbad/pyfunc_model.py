"""The MLflow pyfunc model behind every registered version (logged as models-from-code).

`mlflow.pyfunc.load_model("models:/mbad-detox@champion").predict([prompt, ...])` loads the base
model, applies the adapter and returns one completion per prompt. A prompt is completed as given:
the version was evaluated on prompts of the protocol its `generation.protocol` names
(`mbad.protocols`; the model card shows their form), and serving builds none. Served with
`make serve` (`mlflow models serve`), it takes `{"inputs": ["prompt", ...]}` and answers
`{"predictions": ["completion", ...]}`.

Wherever the adapter was trained (CUDA, bf16, 4-bit QLoRA), the model loads on the serving host's
device: on a host without CUDA that is the CPU in float32 without quantization. `MBAD_SERVE_DEVICE`
(`cpu`, `cuda`, `auto`) chooses explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

MAX_PROMPTS_PER_REQUEST = 256


def serving_model_config(trained: dict[str, Any], device_preference: str) -> dict[str, Any]:
    """The base model's loading settings on this host: the trained ones, minus what the host lacks."""
    from mbad.devices import pick_device

    device = pick_device(device_preference)
    settings = dict(trained) | {"device": device.type}
    if device.type != "cuda":
        settings |= {"dtype": "float32", "quantization": "none"}
    return settings


def check_prompts(model_input: Any) -> list[str]:
    """The request's prompts, or an MlflowException (HTTP 400 from the scoring server) naming the problem."""
    if hasattr(model_input, "columns"):  # a DataFrame: one column of prompts
        if len(model_input.columns) != 1:
            raise MlflowException(f"expected one column of prompts, got columns {list(model_input.columns)}", INVALID_PARAMETER_VALUE)
        model_input = model_input.iloc[:, 0].tolist()
    if hasattr(model_input, "ndim") and hasattr(model_input, "tolist"):  # the scoring server parses {"inputs": [...]} to numpy
        if model_input.ndim != 1:
            raise MlflowException(f"expected a flat list of prompts, got an array of shape {model_input.shape}", INVALID_PARAMETER_VALUE)
        model_input = model_input.tolist()
    if isinstance(model_input, str) or not isinstance(model_input, list | tuple):
        raise MlflowException(f"expected a list of prompt strings, got {type(model_input).__name__}", INVALID_PARAMETER_VALUE)
    if not model_input:
        raise MlflowException("expected at least one prompt, got an empty list", INVALID_PARAMETER_VALUE)
    if len(model_input) > MAX_PROMPTS_PER_REQUEST:
        raise MlflowException(f"at most {MAX_PROMPTS_PER_REQUEST} prompts per request, got {len(model_input)}", INVALID_PARAMETER_VALUE)
    bad = [i for i, prompt in enumerate(model_input) if not isinstance(prompt, str) or not prompt.strip()]
    if bad:
        raise MlflowException(f"every prompt must be a non-empty string; not at positions {bad[:10]}", INVALID_PARAMETER_VALUE)
    return list(model_input)


class DetoxGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from mbad.adapters import load_adapter, read_adapter_meta
        from mbad.config import GenerationConfig, ModelConfig
        from mbad.models import load_base_model

        adapter_dir = Path(context.artifacts["adapter"])
        meta = read_adapter_meta(adapter_dir)
        settings = serving_model_config(meta["base_model"], os.environ.get("MBAD_SERVE_DEVICE", "auto"))
        self.loaded = load_adapter(load_base_model(ModelConfig(**settings)), adapter_dir)
        self.generation = GenerationConfig(**(context.model_config or {}).get("generation", {}))

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate against them
        from mbad.generation import generate_completions

        prompts = check_prompts(model_input)
        return [samples[0] for samples in generate_completions(self.loaded, prompts, self.generation.model_copy(update={"num_samples": 1}))]


mlflow.models.set_model(DetoxGenerator())
