import logging
import math

import pytest

from mbad.config import HFJudgeConfig, JudgeConfig, PerspectiveJudgeConfig
from mbad.data import select
from mbad.eval.judges import ToxicityJudge, make_judge
from mbad.eval.judges.classifier import ClassifierJudge, auc_by_language, train_classifier
from mbad.eval.judges.lexicon import LexiconJudge
from mbad.eval.judges.perspective import PerspectiveError, PerspectiveJudge
from tests.fake_perspective import API_KEY, FakePerspective


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


def test_perspective_retries_429_then_succeeds(perspective_server, tmp_path, caplog):
    FakePerspective.fail_first_with = [429, 503]
    judge = PerspectiveJudge(API_KEY, _perspective_config(perspective_server, tmp_path))
    with caplog.at_level(logging.DEBUG):
        assert judge.score(["you idiot"], ["en"]) == [0.9]
    assert judge.requests_sent == 3
    assert "429" in caplog.text
    assert API_KEY not in caplog.text


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


def test_classifier_judge_separates_toxic_from_neutral(pairs):
    classifier = train_classifier(select(pairs, "train"), JudgeConfig().classifier)
    auc = auc_by_language(classifier, select(pairs, "test"))
    assert set(auc) == set(pairs["lang"])
    assert min(auc.values()) > 0.8, auc
    judge = make_judge(JudgeConfig(), classifier=classifier)
    assert isinstance(judge, ToxicityJudge) and isinstance(judge, ClassifierJudge)
    scores = judge.score(["you are a fucking idiot", "you are a nice person"], ["en", "en"])
    assert scores[0] > scores[1]


def test_lexicon_judge_covers_what_it_can(pairs):
    judge = LexiconJudge()
    scores = judge.score(["what the fuck", "have a nice day", "ሰላም"], ["en", "en", "am"])
    assert scores[0] == 1.0 and scores[1] == 0.0 and math.isnan(scores[2])


def test_hf_judge_with_a_tiny_local_classifier(pairs, tmp_path):
    from mbad.tiny import build_tiny_classifier

    model_dir = build_tiny_classifier(tmp_path / "clf", pairs["toxic"].head(200).tolist())
    judge = make_judge(JudgeConfig(backend="hf", hf=HFJudgeConfig(model_id=str(model_dir), batch_size=2)))
    scores = judge.score(["one", "two words", "three words here"], ["en", "en", "en"])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
