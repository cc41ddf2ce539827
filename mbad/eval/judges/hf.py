"""A judge over any HF sequence-classification model (default: the TextDetox XLM-R judge)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from mbad.config import HFJudgeConfig
from mbad.devices import pick_device
from mbad.eval.judges.base import JudgeIdentity, package_version
from mbad.model_files import resolve_model_path


class HFJudge(JudgeIdentity):
    """P(toxic label) of a sequence-classification model, any language the model reads."""

    def __init__(self, config: HFJudgeConfig, device: str = "auto"):
        self.config = config
        self.device = pick_device(device)
        path = resolve_model_path(config.model_id)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(self.device).eval()
        # The model's exact revision where the hub recorded it (a local directory has none).
        revision = getattr(self.model.config, "_commit_hash", None) or "local"
        self._identity = {"backend": "hf", "model_id": config.model_id, "revision": str(revision),
                         "toxic_label": str(config.toxic_label), "max_length": str(config.max_length),
                         "transformers": package_version("transformers"), "torch": package_version("torch")}

    @property
    def identity(self) -> dict[str, str]:
        return self._identity

    @torch.inference_mode()
    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]:
        """P(`toxic_label`) per text (the model reads any language: `langs` is not used)."""
        scores: list[float] = []
        for start in range(0, len(texts), self.config.batch_size):
            batch = self.tokenizer(
                list(texts[start:start + self.config.batch_size]), padding=True, truncation=True,
                max_length=self.config.max_length, return_tensors="pt",
            ).to(self.device)
            probabilities = self.model(**batch).logits.float().softmax(dim=-1)
            scores += probabilities[:, self.config.toxic_label].tolist()
        return scores
