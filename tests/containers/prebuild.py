"""The pipeline image for the container tests, built in the background while the other tests run.

Building it (a base image from Debian's packages where no registry answers, then the wheels and
`docker build`) is mostly downloads and disk; the container tests run last, so the build starts
when the session knows it will run them (`start`, from tests/conftest.py) and their fixtures
`wait` for it before they use Docker. The fixture then builds again, which reuses every layer,
and reports the error itself if the background build failed. The build process carries the test
session's marker: if the session ends first, it is stopped (tests/processes.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

from mbad.paths import mbad_home
from tests.conftest import REPO_ROOT

IMAGE = "mbad-pipeline:test-cpu"
TIMEOUT_S = 1800.0
_build: subprocess.Popen | None = None


def command() -> list[str]:
    """The image build the container tests use: the CPU variant, without the packaged model."""
    return [sys.executable, str(REPO_ROOT / "scripts" / "build_image.py"), "--torch", "cpu", "--no-model", "--tag", IMAGE,
            "--base", os.environ.get("MBAD_BASE_IMAGE", "python:3.11-slim-bookworm")]


def start() -> None:
    """Start the build in the background (once a session); its output goes to MBAD_HOME/image/prebuild.log."""
    global _build
    if _build is not None:
        return
    log = mbad_home() / "image" / "prebuild.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        _build = subprocess.Popen(command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)


def wait() -> int | None:
    """Wait for the background build, if one was started; its exit status (None: none was started)."""
    if _build is None:
        return None
    try:
        return _build.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _build.kill()
        raise RuntimeError(f"the background image build did not end within {TIMEOUT_S:.0f} s of waiting; "
                           f"see {mbad_home() / 'image' / 'prebuild.log'}") from None
