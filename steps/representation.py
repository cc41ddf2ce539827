from typing import Annotated

import pandas as pd
from zenml import step

from mbad.adapters import AdapterDirectory, load_model_under_test
from mbad.config import ModelConfig, RepresentationConfig
from mbad.data import select
from mbad.representations import language_separation, sentence_embeddings


@step
def represent(
    pairs: pd.DataFrame,
    model: ModelConfig,
    representations: RepresentationConfig,
    target_languages: list[str],
    adapter: AdapterDirectory | None = None,
) -> Annotated[dict, "language_separation"]:
    """Silhouette per language and language-confusion matrix of sentence representations."""
    loaded = load_model_under_test(model, adapter and adapter.path)
    sentences = select(pairs, "test", target_languages, max_per_language=representations.max_sentences_per_language)
    embeddings = sentence_embeddings(loaded, sentences["neutral"].tolist(), representations.pooling, representations.batch_size)
    return language_separation(embeddings, sentences["lang"].tolist())
