"""The gate, the alias moves and the language diff, on a real (SQLite) MLflow registry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mbad.aliases import AliasConflictError, AliasMoveConfig, AliasMoveError, lock_name, move_aliases, read_aliases, recover
from mbad.config import PAPER_LANGUAGES, DataConfig, DetoxConfig
from mbad.data import content_hash, load_pairs
from mbad.eval.compare import ModelEvidence, evidence_of
from mbad.promotion import (
    VERDICT_FILE,
    Candidate,
    GateConfig,
    PromoteConfig,
    PromotionPlan,
    decide,
    decide_on_evaluations,
    decision_tags,
    evaluation_key,
    plan_promotion,
    record_decision,
    rollback_target,
    verdict_html,
    verdict_text,
)
from mbad.registry import version_tags
from mbad.retraining import RetrainConfig, plan_retraining
from tests.synthetic import BASE, HALVED, LANGS, side

FAST = AliasMoveConfig(lock_wait_s=5, restore_attempts=2, restore_wait_s=0, poll_s=0.05)
GATE = GateConfig(statistics={"n_resamples": 2000})


def tags(languages: list[str], values: dict[str, float] | None = None, data_hash: str = "h1", data_dir: str | None = None,
         judge: str = "j1", evidence: str | None = "runs:/r/evidence/clusters.csv", **setting) -> dict[str, str]:
    config = DetoxConfig(target_languages=languages, data=DataConfig(data_dir=data_dir), **setting)
    # the judge's held-out quality, as the report logs it (`judge_<figure>/<lang>`): well above the gate's limit
    quality = {f"judge_{figure}/{lang}": value for lang in languages
               for figure, value in (("auc", 0.95), ("auc_se", 0.02), ("n_test_pairs", 100.0))}
    found = version_tags(["en"], languages, data_hash, config.model_dump(), quality | (values or {}),
                         {"backend": "ensemble", "hash": judge})
    return found | ({"evidence": evidence} if evidence else {})


def plan(challenger: dict[str, str], champion: dict[str, str] | None = None) -> PromotionPlan:
    setting = DetoxConfig(**json.loads(challenger["config"]))
    return PromotionPlan(
        model_name="m", challenger=Candidate(version="2", source="s2", tags=challenger),
        champion=Candidate(version="1", source="s1", tags=champion) if champion else None,
        aliases={"champion": "1" if champion else None, "previous": None}, evaluation=setting, data_hash="h1",
    )


GOOD = {"base": side(BASE), "challenger": side(HALVED)}


def test_gate_passes_on_bounds_and_records_the_test_and_each_bound():
    decision = decide(plan(tags(LANGS)), GATE, GOOD)
    assert decision.passed and decision.reasons == []
    assert {(check.name, check.language) for check in decision.checks} >= {
        ("toxicity_change_pct", "en"), ("toxicity_change_pct", "ru"),
        ("udhr_perplexity_change_pct", "en"), ("target_language_drop", "ru"), ("sample_size", "en")}
    recorded = decision_tags(decision)
    assert recorded["validation_status"] == "approved" and json.loads(recorded["gate.thresholds"]) == GATE.model_dump()
    assert "Holm over 2 language(s)" in recorded["gate.test"] and "2000 resamples" in recorded["gate.test"]
    toxicity = json.loads(recorded["gate.check.toxicity_change_pct"])
    assert set(toxicity) == set(LANGS)
    assert toxicity["en"]["value"] < toxicity["en"]["bound"] <= toxicity["en"]["limit"] == -10 and toxicity["en"]["n"] == 60
    assert all(len(value) <= 5000 for value in recorded.values())


def test_gate_rejects_and_names_each_failing_language():
    unchanged_ru = {"en": HALVED["en"], "ru": BASE["ru"]}
    evidence = {"base": side(BASE), "challenger": side(unchanged_ru, nll=32.0)}  # perplexity +22 % everywhere
    decision = decide(plan(tags(LANGS)), GATE, evidence)
    assert not decision.passed
    assert any(reason.startswith("ru: toxicity changed by +0.0%") and "at least 10.0%" in reason for reason in decision.reasons)
    assert sum(reason.startswith(("en: udhr_perplexity changed", "ru: udhr_perplexity changed"))
               for reason in decision.reasons) == 2
    recorded = decision_tags(decision)
    assert recorded["validation_status"] == "rejected" and "ru: toxicity" in recorded["gate.reasons"]


def test_the_gate_reads_the_quality_the_challengers_run_recorded_for_its_judge():
    weak_ru = tags(LANGS, {"judge_auc/ru": 0.78})
    assert Candidate(version="2", source="s", tags=weak_ru).judge_quality["auc"] == {"en": 0.95, "ru": 0.78}
    decision = decide(plan(weak_ru), GATE, GOOD)
    assert not decision.passed
    assert [reason for reason in decision.reasons if "judge" in reason] == [
        "ru: the judge's held-out ROC-AUC is 0.780 (one-sided 97.5% lower bound 0.741, n=100 test pairs); "
        "a toxicity claim needs a judge whose bound is at least 0.80"]
    assert json.loads(decision_tags(decision)["gate.check.judge_auc"])["ru"]["passed"] is False
    # a judge trained for a re-evaluation brings its own quality, which replaces the recorded one
    retrained = {"auc": {"en": 0.95, "ru": 0.95}, "auc_se": {"en": 0.02, "ru": 0.02}, "n_test_pairs": {"en": 100, "ru": 100}}
    assert decide(plan(weak_ru), GATE, GOOD, retrained).passed


def test_mean_rule_passes_where_one_language_alone_would_fail():
    mixed = {"en": HALVED["en"] * 0.5, "ru": BASE["ru"] * 0.95}  # -75 % and -5 %: mean -40 %
    evidence = {"base": side(BASE), "challenger": side(mixed)}
    assert not decide(plan(tags(LANGS)), GATE, evidence).passed
    decision = decide(plan(tags(LANGS)), GATE.model_copy(update={"aggregate": "mean"}), evidence)
    assert decision.passed, decision.reasons
    assert {check.language for check in decision.checks if check.name == "toxicity_change_pct"} == {"mean"}


def test_challenger_worse_than_the_champion_beyond_the_margin_is_rejected():
    champion = {lang: values * 0.5 for lang, values in HALVED.items()}
    evidence = GOOD | {"champion": side(champion)}
    decision = decide(plan(tags(LANGS), tags(LANGS)), GATE, evidence)
    assert not decision.passed
    assert all(reason.split(":")[0] in LANGS and "vs the champion's" in reason for reason in decision.reasons)
    assert {check.language for check in decision.checks if check.name == "toxicity_vs_champion" and not check.passed} == set(LANGS)


def test_a_champion_without_evidence_on_this_set_blocks_the_decision():
    decision = decide(plan(tags(LANGS), tags(LANGS)), GATE, GOOD)
    assert not decision.passed
    assert decision.reasons[0] == "no evidence of champion v1 on this evaluation set (needs re-evaluation)"


def test_numbers_of_different_judges_are_never_compared():
    champion, challenger = tags(LANGS, judge="j0"), tags(LANGS)
    assert evaluation_key(champion) != evaluation_key(challenger)  # so the pipeline re-evaluates the champion
    evidence = GOOD | {"champion": side(BASE)}
    decision = decide(plan(challenger, champion), GATE, evidence)  # and if it did not, the gate refuses
    assert not decision.passed
    assert any("judge j1" in reason and "judge j0" in reason and "not compared" in reason for reason in decision.reasons)
    reevaluated = plan(challenger, champion)
    reevaluated.reevaluate.append("champion")
    assert decide(reevaluated, GATE, evidence).passed


def test_versions_of_different_methods_meet_on_one_evaluation_set():
    sft, dpo = tags(LANGS), tags(LANGS, train={"method": "dpo"})
    assert (sft["method"], dpo["method"]) == ("sft", "dpo")
    assert evaluation_key(sft) == evaluation_key(dpo)  # compared directly, paired on the same prompts
    assert decide(plan(dpo, sft), GATE, GOOD | {"champion": side(BASE)}).passed


def test_evaluation_key_says_which_numbers_are_comparable():
    base = tags(["en", "ru"])
    same = version_tags(["ru"], ["ru", "en"], "h1", json.loads(base["config"]), {}, {"backend": "ensemble", "hash": "j1"})
    assert evaluation_key(base) == evaluation_key(same)
    assert evaluation_key(base) != evaluation_key(tags(["en", "ru", "am"]))
    assert evaluation_key(base) != evaluation_key(tags(["en", "ru"], data_hash="h2"))
    assert evaluation_key(base) != evaluation_key(tags(["en", "ru"], generation={"max_new_tokens": 7}))
    assert evaluation_key({"data_hash": "h1"}) is None


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'registry.db'}")


def register(client: MlflowClient, tmp_path: Path, version_tags_list: list[dict[str, str]], name: str = "m") -> list[str]:
    client.create_registered_model(name)
    return [str(client.create_model_version(name, source=str(tmp_path), tags=t).version) for t in version_tags_list]


def test_plan_reevaluates_a_champion_evaluated_on_other_languages_or_data(client, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "en_test_toxic.csv").write_text("x\n")
    current = content_hash(load_pairs(DataConfig(data_dir=str(data))))  # what the load step computes
    v1, v2, v3 = register(client, tmp_path, [
        tags(["en"], data_hash="old", data_dir=str(data)),
        tags(["en", "ru"], data_hash=current, data_dir=str(data)),
        tags(["en", "ru"], data_hash="old", data_dir=str(data)),
    ])
    client.set_registered_model_alias("m", "champion", v1)
    fresh = plan_promotion(client, PromoteConfig(model_name="m", challenger_version=v2))
    assert fresh.reevaluate == ["champion"] and fresh.data_hash == current
    stale = plan_promotion(client, PromoteConfig(model_name="m", challenger_version=v3))
    assert stale.reevaluate == ["base", "challenger", "champion"]
    (v4,) = [str(client.create_model_version("m", source=str(tmp_path), tags=tags(
        ["en", "ru"], data_hash=current, data_dir=str(data), evidence=None)).version)]
    unproven = plan_promotion(client, PromoteConfig(model_name="m", challenger_version=v4))
    assert unproven.reevaluate == ["base", "challenger", "champion"]
    assert any("no stored per-prompt evidence" in note for note in unproven.notes)
    assert plan_promotion(client, PromoteConfig(model_name="m")).challenger.version == v4  # the newest
    with pytest.raises(ValueError, match="already the champion"):
        plan_promotion(client, PromoteConfig(model_name="m", challenger_version=v1))


def test_plan_blocks_a_version_whose_evaluation_cannot_be_rebuilt(client, tmp_path):
    unreadable = tags(["en"]) | {"config": "{truncated"}
    (v1,) = register(client, tmp_path, [unreadable])
    blocked = plan_promotion(client, PromoteConfig(model_name="m"))
    assert blocked.reevaluate == [] and "needs re-evaluation" in blocked.blocking[0]
    assert not decide(blocked, GATE, {}).passed


def test_alias_move_refuses_when_the_champion_changed_meanwhile(client, tmp_path):
    v1, v2, v3 = register(client, tmp_path, [{}, {}, {}])
    client.set_registered_model_alias("m", "champion", v2)  # someone promoted v2 since we read v1
    with pytest.raises(AliasConflictError, match="changed since the decision"):
        move_aliases(client, "m", {"champion": v1}, {"champion": v3, "previous": v1}, FAST)
    assert read_aliases(client, "m") == {"champion": v2, "previous": None}
    assert not client.search_registered_models(f"name='{lock_name('m')}'")


def test_a_failure_after_writing_restores_the_aliases(client, tmp_path):
    v1, v2 = register(client, tmp_path, [{}, {}])
    client.set_registered_model_alias("m", "champion", v1)

    def stage_update_fails() -> None:
        raise RuntimeError("ZenML is down")

    with pytest.raises(AliasMoveError, match="ZenML is down.*restored to champion=v1, previous=\\(none\\)") as failure:
        move_aliases(client, "m", {"champion": v1}, {"champion": v2, "previous": v1}, FAST, on_moved=stage_update_fails)
    assert failure.value.restored
    assert read_aliases(client, "m") == {"champion": v1, "previous": None}
    assert not client.search_registered_models(f"name='{lock_name('m')}'")


def test_a_stale_lock_is_recovered_from_its_journal(client, tmp_path):
    v1, v2, v3 = register(client, tmp_path, [{}, {}, {}])
    # A writer died halfway through v1 -> v2: `previous` written, `champion` not yet.
    client.set_registered_model_alias("m", "previous", v1)
    client.set_registered_model_alias("m", "champion", v1)
    journal = {"before": json.dumps({"champion": v1, "previous": None}), "after": json.dumps({"champion": v2, "previous": v1})}
    client.create_registered_model(lock_name("m"), tags={"owner": "dead", "acquired_at": str(time.time()), **journal})
    with pytest.raises(AliasConflictError, match="held the lock"):  # fresh: presumably still running
        move_aliases(client, "m", {"champion": v1, "previous": v1}, {"champion": v3}, FAST.model_copy(update={"lock_wait_s": 0.2}))
    assert recover(client, "m", FAST) is None  # not stale yet
    assert "restored champion=v1, previous=(none)" in recover(client, "m", FAST, force=True)
    assert read_aliases(client, "m") == {"champion": v1, "previous": None}
    move_aliases(client, "m", {"champion": v1}, {"champion": v3, "previous": v1}, FAST)
    assert read_aliases(client, "m") == {"champion": v3, "previous": v1}


def test_a_lock_read_without_its_journal_is_left_alone(client, tmp_path):
    # What a reader sees of a lock released between MLflow's read of the model and of its tags.
    (v1,) = register(client, tmp_path, [{}])
    client.set_registered_model_alias("m", "champion", v1)
    client.create_registered_model(lock_name("m"))
    assert recover(client, "m", FAST) is None  # not stale: the caller polls again
    with pytest.raises(AliasMoveError, match="has no journal"):
        recover(client, "m", FAST, force=True)
    assert read_aliases(client, "m") == {"champion": v1, "previous": None}
    assert client.search_registered_models(f"name='{lock_name('m')}'")


def test_rollback_target_walks_back_the_promotion_chain(client, tmp_path):
    v1, v2, v3 = register(client, tmp_path, [{}, {"promotion.replaced": "1"}, {"promotion.replaced": "2"}])
    assert rollback_target(client, "m", {"champion": v3, "previous": v2}) == {"champion": v2, "previous": v1}
    assert rollback_target(client, "m", {"champion": v2, "previous": v1}) == {"champion": v1, "previous": None}
    with pytest.raises(ValueError, match="nothing to roll back to"):
        rollback_target(client, "m", {"champion": v1, "previous": None})


def test_new_languages_are_those_the_champion_was_not_evaluated_on(client, tmp_path):
    old = [lang for lang in PAPER_LANGUAGES if lang != "am"]
    config = RetrainConfig(detox=DetoxConfig(registry={"model_name": "m"}), promotion={"model_name": "m"})
    first = plan_retraining(client, PAPER_LANGUAGES, config)  # nothing registered: everything is new
    assert first.champion is None and first.new_languages == sorted(PAPER_LANGUAGES)
    (v1,) = register(client, tmp_path, [tags(old, {})])
    client.set_registered_model_alias("m", "champion", v1)
    plan_new = plan_retraining(client, PAPER_LANGUAGES, config)
    assert plan_new.new_languages == ["am"] and "new language(s) am" in plan_new.message
    assert plan_new.training.train.source_languages == sorted(PAPER_LANGUAGES) == plan_new.training.target_languages
    chosen = plan_retraining(client, PAPER_LANGUAGES, config.model_copy(update={"train_on": "configured_sources"}))
    assert chosen.training.train.source_languages == ["en"]
    nothing = plan_retraining(client, old, config)
    assert nothing.new_languages == [] and nothing.training is None and nothing.message.startswith("nothing new")


def test_retrain_config_refuses_two_model_names():
    with pytest.raises(ValueError, match="must equal detox.registry.model_name"):
        RetrainConfig(promotion={"model_name": "other"})


def test_a_decision_on_re_evaluated_models_checks_the_judge_where_their_completions_were_judged():
    """decide_on_evaluations: the measured models' evidence, the stored evidence of the others
    (found from the measured), and the judge checked in the languages completions were judged as."""
    def scored(values: dict[str, np.ndarray]) -> pd.DataFrame:
        return pd.concat([pd.DataFrame({"pair_id": np.arange(len(v)), "lang": lang, "sample": 0, "score": v,
                                        "completion": "some words", "detected_lang": np.where(np.arange(len(v)) < 5, "de", lang),
                                        "judged_lang": np.where(np.arange(len(v)) < 5, "de", lang), "judge": "ensemble:j1"})
                          for lang, v in values.items()], ignore_index=True)

    measured = {"base": ModelEvidence(scored(BASE)), "challenger": ModelEvidence(scored(HALVED))}
    seen = []
    decision = decide_on_evaluations(plan(tags(LANGS)), GATE, measured, lambda found: seen.append(set(found)) or {})
    assert seen == [{"base", "challenger"}]
    judged = {check.language: check for check in decision.checks if check.name == "judge_auc"}
    assert set(judged) == {*LANGS, "de"} and not judged["de"].passed and "de: no judge_auc" in judged["de"].message
    expected = decide(plan(tags(LANGS)), GATE, {role: evidence_of(model, 0.5) for role, model in measured.items()},
                      judged_languages=["de"])
    assert decision.reasons == expected.reasons


def logged_verdict(client: MlflowClient, run_id: str, folder: Path) -> pd.DataFrame:
    folder.mkdir()
    return pd.read_json(Path(client.download_artifacts(run_id, VERDICT_FILE, str(folder))), orient="split", convert_dates=False)


def test_the_decision_is_recorded_as_tags_and_as_a_verdict_table_in_the_challengers_run(client, tmp_path):
    experiment = client.create_experiment("detox", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.create_registered_model("m")
    client.create_model_version("m", source=str(tmp_path), tags=tags(LANGS))
    assert client.create_model_version("m", source=str(tmp_path), run_id=run_id, tags=tags(LANGS)).version == 2
    unchanged_ru = {"en": HALVED["en"], "ru": BASE["ru"]}
    decision = decide(plan(tags(LANGS)), GATE, {"base": side(BASE), "challenger": side(unchanged_ru)})
    record_decision(client, decision)
    recorded = client.get_model_version("m", "2").tags
    assert recorded["validation_status"] == "rejected" and "ru: toxicity changed by" in recorded["gate.reasons"]
    verdict = logged_verdict(client, run_id, tmp_path / "first")
    assert list(zip(verdict["check"], verdict["language"])) == [(check.name, check.language) for check in decision.checks]
    assert list(verdict["outcome"]) == ["pass" if check.passed else "fail" for check in decision.checks]
    assert set(verdict["decided_at"]) == {recorded["gate.decided_at"]}
    record_decision(client, decide(plan(tags(LANGS)), GATE, GOOD))  # a later decision adds its rows
    again = logged_verdict(client, run_id, tmp_path / "again")
    assert len(again) == 2 * len(verdict) and set(again["outcome"][len(verdict):]) == {"pass"}


def test_the_verdict_reads_as_a_table_with_what_blocked_it():
    unchanged_ru = {"en": HALVED["en"], "ru": BASE["ru"]}
    decision = decide(plan(tags(LANGS)), GATE, {"base": side(BASE), "challenger": side(unchanged_ru)})
    lines = verdict_text(decision).splitlines()
    assert lines[0] == "m v2 is rejected (vs the base model)" and lines[1] == f"test: {decision.test}"
    assert lines[2].split()[:3] == ["check", "language", "estimate"] and len(lines) == 3 + len(decision.checks)
    assert {line.split()[1] for line in lines[3:]} == set(LANGS)
    page = verdict_html(decision)
    assert all(reason.replace("'", "&#x27;") in page for reason in decision.reasons) and "toxicity_change_pct" in page
    blocked = decide(plan(tags(LANGS), tags(LANGS)), GATE, GOOD)
    assert verdict_text(blocked).splitlines()[-1] == (
        "blocked: no evidence of champion v1 on this evaluation set (needs re-evaluation)")
    assert verdict_text(blocked).startswith("m v2 is rejected (vs the base model and champion v1)")
