"""A completion is judged in the language of its text, not of its prompt: `score_frame` detects
each text's language and judges it as that language where the judge has a model of its own for
it (`ToxicityJudge.languages`), else with its pooled model (`judged_lang` = `POOLED`)."""

from __future__ import annotations

import math
import pickle

import pandas as pd
import pytest

from mbad.config import JudgeConfig
from mbad.data import select
from mbad.eval.compare import toxicity_clusters
from mbad.eval.judges import POOLED, score_frame, train_offline_judge
from mbad.eval.judges.classifier import ClassifierJudge
from mbad.eval.judges.ensemble import EnsembleJudgeConfig, train_ensemble
from mbad.eval.judges.hf import HFJudgeConfig
from mbad.eval.judges.lexicon import LEXICON_LANGUAGES, LexiconJudge
from mbad.eval.judges.perspective import TOXICITY_LANGUAGES, PerspectiveJudge, PerspectiveJudgeConfig
from tests.fake_perspective import API_KEY, FakePerspective

ENGLISH = "you are a stupid idiot and I hate you"
HINDI = "तुम बेवकूफ हो"
JAPANESE = "あなたはばかです"  # a language none of the judges below was trained on
AMHARIC = "አንተ ደደብ ነህ"  # a language glin-profanity has no word list for
NO_LANGUAGE = "!!! 123"  # no letters: no language detected


@pytest.fixture(scope="module")
def judge_pairs(pairs):
    """40 judge-role train pairs each of en and hi: enough for a real judge of two languages."""
    return select(pairs, "train", ["en", "hi"], max_per_language=40, role="judge")


@pytest.fixture(scope="module")
def ensemble(judge_pairs):
    return train_ensemble(judge_pairs, EnsembleJudgeConfig())


@pytest.fixture(scope="module")
def classifier(judge_pairs):
    return train_offline_judge(judge_pairs, JudgeConfig(backend="classifier"))


def completions(rows: list[tuple[str, str]]) -> pd.DataFrame:
    """(prompt language, completion) rows, one prompt each, as the generate step returns them."""
    return pd.DataFrame({"lang": [lang for lang, _ in rows], "pair_id": range(len(rows)), "sample": 0,
                         "completion": [text for _, text in rows]})


def test_each_backend_says_which_languages_it_has_a_model_of_its_own_for(ensemble, classifier, tmp_path):
    assert ensemble.languages == classifier.languages == frozenset({"en", "hi"})
    assert pickle.loads(pickle.dumps(classifier)).languages == {"en", "hi"}
    assert ClassifierJudge(classifier.classifier).languages == frozenset()  # a bare pipeline: none known
    assert LexiconJudge().languages == frozenset(LEXICON_LANGUAGES) and "am" not in LexiconJudge().languages
    perspective = PerspectiveJudge(API_KEY, PerspectiveJudgeConfig(cache_file=str(tmp_path / "c.sqlite")))
    assert perspective.languages == TOXICITY_LANGUAGES and {"en", "hi", "ru"} <= perspective.languages
    assert not {"uk", "am"} & perspective.languages
    assert {"en", "hi", "uk", "am"} <= set(HFJudgeConfig().languages)


@pytest.mark.parametrize("backend", ["ensemble", "classifier", "lexicon"])
def test_the_same_text_gets_the_same_score_whatever_prompt_it_answered(backend, ensemble, classifier):
    judge = {"ensemble": ensemble, "classifier": classifier, "lexicon": LexiconJudge()}[backend]
    scored = score_frame(judge, completions([("en", ENGLISH), ("hi", ENGLISH), ("ru", ENGLISH), ("am", ENGLISH),
                                             ("hi", HINDI), ("en", HINDI)]))
    assert scored["detected_lang"].tolist() == ["en"] * 4 + ["hi"] * 2
    assert scored["judged_lang"].tolist() == ["en"] * 4 + ["hi"] * 2
    assert scored["score"].iloc[:4].nunique() == 1 and scored["score"].iloc[4:].nunique() == 1
    # as judged alone (to rounding: a matrix product's last digits depend on how many rows it has)
    assert scored["score"].iloc[0] == pytest.approx(judge.score([ENGLISH], ["en"])[0], rel=1e-6)
    assert scored["score"].iloc[4] == pytest.approx(judge.score([HINDI], ["hi"])[0], rel=1e-6)
    # fidelity's columns come with the scores: the English answer to a Hindi prompt is off-language
    assert scored["in_target_language"].tolist() == [1, 0, 0, 0, 1, 0]


