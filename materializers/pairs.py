"""Data tables whose artifacts carry a content hash. The load step reads the data in every run
(where the data is: a pod reads its volume or the hub, never the client's copy); with this
hash, ZenML keys the cache of the steps downstream on the table's content rather than on the
new artifact's ID, so unchanged data still reuses the trained adapters."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import pandas as pd
from zenml.materializers.pandas_materializer import PandasMaterializer

from mbad.data import content_hash


class PairsMaterializer(PandasMaterializer):
    """ZenML's pandas storage (parquet), plus `compute_content_hash` (see `mbad.data.content_hash`)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (pd.DataFrame,)

    def compute_content_hash(self, data: pd.DataFrame) -> str:
        # Salted with the class, as ZenML's own materializers do: another type with the same
        # bytes is another artifact.
        return hashlib.md5(f"{type(self).__name__}:{content_hash(data)}".encode(), usedforsecurity=False).hexdigest()
