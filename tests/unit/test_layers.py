"""The import rules of `make lint` hold on the repository, and each check fails where it should:
the import contracts of pyproject.toml (import-linter) on a skeleton of the four packages that
breaks one of them, and scripts/check_import_cycles.py on a package with a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the pyproject.toml of `root`, on the packages in `root`."""
    env = {**os.environ, "COLUMNS": "300"}  # contract names on one line
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", LINT_IMPORTS, "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def check_import_cycles(*packages: str, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path)} if path else os.environ.copy()
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "check_import_cycles.py"), *packages],
                          cwd=path or REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def write_modules(root: Path, modules: dict[str, str]) -> None:
    for name, source in modules.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


def test_the_repository_keeps_its_import_contracts():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_mbad_has_no_import_cycle():
    result = check_import_cycles()
    assert result.returncode == 0, result.stdout + result.stderr


# A skeleton of the four packages that keeps every contract; each case adds one module breaking one.
SKELETON = {
    "mbad/__init__.py": "",
    "mbad/config.py": "import os\n",
    "mbad/testing/__init__.py": "",
    "mbad/testing/tiny.py": "from mbad import config\n",
    "materializers/__init__.py": "",
    "materializers/judge.py": "from mbad import config\n",
    "steps/__init__.py": "import materializers.judge\n",
    "pipelines/__init__.py": "",
    "pipelines/training.py": "import steps\nfrom mbad import config\n",
}


@pytest.mark.parametrize(("module", "source", "import_", "summary"), [
    ("mbad/tracking.py", "def log():\n    import zenml\n", "mbad.tracking -> zenml", "2 kept, 1 broken"),
    ("mbad/report.py", "from steps import evaluation\n", "mbad.report -> steps", "1 kept, 2 broken"),  # a ban and a layer
    ("materializers/adapter.py", "import steps\n", "materializers.adapter -> steps", "2 kept, 1 broken"),
    ("steps/training.py", "from pipelines import training\n", "steps.training -> pipelines.training", "2 kept, 1 broken"),
    ("mbad/data.py", "from mbad.testing.tiny import build\n", "mbad.data -> mbad.testing.tiny", "2 kept, 1 broken"),
])
def test_each_import_contract_fails_on_an_import_it_forbids(tmp_path, module, source, import_, summary):
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    write_modules(tmp_path, SKELETON)
    assert lint_imports(tmp_path).returncode == 0  # the skeleton alone keeps them all
    write_modules(tmp_path, {module: source})
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary in result.stdout and import_ in result.stdout, result.stdout


def test_the_cycle_check_names_a_cycle_even_through_an_import_inside_a_function(tmp_path):
    write_modules(tmp_path, {
        "cyclic/__init__.py": "",
        "cyclic/a.py": "from cyclic import b\n",
        "cyclic/b.py": "def later():\n    from cyclic import a\n",
        "cyclic/c.py": "from cyclic import a\n",  # imports the cycle, is not part of it
    })
    result = check_import_cycles("cyclic", path=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "import cycle between 2 modules: cyclic.a, cyclic.b" in result.stdout
    assert "cyclic.b:2 imports cyclic.a" in result.stdout and "cyclic.c" not in result.stdout

    write_modules(tmp_path, {"cyclic/b.py": "def later():\n    pass\n"})
    result = check_import_cycles("cyclic", path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no import cycles in cyclic" in result.stdout