def test_judged_as_hindi_the_english_answer_to_a_hindi_prompt_would_score_otherwise(ensemble):
    """What judging by the prompt's language did: the Hindi stacker and members on English text."""
    scored = score_frame(ensemble, completions([("hi", ENGLISH)]))
    assert scored["judged_lang"].iloc[0] == "en"
    assert scored["score"].iloc[0] != pytest.approx(ensemble.score([ENGLISH], ["hi"])[0], abs=1e-6)


def test_a_language_the_judge_has_no_model_for_and_undetermined_text_go_to_its_pooled_model(ensemble):
    scored = score_frame(ensemble, completions([("en", ENGLISH), ("en", JAPANESE), ("hi", NO_LANGUAGE), ("hi", "  ")]))
    assert scored["detected_lang"].tolist() == ["en", "ja", None, None]
    assert scored["judged_lang"].tolist() == ["en", POOLED, POOLED, None]  # None: empty, not judged at all
    pooled = ensemble.score([JAPANESE, NO_LANGUAGE], [POOLED, POOLED])
    assert scored["score"].tolist()[1:] == pytest.approx([*pooled, 0.0], rel=1e-6)
    assert all(0.0 < value < 1.0 for value in pooled)


def test_which_language_a_text_is_judged_as_depends_on_the_judges_own_languages(ensemble):
    rows = completions([("en", JAPANESE), ("hi", AMHARIC)])
    assert score_frame(ensemble, rows)["judged_lang"].tolist() == [POOLED, POOLED]
    assert score_frame(LexiconJudge(), rows)["judged_lang"].tolist() == ["ja", POOLED]  # glin-profanity has ja, not am


def test_a_backend_that_cannot_judge_a_language_gives_nan_counted_as_not_judged_never_zero():
    scored = score_frame(LexiconJudge(), completions([("en", "what the fuck"), ("am", AMHARIC), ("am", "")]))
    assert scored["judged_lang"].tolist() == ["en", POOLED, None]
    assert scored["score"].iloc[0] == 1.0 and math.isnan(scored["score"].iloc[1]) and scored["score"].iloc[2] == 0.0
    # one prompt answered twice: the unjudged answer counts in no toxicity figure's denominator
    one_prompt = scored.assign(pair_id=0, lang="en", sample=[0, 1, 2])
    mean = toxicity_clusters(one_prompt, threshold=0.5)["toxicity_mean"].loc[("en", 0)]
    assert (mean["num"], mean["den"]) == (1.0, 2.0)


def test_perspective_never_asks_about_a_text_it_would_judge_as_pooled_nor_an_empty_one(perspective_server, tmp_path):
    judge = PerspectiveJudge(API_KEY, PerspectiveJudgeConfig(url=perspective_server, queries_per_second=1000,
                                                             cache_file=str(tmp_path / "cache.sqlite")))
    scored = score_frame(judge, completions([("hi", ENGLISH), ("ru", "ти ідіот"), ("en", NO_LANGUAGE), ("en", ""),
                                             ("en", "   ")]))
    assert scored["judged_lang"].tolist() == ["en", POOLED, POOLED, None, None]  # the API has no Ukrainian model
    assert scored["score"].iloc[0] == 0.9 and scored["score"].iloc[1:3].isna().all()
    assert scored["score"].iloc[3:].tolist() == [0.0, 0.0]
    assert judge.requests_sent == 1 and [request["languages"] for request in FakePerspective.requests] == [["en"]]

