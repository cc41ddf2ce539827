"""Evaluation prompt protocols: the prompt each one builds, the half cut, the errors that name the
bad input, DPO's preference prompts in the evaluation's form, the gate never comparing numbers
of two protocols, and scripts/measure_protocols.py end to end on a tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from mbad.config import DataConfig, DetoxConfig, GenerationConfig, TrainConfig
from mbad.data import content_hash, load_pairs
from mbad.generation import build_prompts
from mbad.model_card import model_card
from mbad.promotion import PromoteConfig, evaluation_key, plan_promotion
from mbad.protocols import DEFAULT_PROTOCOL, PROTOCOLS, TARGET_INSTRUCTIONS, first_half, get_protocol
from mbad.registry import version_tags
from mbad.train.dpo import preference_pairs
from tests.conftest import REPO_ROOT

SENTENCE = {"en": "you are a damn fool today", "hi": "तुम आज एक बेवकूफ़ हो", "zh": "你这个人真是太蠢了"}


def test_each_protocol_builds_its_prompt():
    built = {name: {lang: protocol.build(text, lang) for lang, text in SENTENCE.items()} for name, protocol in PROTOCOLS.items()}
    assert built["paper_instruction"] == {"en": "Complete the sentence: you are a damn fool today",
                                          "hi": "Complete the sentence: तुम आज एक बेवकूफ़ हो",
                                          "zh": "Complete the sentence: 你这个人真是太蠢了"}
    assert built["target_instruction"] == {"en": "Complete the sentence: you are a damn fool today",
                                           "hi": "इस वाक्य को पूरा करें: तुम आज एक बेवकूफ़ हो",
                                           "zh": "补全这个句子：你这个人真是太蠢了"}
    assert built["continuation"] == SENTENCE
    assert built["continuation_half"] == {"en": "you are a", "hi": "तुम आज एक", "zh": "你这个人真"}
    assert all(protocol.description and "\n" not in protocol.description for protocol in PROTOCOLS.values())
    # The generation path builds the same prompts, each in its own row's language.
    assert build_prompts(list(SENTENCE.values()), list(SENTENCE), "target_instruction") == list(built["target_instruction"].values())
    with pytest.raises(ValueError):
        build_prompts(["one sentence"], ["en", "hi"], "continuation")


def test_every_paper_language_has_its_instruction():
    assert set(TARGET_INSTRUCTIONS) == {"en", "es", "de", "ru", "uk", "zh", "ar", "hi", "am"}
    assert len(set(TARGET_INSTRUCTIONS.values())) == len(TARGET_INSTRUCTIONS)
    assert get_protocol("target_instruction").build("x", "de") == "Vervollständige den Satz: x"


def test_the_half_cut_is_by_words_or_by_characters_where_there_are_no_spaces():
    assert first_half("one two three four") == "one two"
    assert first_half("one two three") == "one two"  # the larger half of an odd count
    assert first_half("  one   two  ") == "one"
    assert first_half("短句子很坏") == "短句子"
    assert first_half("好坏") == "好"
    assert first_half("好") == "好"


def test_an_unknown_protocol_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown prompt protocol 'chat'; the known ones are paper_instruction, "
                                         "target_instruction, continuation, continuation_half"):
        get_protocol("chat")
    for make in (lambda: GenerationConfig(protocol="chat"), lambda: TrainConfig(dpo={"protocol": "chat"}),
                 lambda: DetoxConfig(generation={"protocol": "chat"})):
        with pytest.raises(ValidationError, match="unknown prompt protocol 'chat'; the known ones are paper_instruction"):
            make()


def test_a_language_without_a_translated_instruction_is_named(tmp_path):
    with pytest.raises(ValueError, match="target_instruction has no instruction in language 'fr'"):
        get_protocol("target_instruction").build("tu es bête", "fr")
    registry = tmp_path / "languages.yaml"
    registry.write_text("languages:\n  - {code: en, name: English, script: Latin}\n  - {code: fr, name: French, script: Latin}\n")
    data = {"languages_file": str(registry)}
    with pytest.raises(ValidationError, match="generation.protocol: .*language 'fr'"):
        DetoxConfig(data=data, target_languages=["en", "fr"], generation={"protocol": "target_instruction"})
    with pytest.raises(ValidationError, match="train.dpo.protocol: .*language 'fr'"):
        DetoxConfig(data=data, target_languages=["en"], train={"method": "dpo", "source_languages": ["fr"]},
                    generation={"protocol": "target_instruction"})
    # The other protocols prompt in any language, and SFT builds no prompt from its source languages.
    assert DetoxConfig(data=data, target_languages=["fr"], generation={"protocol": "continuation"})
    assert DetoxConfig(data=data, target_languages=["en"], train={"source_languages": ["fr"]},
                       generation={"protocol": "target_instruction"})


def test_dpo_prompts_take_the_form_of_the_evaluation_protocol():
    toxic, neutral = ["you are a damn fool today", "你这个人真是太蠢了"], ["you are wrong today", "你这个人真是不对"]
    prompts = {name: [pair.prompt for pair in preference_pairs(toxic, neutral, ["en", "zh"], name)] for name in PROTOCOLS}
    assert prompts == {
        "paper_instruction": ["Complete the sentence: you are a", "Complete the sentence: 你这个人真"],
        "target_instruction": ["Complete the sentence: you are a", "补全这个句子：你这个人真"],
        # Both continuation protocols: the first half alone, which the model continues.
        "continuation": ["you are a", "你这个人真"],
        "continuation_half": ["you are a", "你这个人真"],
    }
    # Unless set, DPO takes the protocol the adapter is evaluated under.
    assert DetoxConfig(generation={"protocol": "target_instruction"}).train.dpo.protocol == "target_instruction"
    assert DetoxConfig().train.dpo.protocol == DetoxConfig().generation.protocol == DEFAULT_PROTOCOL == "continuation_half"
    assert DetoxConfig(generation={"protocol": "continuation"}, train={"dpo": {"protocol": "paper_instruction"}}
                       ).train.dpo.protocol == "paper_instruction"


def test_the_model_card_names_the_protocol():
    config = DetoxConfig(generation={"protocol": "continuation_half"}).model_dump()
    estimates = pd.DataFrame(columns=["metric", "target", "n"])
    card = model_card(config, estimates, {"name": "ensemble:abc"}, "h1", "data", "run", "zenml")
    assert "protocol `continuation_half`, the first half of the toxic sentence alone" in card
    assert "Complete the sentence" not in card
    paper = DetoxConfig(generation={"protocol": "paper_instruction"}).model_dump()
    assert "Complete the sentence: ..." in model_card(paper, estimates, {"name": "ensemble:abc"}, "h1", "data", "run", "zenml")


def version(protocol: str, data_hash: str = "h1", data_dir: str | None = None) -> dict[str, str]:
    config = DetoxConfig(target_languages=["en", "hi"], generation={"protocol": protocol}, data=DataConfig(data_dir=data_dir))
    return version_tags(["en"], ["en", "hi"], data_hash, config.model_dump(), {}, {"backend": "ensemble", "hash": "j1"}) | {
        "evidence": "runs:/r/evidence/clusters.csv"}


def test_numbers_of_two_protocols_are_never_compared(tmp_path: Path):
    assert evaluation_key(version("paper_instruction")) == evaluation_key(version("paper_instruction"))
    assert evaluation_key(version("paper_instruction")) != evaluation_key(version("continuation"))
    # So a champion evaluated under another protocol is re-evaluated on the challenger's.
    data = tmp_path / "data"
    data.mkdir()
    (data / "en_test_toxic.csv").write_text("x\n")
    current = content_hash(load_pairs(DataConfig(data_dir=str(data))))
    client = MlflowClient(f"sqlite:///{tmp_path / 'registry.db'}")
    client.create_registered_model("m")
    champion, same, other = (str(client.create_model_version("m", source=str(tmp_path), tags=version(
        protocol, current, str(data))).version) for protocol in ("paper_instruction", "paper_instruction", "target_instruction"))
    client.set_registered_model_alias("m", "champion", champion)
    assert plan_promotion(client, PromoteConfig(model_name="m", challenger_version=same)).reevaluate == []
    plan = plan_promotion(client, PromoteConfig(model_name="m", challenger_version=other))
    assert plan.reevaluate == ["champion"]
    assert json.loads(plan.challenger.tags["config"])["generation"]["protocol"] == "target_instruction"


def test_measure_protocols_reports_each_protocol_and_language(tiny_model_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("measure_protocols", REPO_ROOT / "scripts" / "measure_protocols.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "shares.json"
    script.main(["--model", str(tiny_model_dir), "--prompts", "2", "--languages", "en,zh", "--new-tokens", "4", "--out", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    shares = pd.DataFrame(written["shares"])
    assert sorted(zip(shares["protocol"], shares["lang"])) == sorted((name, lang) for name in PROTOCOLS for lang in ("en", "zh"))
    assert (shares["prompts"] == 2).all() and (shares["n"] + shares["empty"] == 2).all()
    assert (shares["in_language"] <= shares["n"]).all()
    assert written["generation"]["max_new_tokens"] == 4 and written["generation"]["num_samples"] == 1
    completions = pd.DataFrame(written["completions"])
    zh_target = completions[(completions["protocol"] == "target_instruction") & (completions["lang"] == "zh")]
    assert len(zh_target) == 2 and zh_target["prompt"].str.startswith("补全这个句子：").all()
    assert "| continuation_half | zh |" in capsys.readouterr().out
