"""retrain_new_languages end to end: a champion on 8 languages, then Amharic's files arrive.

Runs against its own `mlflow server` (SQLite) so that its champion stays out of other tests' registry.
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from mlflow import MlflowClient

from mbad.aliases import read_aliases
from mbad.config import PAPER_LANGUAGES
from mbad.validation import DataValidationError
from tests.conftest import SHARED_DATA
from tests.integration.conftest import TINY_JUDGE, run_detox_training, write_run_config
from tests.integration.registry import LENIENT, MODEL, run_promotion

pytestmark = pytest.mark.integration
OLD_LANGUAGES = sorted(set(PAPER_LANGUAGES) - {"am"})


def retrain(stack, tmp_path, tiny_model_dir, data_dir):
    from pipelines.retraining import retrain_new_languages

    config = {
        "detox": {
            "data": {"data_dir": str(data_dir)},
            "model": {"name_or_path": str(tiny_model_dir)},
            "train": {"max_examples_per_language": 4, "batch_size": 4, "checkpoint_every": 1},
            "generation": {"max_prompts_per_language": 8, "max_new_tokens": 4},
            "knowledge": {"max_sentences_per_language": 4},
            "judge": TINY_JUDGE,
        },
        "promotion": {"model_name": MODEL, "gate": LENIENT},
    }
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump({"enable_cache": True, "parameters": {"config": config}}))
    return stack.get_pipeline_run(retrain_new_languages.with_options(config_path=str(path))().id)


def test_a_new_language_is_trained_registered_and_gated_then_nothing_is(mlflow_server, stack, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SHARED_DATA, data)
    amharic = tmp_path / "amharic"
    amharic.mkdir()
    for path in data.glob("am_*.csv"):
        shutil.move(path, amharic / path.name)

    # A champion trained and evaluated on the 8 other languages.
    config = write_run_config(tmp_path / "champion.yaml", tiny_model_dir, data={"data_dir": str(data)},
                              target_languages=OLD_LANGUAGES, generation={"max_prompts_per_language": 8, "max_new_tokens": 4})
    champion = str(stack.get_pipeline_run(run_detox_training(config).id).steps["register_model"].run_metadata["mlflow_model_version"])
    run_promotion(stack, tmp_path, challenger_version=champion, gate=LENIENT)
    client = MlflowClient(mlflow_server.uri)
    assert read_aliases(client, MODEL)["champion"] == champion

    # Amharic's files arrive: no code change, its line is already in configs/languages.yaml.
    for path in amharic.iterdir():
        shutil.copy(path, data / path.name)
    run = retrain(stack, tmp_path, tiny_model_dir, data)
    assert run.status.value == "completed"
    plan = run.steps["find_new_languages"].outputs["retraining_plan"][0].load()
    assert plan.new_languages == ["am"] and plan.champion == champion
    assert run.steps["validate_data"].status.value == "completed"  # the same GE suite, all 9 languages
    assert run.steps["train_adapter"].status.value == "completed"

    new = str(run.steps["register_model"].run_metadata["mlflow_model_version"])
    tags = client.get_model_version(MODEL, new).tags
    assert tags["evaluated_languages"].split(",") == sorted(PAPER_LANGUAGES)
    assert tags["trained_languages"].split(",") == sorted(PAPER_LANGUAGES)  # default policy: all together (mft)
    assert "metric.toxicity_mean/am" in tags

    # Handed to the gate: the champion is re-evaluated on all 9 languages and no language,
    # old or new, may be worse than the champion's beyond the tolerance.
    decision = run.steps["gate"].outputs["gate_decision"][0].load()
    assert decision.challenger == new and decision.champion == champion and decision.reevaluated == ["champion"]
    assert {check.language for check in decision.checks if check.name == "toxicity_vs_champion"} == set(PAPER_LANGUAGES)
    assert decision.passed and tags["validation_status"] == "approved"
    assert read_aliases(client, MODEL) == {"champion": new, "previous": champion}

    # Nothing new since: the second run checks, says so, trains and registers nothing.
    versions_before = len(client.search_model_versions(f"name='{MODEL}'"))
    again = retrain(stack, tmp_path, tiny_model_dir, data)
    assert again.status.value == "completed"
    assert set(again.steps) == {"load_data", "validate_data", "find_new_languages"}
    plan = again.steps["find_new_languages"].outputs["retraining_plan"][0].load()
    assert plan.new_languages == [] and plan.message.startswith("nothing new")
    assert len(client.search_model_versions(f"name='{MODEL}'")) == versions_before
    assert read_aliases(client, MODEL) == {"champion": new, "previous": champion}


def test_files_of_an_unknown_language_fail_validation_saying_what_to_add(mlflow_server, stack, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SHARED_DATA, data)
    for path in list(data.glob("am_*.csv")):  # Tigrinya files, without a line in configs/languages.yaml
        shutil.copy(path, data / path.name.replace("am_", "ti_"))
    with pytest.raises(DataValidationError, match=r"check 'known_language' failed \(add the language to \S+/configs/languages.yaml"):
        retrain(stack, tmp_path, tiny_model_dir, data)
    run = stack.get_pipeline("retrain_new_languages").last_run
    assert run.steps["validate_data"].status.value == "failed" and "find_new_languages" not in run.steps
    assert "by language: {'ti': 400}" in run.steps["validate_data"].exception_info.traceback
