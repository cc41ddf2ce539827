"""Where mbad's files are: the repository and the local state.

It imports nothing from mbad, so that every module, the configuration included, can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def mbad_home() -> Path:
    """Where local state lives: `MBAD_HOME`, else `.mbad/` in the repository."""
    return Path(os.environ.get("MBAD_HOME", REPO_ROOT / ".mbad")).resolve()
