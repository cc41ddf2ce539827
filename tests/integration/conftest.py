"""Integration fixtures: a real ZenML store + local stack with MLflow (SQLite), tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# The tiny runs' judge: its stacker learns from 2 folds, not 5 (a third of the fits). What a run
# does with a judge does not depend on the fold count; the default judge is fitted in
# tests/unit/test_judges.py.
TINY_JUDGE = {"ensemble": {"cv_folds": 2}}


@pytest.fixture(scope="session")
def stack(mbad_home):
    """The same setup `make setup` runs, against this session's temporary store."""
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "setup_stack.py")], check=True, env=os.environ.copy())
    from zenml.client import Client
    from zenml.utils import source_utils

    # Steps and pipelines are imported from the checkout (the ZenML repository is elsewhere).
    source_utils.set_custom_source_root(str(REPO_ROOT))

    client = Client()
    assert client.active_stack_model.name == "mbad-local"
    return client


@pytest.fixture(scope="module")
def mlflow_server(stack, tmp_path_factory):
    """A real `mlflow server` (SQLite, loopback) per test module; MLflow and the stack use it meanwhile."""
    from tests.integration.registry import MlflowServer, serving

    with serving(MlflowServer(tmp_path_factory.mktemp("mlflow-server"))) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_training_run(stack, tiny_model_dir, tmp_path_factory):
    """One detox_training run on the tiny model and a few prompts, shared by the tests that only
    read what it produced: (its run config, the run)."""
    config_path = write_run_config(tmp_path_factory.mktemp("tiny-run") / "run.yaml", tiny_model_dir)
    return config_path, run_detox_training(config_path)


def write_run_config(path: Path, tiny_model_dir: Path, **config_overrides) -> Path:
    """A ZenML run config for detox_training on the tiny model and a few prompts."""
    config = {
        "model": {"name_or_path": str(tiny_model_dir)},
        "train": {"source_languages": ["en"], "max_examples_per_language": 12, "batch_size": 4, "checkpoint_every": 1},
        "target_languages": ["en", "ru", "zh"],
        "generation": {"max_prompts_per_language": 3, "max_new_tokens": 6},
        "knowledge": {"max_sentences_per_language": 6},
        "judge": TINY_JUDGE,
    }
    for key, value in config_overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    run_config = {"enable_cache": True, "model": {"name": "mbad-detox"}, "parameters": {"config": config}}
    path.write_text(yaml.safe_dump(run_config))
    return path


def run_detox_training(config_path: Path):
    from pipelines.training import detox_training

    return detox_training.with_options(config_path=str(config_path))()

