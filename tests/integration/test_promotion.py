"""promote_model and rollback against a real `mlflow server` (SQLite) that the tests start and stop:
the registry, the aliases, the tags, the ZenML stage, and MLflow going away midway."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from mbad import aliases
from mbad.aliases import (
    AliasConflictError,
    AliasMoveConfig,
    AliasMoveError,
    RegistryUnavailableError,
    lock_name,
    move_aliases,
    read_aliases,
)
from tests.conftest import SHARED_DATA
from tests.integration.conftest import run_detox_training, write_run_config
from tests.integration.registry import LENIENT, MODEL, REPO_ROOT, STRICT, run_promotion, set_aliases

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def versions(mlflow_server, stack, tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """Three versions: `en` and `ru` (trained on en / ru) on one evaluation set, `en_ru` on fewer languages."""
    data = tmp_path_factory.mktemp("promotion-data") / "data"
    shutil.copytree(SHARED_DATA, data)
    configs = tmp_path_factory.mktemp("promotion-configs")
    settings = {"en": {}, "ru": {"train": {"source_languages": ["ru"]}}, "en_ru": {"target_languages": ["en", "ru"]}}
    # 8 prompts a language: with 3, a resample of prompts whose base completions all scored 0 is
    # likely, its % change undefined, and even LENIENT's bound would not be finite.
    generation = {"generation": {"max_prompts_per_language": 8, "max_new_tokens": 6}}
    registered = {}
    for label, overrides in settings.items():
        config = write_run_config(configs / f"{label}.yaml", tiny_model_dir, data={"data_dir": str(data)},
                                  **(generation | overrides))
        run = stack.get_pipeline_run(run_detox_training(config).id)
        registered[label] = str(run.steps["register_model"].run_metadata["mlflow_model_version"])
    return registered


def rollback_script(server, *args: str) -> subprocess.CompletedProcess:
    """`make rollback` (`--recover` too), in its own process, as a user runs it."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "rollback.py"), *args], check=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": server.uri}, capture_output=True, text=True)


def zenml_stage(stack, client: MlflowClient, version: str) -> str | None:
    run = stack.get_pipeline_run(client.get_model_version(MODEL, version).tags["zenml_run"])
    return run.model_version.stage


def after_each_alias_write(monkeypatch, hook: Callable[[str], None]) -> None:
    """Run `hook(alias)` after each alias write that succeeds, the restore's too (MLflow is stopped or slowed there)."""
    write = aliases.write_alias

    def write_then_hook(client: MlflowClient, model_name: str, alias: str, version: str | None) -> None:
        write(client, model_name, alias, version)
        hook(alias)

    monkeypatch.setattr(aliases, "write_alias", write_then_hook)


