"""How separable languages are in the model's sentence representations, before and after
fine-tuning: per-language silhouette scores and a language-confusion (cosine) matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import silhouette_samples

from mbad.models import LoadedModel


@torch.inference_mode()
def sentence_embeddings(loaded: LoadedModel, texts: list[str], pooling: str = "mean", batch_size: int = 16) -> np.ndarray:
    """Last hidden layer, mean-pooled over real tokens (or the first token)."""
    tokenizer, model = loaded.tokenizer, loaded.model
    tokenizer.padding_side = "right"
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=256,
                          return_tensors="pt").to(loaded.device)
        if loaded.is_seq2seq:
            hidden = model.get_encoder()(**batch).last_hidden_state
        else:
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1) if pooling == "mean" else hidden[:, 0]
        vectors.append(pooled.float().cpu().numpy())
    tokenizer.padding_side = "left"
    return np.concatenate(vectors)


def language_separation(embeddings: np.ndarray, languages: list[str]) -> dict:
    """{"silhouette": {lang: mean silhouette}, "languages": [...], "confusion": cosine matrix of centroids}."""
    labels = np.asarray(languages)
    silhouette = silhouette_samples(embeddings, labels, metric="cosine")
    order = sorted(set(languages))
    centroids = np.stack([embeddings[labels == lang].mean(0) for lang in order])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return {
        "silhouette": {lang: float(silhouette[labels == lang].mean()) for lang in order},
        "languages": order,
        "confusion": (centroids @ centroids.T).round(4).tolist(),
    }


def confusion_frame(separation: dict) -> pd.DataFrame:
    return pd.DataFrame(separation["confusion"], index=separation["languages"], columns=separation["languages"])
