"""The judge registry: the worked example of docs/extending.md run as written, and what a config
with an unknown backend or a bad backend setting is told."""

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from mbad.config import DetoxConfig, JudgeConfig
from mbad.eval.judges import POOLED, JudgeContext, make_judge, offline_backends, register_judge, registry, score_frame
from mbad.eval.judges.perspective import PerspectiveJudge

EXTENDING = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", EXTENDING.read_text(), flags=re.S)


@pytest.fixture
def keyword_backend(monkeypatch):
    """The example module of docs/extending.md, executed, its backend registered for one test only."""
    monkeypatch.setattr(registry, "JUDGES", dict(registry.JUDGES))
    namespace: dict = {"__name__": "keyword_example"}
    exec(compile(_code_blocks("python")[0], str(EXTENDING), "exec"), namespace)
    return namespace


def test_the_documented_backend_is_configured_built_and_scores(keyword_backend):
    config = DetoxConfig.model_validate(yaml.safe_load(_code_blocks("yaml")[0]))
    assert config.judge.backend == "keyword" and config.judge.settings().words == ["idiot", "moron", "jerk"]
    judge = make_judge(config.judge)
    assert isinstance(judge, keyword_backend["KeywordJudge"])
    assert judge.score(["you idiot", "have a nice day", "what a JERK"], ["en", "en", "en"]) == [1.0, 0.0, 1.0]
    assert judge.name == f"keyword:{judge.identity_hash}"
    scored = score_frame(judge, pd.DataFrame({"lang": ["hi", "en"], "completion": ["you idiot, you jerk", "तुम बेवकूफ हो, jerk"]}))
    assert scored["judged_lang"].tolist() == ["en", POOLED] and scored["score"].tolist() == [1.0, 1.0]
    assert make_judge(JudgeConfig(backend="keyword")).score(["moron"], ["en"]) == [1.0]  # the defaults
    assert JudgeConfig().model_dump()["keyword"] == {"words": ["idiot", "moron"]}  # a stored config records it
    assert "keyword" not in offline_backends()


def test_a_backend_name_is_registered_once(keyword_backend):
    with pytest.raises(ValueError, match="'keyword' is already registered"):
        register_judge("keyword")(lambda config, context: None)


def test_an_unknown_backend_is_refused_naming_the_registered_ones():
    with pytest.raises(ValidationError, match=r"judge.backend 'keyword' is not a registered judge backend; "
                                              r"registered: classifier, ensemble, hf, lexicon, perspective"):
        DetoxConfig.model_validate({"judge": {"backend": "keyword"}})
    with pytest.raises(ValueError, match="not a registered judge backend"):
        make_judge(JudgeConfig.model_construct(backend="keyword"))


@pytest.mark.parametrize(("judge", "message"), [
    ({"ensemble": {"span_C": 0}}, "judge.ensemble.span_C: Input should be greater than 0, got 0"),
    ({"ensemble": {"e5_c": 1.0}}, "judge.ensemble.e5_c: Extra inputs are not permitted, got 1.0"),
    ({"classifier": {"ngram": {"C": 1}}}, "judge.classifier.ngram: Extra inputs are not permitted"),
    ({"keyword": {"words": ["x"]}}, "judge.keyword is not a setting of the judge: its keys are backend, threshold and the "
                                    "settings of a registered backend (classifier, ensemble, hf, perspective)"),
    ({"lexicon": {}}, "judge.lexicon: the lexicon backend has no settings"),
])
def test_each_backends_settings_are_checked_by_its_own_model(judge, message):
    with pytest.raises(ValidationError) as error:
        DetoxConfig.model_validate({"judge": judge})
    assert message in str(error.value), str(error.value)


def test_the_built_in_backends_and_the_order_of_their_settings():
    # The order of a dumped config is part of ZenML's cache keys: a new backend's section comes last.
    assert list(JudgeConfig().model_dump()) == ["backend", "threshold", "classifier", "ensemble", "perspective", "hf"]
    assert offline_backends() == ("classifier", "ensemble")
    config = JudgeConfig(backend="classifier", classifier={"C": 3.0})
    assert config.settings().C == 3.0 and config.settings("ensemble").ngram.C == 30.0 and config.settings("lexicon") is None
    assert JudgeConfig.model_validate_json(config.model_dump_json()) == config


def test_the_perspective_backend_takes_its_key_and_shared_cache_from_the_context(tmp_path):
    from zenml.io import fileio

    config = JudgeConfig(backend="perspective", perspective={"cache_file": str(tmp_path / "cache.sqlite")})
    shared = str(tmp_path / "store" / "mbad-cache")
    context = JudgeContext(secret_store=lambda name: {"api_key": f"key-of-{name}"}, environ={"PERSPECTIVE_API_KEY": "env-key"},
                           shared_dir=shared, storage=fileio)
    judge = make_judge(config, context)
    assert isinstance(judge, PerspectiveJudge) and judge._api_key == "key-of-perspective"
    assert judge._shared_dir == f"{shared}/perspective"

    def no_secrets(name):
        raise KeyError(name)

    unshared = config.model_copy(update={"perspective": config.settings().model_copy(update={"share_cache": False})})
    judge = make_judge(unshared, JudgeContext(secret_store=no_secrets, environ={"PERSPECTIVE_API_KEY": "env-key"}, shared_dir=shared))
    assert judge._api_key == "env-key" and judge._shared_dir is None
    with pytest.raises(ValueError, match="create the ZenML secret 'perspective' with key api_key, or set PERSPECTIVE_API_KEY"):
        make_judge(config, JudgeContext(secret_store=no_secrets))
