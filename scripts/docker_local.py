"""A Docker daemon and a base image on a machine without registry access, for `make image` and
the container tests (`make test-containers`).

    python scripts/docker_local.py daemon   # prints the DOCKER_HOST to use
    python scripts/docker_local.py base     # the base image the pipeline image starts from

`daemon` reuses the Docker that DOCKER_HOST (or the default socket) reaches; where none answers
it starts Debian's `dockerd` on a private socket with its state under MBAD_DOCKER_DIR
(default MBAD_HOME/docker). `base`
makes sure the image named by MBAD_BASE_IMAGE (default `python:3.11-slim-bookworm`) exists: pulled
from its registry when that works, else stood in for by Debian bookworm with Python 3.11 made
locally with `debootstrap` from Debian's packages and loaded with `docker import`. A stand-in is
labelled `mbad.base=debootstrap` so that nobody mistakes it for the public image.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mbad.paths import mbad_home  # noqa: E402

DEFAULT_BASE = "python:3.11-slim-bookworm"
DEBIAN_MIRROR = os.environ.get("MBAD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the pipeline image needs from the OS: Python 3.11 with venv, TLS roots, and libgomp for torch.
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates", "libgomp1"]


def private_socket() -> Path:
    """The private daemon's socket; its state sits next to it (MBAD_DOCKER_DIR, else MBAD_HOME/docker)."""
    return Path(os.environ.get("MBAD_DOCKER_DIR", mbad_home() / "docker")) / "docker.sock"


def docker_answers(host: str | None) -> bool:
    env = {**os.environ, **({"DOCKER_HOST": host} if host else {})}
    try:
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_daemon(timeout_s: float = 60) -> str:
    """The DOCKER_HOST of a running daemon: the configured one, else a private dockerd."""
    if shutil.which("docker") is None:
        raise SystemExit("docker: command not found (Debian: apt-get install docker.io)")
    configured = os.environ.get("DOCKER_HOST")
    if docker_answers(configured):
        return configured or "unix:///var/run/docker.sock"
    socket = private_socket()
    host = f"unix://{socket}"
    if docker_answers(host):
        return host
    if shutil.which("dockerd") is None:
        raise SystemExit("no Docker daemon answers and dockerd is missing (Debian: apt-get install docker.io)")
    if os.geteuid() != 0:
        raise SystemExit("no Docker daemon answers; starting a private dockerd needs root (or set DOCKER_HOST)")
    state = socket.parent
    for name in ("root", "exec"):
        (state / name).mkdir(parents=True, exist_ok=True)
    with open(state / "dockerd.log", "ab") as log:
        # Its own session, so that it outlives this command (later builds and tests reuse it).
        subprocess.Popen(["dockerd", "--host", host, "--data-root", str(state / "root"), "--exec-root", str(state / "exec"),
                          "--pidfile", str(state / "dockerd.pid")],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if docker_answers(host):
            return host
        time.sleep(1)
    raise SystemExit(f"dockerd did not answer on {host} within {timeout_s:.0f} s; see {state / 'dockerd.log'}")


def image_exists(name: str, host: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], env={**os.environ, "DOCKER_HOST": host},
                          capture_output=True).returncode == 0


def ensure_base(host: str, name: str = DEFAULT_BASE) -> str:
    """`name` present in the daemon: pulled, or a debootstrap stand-in (see the module docstring)."""
    env = {**os.environ, "DOCKER_HOST": host}
    if image_exists(name, host):
        return name
    pulled = subprocess.run(["docker", "pull", name], env=env, capture_output=True, text=True, timeout=600)
    if pulled.returncode == 0:
        return name
    print(f"cannot pull {name} ({pulled.stderr.strip().splitlines()[-1] if pulled.stderr.strip() else 'no registry'}); "
          "making a stand-in from Debian's packages with debootstrap", flush=True)
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is missing (Debian: apt-get install debootstrap)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=mbad_home()) as scratch:
        rootfs = Path(scratch) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm",
                        str(rootfs), DEBIAN_MIRROR], check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (rootfs / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "--change", "LABEL mbad.base=debootstrap",
                        "--change", 'CMD ["python3"]', "--change", "ENV LANG=C.UTF-8", "-", name],
                       stdin=tar.stdout, env=env, check=True, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise SystemExit("tar of the debootstrap root failed")
    print(f"base image {name}: Debian bookworm + {' '.join(BASE_PACKAGES)} in {time.monotonic() - started:.0f} s", flush=True)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["daemon", "base"])
    args = parser.parse_args()
    host = ensure_daemon()
    if args.what == "base":
        ensure_base(host, os.environ.get("MBAD_BASE_IMAGE", DEFAULT_BASE))
    print(host)


if __name__ == "__main__":
    main()
