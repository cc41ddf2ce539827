"""The MLflow pyfunc model behind every registered version (logged as models-from-code).

`mlflow.pyfunc.load_model("models:/mbad-detox@champion").predict(["Complete the sentence: ..."])`
loads the base model, applies the adapter and returns one completion per prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow


class DetoxGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from mbad.config import GenerationConfig, ModelConfig
        from mbad.models import load_base_model
        from mbad.training import load_adapter, read_adapter_meta

        adapter_dir = Path(context.artifacts["adapter"])
        meta = read_adapter_meta(adapter_dir)
        self.loaded = load_adapter(load_base_model(ModelConfig(**meta["base_model"])), adapter_dir)
        self.generation = GenerationConfig(**(context.model_config or {}).get("generation", {}))

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from mbad.generation import generate_completions

        return [samples[0] for samples in generate_completions(self.loaded, list(model_input), self.generation)]


mlflow.models.set_model(DetoxGenerator())
