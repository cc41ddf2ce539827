"""How the pipelines' artifacts are stored by ZenML."""

from mbad.config import ClassifierJudgeConfig
from mbad.data import select
from mbad.judges.classifier import train_classifier


def test_the_judge_artifact_round_trips_and_older_joblib_artifacts_still_load(pairs, tmp_path):
    import joblib

    from materializers.classifier import JOBLIB_FILENAME, ClassifierMaterializer

    classifier = train_classifier(select(pairs, "train", ["en", "de"]), ClassifierJudgeConfig())
    texts = select(pairs, "test", ["en", "de"])["toxic"].tolist()
    expected = classifier.predict_proba(texts)[:, 1].tolist()
    current, older = tmp_path / "current", tmp_path / "older"
    current.mkdir(), older.mkdir()
    ClassifierMaterializer(str(current)).save(classifier)
    joblib.dump(classifier, older / JOBLIB_FILENAME)
    for uri in (current, older):
        loaded = ClassifierMaterializer(str(uri)).load(type(classifier))
        assert loaded.predict_proba(texts)[:, 1].tolist() == expected


def test_zenml_still_records_the_package_of_third_party_artifact_types_with_the_cached_lookup():
    import pandas as pd
    from zenml.utils import source_utils

    import steps  # noqa: F401  (applies the cache)

    lookup = source_utils._get_package_for_module
    for _ in range(2):
        source = source_utils.resolve(pd.DataFrame)
        assert source.package_name == "pandas" and source.version == pd.__version__
    assert lookup.cache_info().hits >= 1
