"""Tests leave nothing running: what a test starts, even detached into a session of its own, is
stopped when the pytest session ends, whether the test passed, failed or the session was terminated."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil
import pytest

from tests.conftest import REPO_ROOT
from tests.processes import mount_points

# A test that starts a detached daemon (its own session, orphaned by a double fork), writes its pid
# and then ends as `ending` says.
INNER_TEST = """
import os, signal, subprocess, sys

def test_starts_a_daemon(tmp_path):
    subprocess.run(["sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {pid_file}"], check=True)
    {ending}
"""
ENDINGS = {"passed": "pass", "failed": "assert False, 'the test fails'",
           "terminated": "os.kill(os.getpid(), signal.SIGTERM)"}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_daemon_a_test_started_is_stopped_when_the_session_ends(ending, tmp_path):
    pid_file = tmp_path / "daemon.pid"
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(INNER_TEST).format(pid_file=pid_file, ending=ENDINGS[ending]))
    session = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.processes", "-p", "no:cacheprovider", "-q",
                              str(test_file)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert session.returncode == {"passed": 0, "failed": 1, "terminated": 2}[ending], session.stdout[-2000:]
    daemon = int(pid_file.read_text())
    assert "stopped 1 process(es) the tests left running" in session.stdout
    assert not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE


def test_a_daemon_a_worker_left_when_it_died_is_stopped_when_the_run_ends(tmp_path):
    """`make test` runs the tests in pytest-xdist workers: a worker killed before its own clean-up
    leaves its daemon to the controller, which stops it when the run ends."""
    pid_file = tmp_path / "daemon.pid"
    test_file = tmp_path / "test_inner.py"
    killed = "os.kill(os.getpid(), signal.SIGKILL)"  # the worker dies: no clean-up of its own runs
    test_file.write_text(textwrap.dedent(INNER_TEST).format(pid_file=pid_file, ending=killed))
    session = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.processes", "-p", "no:cacheprovider", "-q",
                              "-n", "1", str(test_file)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert session.returncode == 1 and "worker 'gw0' crashed" in session.stdout, session.stdout[-2000:]
    daemon = int(pid_file.read_text())
    assert "stopped 1 process(es) the tests left running" in session.stdout
    assert not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE


MOUNTING_TEST = """
import subprocess

def test_leaves_a_mount_as_dockerd_leaves_its_network_namespace():
    subprocess.run(["mount", "--bind", "{source}", "{target}"], check=True)
"""


def test_a_mount_a_test_left_under_the_daemons_state_directory_is_unmounted_when_the_session_ends(tmp_path):
    source, target = tmp_path / "source", tmp_path / "docker" / "exec" / "netns" / "default"
    source.mkdir()
    target.mkdir(parents=True)
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(MOUNTING_TEST).format(source=source, target=target))
    session = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.processes", "-p", "no:cacheprovider", "-q",
                              str(test_file)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "MBAD_DOCKER_DIR": str(tmp_path / "docker")})
    assert session.returncode == 0, session.stdout[-2000:]
    assert f"unmounted 1 mount(s) the tests left:\n  {target}" in session.stdout
    assert str(target) not in mount_points()