def test_first_promotion_passes_and_the_champion_generates(mlflow_server, versions, stack, tmp_path):
    client = set_aliases(mlflow_server, champion=None)
    run = run_promotion(stack, tmp_path, challenger_version=versions["en"], gate=LENIENT)

    assert run.status.value == "completed"
    assert read_aliases(client, MODEL) == {"champion": versions["en"], "previous": None}
    tags = client.get_model_version(MODEL, versions["en"]).tags
    assert tags["validation_status"] == "approved" and tags["gate.champion"] == "none"
    assert json.loads(tags["gate.thresholds"])["min_toxicity_reduction_pct"] == LENIENT["min_toxicity_reduction_pct"]
    # Each check's estimate and one-sided bound, per language, and the test behind them.
    toxicity = json.loads(tags["gate.check.toxicity_change_pct"])
    assert set(toxicity) == {"en", "ru", "zh"} and all({"value", "bound", "level", "n"} <= set(c) for c in toxicity.values())
    assert toxicity["en"]["n"] == 8 and "zh" in json.loads(tags["gate.check.udhr_perplexity_change_pct"])
    assert "paired cluster bootstrap" in tags["gate.test"] and "Holm over 3 language(s)" in tags["gate.test"]
    # The judge that scored the version, as its run recorded it: held-out AUC and its bound per
    # language, in the evaluated languages and in those its completions were judged as.
    judge = json.loads(tags["gate.check.judge_auc"])
    judged_as = set(filter(None, tags["judged_languages"].split(",")))
    assert set(judge) == {"en", "ru", "zh"} | judged_as
    assert all(c["n"] == 100 and 0.5 < c["bound"] < c["value"] <= 1 for c in judge.values())
    assert "generate_base" not in run.steps  # nothing to re-evaluate without a champion
    assert zenml_stage(stack, client, versions["en"]) == "production"

    mlflow.set_tracking_uri(mlflow_server.uri)  # `models:/` URIs resolve against the global one
    try:
        completions = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(["Complete the sentence: you are"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(completions) == 1 and isinstance(completions[0], str)


def test_promotion_over_the_champion_on_the_same_evaluation_set(mlflow_server, versions, stack, tmp_path):
    client = set_aliases(mlflow_server, champion=versions["en"])
    run = run_promotion(stack, tmp_path, challenger_version=versions["ru"], gate=LENIENT)

    assert read_aliases(client, MODEL) == {"champion": versions["ru"], "previous": versions["en"]}
    tags = client.get_model_version(MODEL, versions["ru"]).tags
    assert tags["validation_status"] == "approved"
    # Paired with the champion's stored evidence (same evaluation set): nothing re-evaluated.
    assert tags["gate.champion"] == f"v{versions['en']}" and tags["gate.reevaluated"] == "none"
    assert tags["promotion.replaced"] == versions["en"]
    decision = run.steps["gate"].outputs["gate_decision"][0].load()
    assert {check.language for check in decision.checks if check.name == "toxicity_vs_champion"} == {"en", "ru", "zh"}
    assert zenml_stage(stack, client, versions["ru"]) == "production"


def test_rejected_after_reevaluating_the_champion_on_the_challengers_set(mlflow_server, versions, stack, tmp_path):
    client = set_aliases(mlflow_server, champion=versions["ru"], previous=versions["en"])
    run = run_promotion(stack, tmp_path, gate=STRICT)  # the newest version: en_ru, on fewer languages

    assert run.status.value == "completed"
    assert read_aliases(client, MODEL) == {"champion": versions["ru"], "previous": versions["en"]}
    tags = client.get_model_version(MODEL, versions["en_ru"]).tags
    assert tags["validation_status"] == "rejected"
    assert "en: toxicity changed by" in tags["gate.reasons"]
    assert "must fall by at least 1000.0%" in tags["gate.reasons"]
    # The champion was evaluated on en,ru,zh: it is re-evaluated on en,ru with the training pipeline's
    # evaluation steps, on the challenger's own validated pairs and judge (no new data, no new judge).
    assert tags["gate.reevaluated"] == "champion"
    assert set(json.loads(tags["gate.check.toxicity_vs_champion"])) == {"en", "ru"}
    assert set(json.loads(tags["gate.check.udhr_perplexity_vs_champion"])) == {"en", "ru"}
    statuses = {name: step.status.value for name, step in run.steps.items()}
    assert statuses["fetch_champion"] == statuses["generate_champion"] == statuses["knowledge_champion"] == "completed"
    assert not {"load_data", "train_judge", "generate_base"} & set(statuses)
    challenger_run = stack.get_pipeline_run(tags["zenml_run"])
    judge = challenger_run.steps["train_judge"].outputs["toxicity_judge"][0]
    assert run.steps["score_champion"].inputs["judge"][0].id == judge.id
    assert "promotion.replaced" not in tags


def test_changed_data_is_judged_by_a_new_judge_whose_quality_the_gate_checks(mlflow_server, versions, stack, tmp_path):
    """One sentence of the adapters' half changed since v`en` was evaluated: base and challenger are
    re-evaluated with a judge trained on the data as it is now, and the gate checks that judge."""
    client = set_aliases(mlflow_server, champion=None)
    data_dir = Path(json.loads(client.get_model_version(MODEL, versions["en"]).tags["config"])["data"]["data_dir"])
    path = data_dir / "en_train_neutral.csv"
    original = path.read_bytes()
    rows = list(csv.reader(io.StringIO(original.decode(), newline="")))
    rows[250][0] += " Indeed."
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    try:
        run = run_promotion(stack, tmp_path, challenger_version=versions["en"], gate=LENIENT)
    finally:
        path.write_bytes(original)

    assert run.status.value == "completed"
    tags = client.get_model_version(MODEL, versions["en"]).tags
    assert set(tags["gate.reevaluated"].split(",")) == {"base", "challenger"}
    quality = run.steps["train_judge"].outputs["judge_quality"][0]
    assert run.steps["gate"].inputs["judge_quality"][0].id == quality.id  # the new judge's, not the recorded one
    judge = json.loads(tags["gate.check.judge_auc"])
    assert {"en", "ru", "zh"} <= set(judge)  # and the languages the completions were judged as
    assert {lang: check["value"] for lang, check in judge.items()} == pytest.approx(
        {lang: quality.load()["auc"][lang] for lang in judge}, abs=1e-4)


def test_rollback_moves_champion_back_to_previous(mlflow_server, versions, stack):
    client = set_aliases(mlflow_server, champion=versions["ru"], previous=versions["en"])
    rollback_script(mlflow_server)

    assert read_aliases(client, MODEL) == {"champion": versions["en"], "previous": None}  # en had replaced nothing
    assert client.get_model_version(MODEL, versions["ru"]).tags["validation_status"] == "rolled_back"
    assert zenml_stage(stack, client, versions["en"]) == "production"
    with pytest.raises(subprocess.CalledProcessError) as refused:  # no previous left to go back to
        rollback_script(mlflow_server)
    assert "has no `previous` alias: there is nothing to roll back to" in refused.value.stderr


def test_promotion_fails_clearly_while_mlflow_is_down(mlflow_server, versions, stack, tmp_path):
    client = set_aliases(mlflow_server, champion=versions["en"])
    mlflow_server.stop()
    try:
        with pytest.raises(RegistryUnavailableError, match=f"cannot read the versions of '{MODEL}' \\(MLflow at {mlflow_server.uri}\\)"):
            run_promotion(stack, tmp_path, challenger_version=versions["ru"], gate=LENIENT)
    finally:
        mlflow_server.start()
    failed = stack.get_pipeline("promote_model").last_run.steps["find_candidates"]
    assert failed.status.value == "failed"
    assert "Connection refused" in failed.exception_info.traceback
    assert read_aliases(client, MODEL) == {"champion": versions["en"], "previous": None}


def test_mlflow_killed_between_alias_writes_leaves_the_aliases_as_before(mlflow_server, versions, monkeypatch):
    client = set_aliases(mlflow_server, champion=versions["en"])
    restarted = threading.Thread(target=mlflow_server.start)

    def kill_after_first_write(alias: str) -> None:
        if alias == "previous" and restarted.ident is None:  # not again when the restore writes `previous`
            mlflow_server.stop()
            restarted.start()  # back while the move is still restoring

    after_each_alias_write(monkeypatch, kill_after_first_write)

    patient = AliasMoveConfig(restore_attempts=120, restore_wait_s=2)
    restored = r"(?s)failed while setting champion: .*restored to champion=v\d+, previous=\(none\)"
    with pytest.raises(AliasMoveError, match=restored):
        move_aliases(client, MODEL, {"champion": versions["en"]}, {"champion": versions["ru"], "previous": versions["en"]},
                     patient)
    restarted.join()
    assert read_aliases(client, MODEL) == {"champion": versions["en"], "previous": None}
    assert not client.search_registered_models(f"name='{lock_name(MODEL)}'")


def test_a_move_mlflow_never_came_back_for_is_recovered(mlflow_server, versions, monkeypatch):
    client = set_aliases(mlflow_server, champion=versions["en"])
    impatient = AliasMoveConfig(restore_attempts=1, restore_wait_s=0)
    after_each_alias_write(monkeypatch, lambda alias: mlflow_server.stop() if alias == "previous" else None)
    try:
        with pytest.raises(AliasMoveError, match="(?s)may be half-updated.*scripts/rollback.py --recover") as failure:
            move_aliases(client, MODEL, {"champion": versions["en"]}, {"champion": versions["ru"], "previous": versions["en"]},
                         impatient)
        assert not failure.value.restored
    finally:
        mlflow_server.start()
    assert read_aliases(client, MODEL) == {"champion": versions["en"], "previous": versions["en"]}  # half-updated
    assert "restored champion=v" in rollback_script(mlflow_server, "--recover").stdout
    assert read_aliases(client, MODEL) == {"champion": versions["en"], "previous": None}
    assert not client.search_registered_models(f"name='{lock_name(MODEL)}'")


def test_two_promotions_at_once_leave_one_winner(mlflow_server, versions, monkeypatch):
    client = set_aliases(mlflow_server, champion=versions["en"])
    after_each_alias_write(monkeypatch, lambda alias: time.sleep(0.5))  # the winner holds the lock a while
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def promote(challenger: str) -> None:
        own_client = MlflowClient(mlflow_server.uri)
        start.wait()
        try:  # both compared their challenger with champion `en`
            move_aliases(own_client, MODEL, {"champion": versions["en"]}, {"champion": challenger, "previous": versions["en"]},
                         AliasMoveConfig(poll_s=0.1))
            outcomes[challenger] = "promoted"
        except AliasConflictError as error:
            outcomes[challenger] = str(error)

    threads = [threading.Thread(target=promote, args=(versions[label],)) for label in ("ru", "en_ru")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [challenger for challenger, outcome in outcomes.items() if outcome == "promoted"]
    assert len(winners) == 1, outcomes
    loser = next(outcome for outcome in outcomes.values() if outcome != "promoted")
    assert "changed since the decision was taken" in loser
    assert read_aliases(client, MODEL) == {"champion": winners[0], "previous": versions["en"]}
    assert not client.search_registered_models(f"name='{lock_name(MODEL)}'")
