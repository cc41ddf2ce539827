from pathlib import Path
from typing import Annotated

import pandas as pd
from zenml import step

from mbad.config import ModelConfig, RepresentationConfig
from mbad.data import select
from mbad.models import load_base_model
from mbad.representations import language_separation, sentence_embeddings
from mbad.training import AdapterDirectory, load_adapter


@step
def represent(
    pairs: pd.DataFrame,
    model: ModelConfig,
    representations: RepresentationConfig,
    target_languages: list[str],
    adapter: AdapterDirectory | None = None,
) -> Annotated[dict, "language_separation"]:
    """Silhouette per language and language-confusion matrix of sentence representations."""
    loaded = load_base_model(model)
    if adapter:
        loaded = load_adapter(loaded, Path(adapter.path))
    sentences = select(pairs, "test", target_languages, max_per_language=representations.max_sentences_per_language)
    embeddings = sentence_embeddings(loaded, sentences["neutral"].tolist(), representations.pooling, representations.batch_size)
    return language_separation(embeddings, sentences["lang"].tolist())
