"""Stores the fitted offline judge (a scikit-learn pipeline) with joblib."""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

import joblib
from sklearn.pipeline import Pipeline
from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

FILENAME = "classifier.joblib"


class ClassifierMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (Pipeline,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: Pipeline) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            local = os.path.join(scratch, FILENAME)
            joblib.dump(data, local)
            fileio.copy(local, os.path.join(self.uri, FILENAME), overwrite=True)

    def load(self, data_type: type[Any]) -> Pipeline:
        with tempfile.TemporaryDirectory() as scratch:
            local = os.path.join(scratch, FILENAME)
            fileio.copy(os.path.join(self.uri, FILENAME), local, overwrite=True)
            return joblib.load(local)
