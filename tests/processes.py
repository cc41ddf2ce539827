"""Nothing a test starts outlives the test session: servers, daemons (the private dockerd and its
containerd), bench workers.

Every process a test starts inherits MBAD_TEST_SESSION, a token new to each session, from the
environment, even when it detaches into a session of its own (start_new_session, a daemon's
double fork). When the session ends, passed, failed, interrupted or terminated, every process
that still carries this session's token is asked to stop (SIGTERM: dockerd then unmounts its
state) and killed after a grace period. Mounts a daemon made under the directories the tests
keep state in (MBAD_HOME, MBAD_DOCKER_DIR) and left behind (dockerd's network namespace
under its exec root) are unmounted then too. Loaded by tests/conftest.py; `-p tests.processes`
loads it into any pytest session.

Under pytest-xdist each worker's token is the controller's with the worker's id appended
("<token>/gw0"): a worker stops what it started when it ends, and the controller, last, whatever
any worker left (a worker killed before its own clean-up). Only the controller unmounts, once no
worker runs: the daemon's state directory is the checkout's, and a worker that ended early must not
unmount a daemon another worker still uses.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import psutil

MARKER = "MBAD_TEST_SESSION"
GRACE_S = 30.0
# The variables naming the directories under which the tests' daemons keep their state.
STATE_VARIABLES = ("MBAD_HOME", "MBAD_DOCKER_DIR")
_MOUNTS_AT_START: set[str] = set()


def session_processes(token: str) -> list[psutil.Process]:
    """The live processes, other than this one, whose environment carries `token` or the token of
    one of its workers."""
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == os.getpid():
            continue
        try:
            carried = process.environ().get(MARKER, "")
            if (carried == token or carried.startswith(f"{token}/")) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_session_processes(token: str, grace_s: float = GRACE_S) -> list[str]:
    """Stop what this session started and left running; returns a line for each process stopped.
    The topmost processes are asked first, so that a daemon stops its own children (dockerd its
    containerd and containers) before anything is killed."""
    left = session_processes(token)
    stopped = []
    for process in left:
        try:
            stopped.append(f"{process.pid} {' '.join(process.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            continue
    pids = {process.pid for process in left}
    topmost = [process for process in left if _parent_pid(process) not in pids]
    for group in (topmost, left):
        for process in group:
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(group, timeout=grace_s)
    _, left = psutil.wait_procs(left, timeout=0)
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=grace_s)
    return stopped


def mount_points() -> set[str]:
    """This machine's mount points, as /proc/self/mountinfo lists them (the kernel writes a space,
    tab, newline or backslash in a path as a three-digit octal escape)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return {re.sub(r"\\([0-7]{3})", lambda code: chr(int(code.group(1), 8)), line.split()[4]) for line in lines}


def unmount_left_mounts(before: set[str], roots: list[Path]) -> list[str]:
    """Unmount (lazily, deepest first) the mounts made since `before` under any of `roots`;
    returns the mount points unmounted."""
    resolved = [root.resolve() for root in roots]
    left = [point for point in mount_points() - before
            if any(Path(point) == root or root in Path(point).parents for root in resolved)]
    unmounted = []
    for point in sorted(left, key=len, reverse=True):
        if subprocess.run(["umount", "-l", point], capture_output=True).returncode == 0:
            unmounted.append(point)
    return unmounted


def _state_roots() -> list[Path]:
    return [Path(os.environ[name]) for name in STATE_VARIABLES if os.environ.get(name)]


def _parent_pid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def _terminated(signum, frame):
    # A terminated session (a CI time limit, `kill`) ends like an interrupted one: pytest still runs
    # pytest_sessionfinish, which stops what the tests started.
    raise KeyboardInterrupt(f"signal {signum}")


def _xdist_worker(config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else None


def pytest_configure(config):
    worker = _xdist_worker(config)
    # A worker inherits the controller's environment, token included.
    os.environ[MARKER] = f"{os.environ[MARKER]}/{worker}" if worker and MARKER in os.environ else uuid.uuid4().hex
    _MOUNTS_AT_START.update(mount_points())
    signal.signal(signal.SIGTERM, _terminated)


def pytest_sessionfinish(session, exitstatus):
    stopped = stop_session_processes(os.environ[MARKER])
    unmounted = [] if _xdist_worker(session.config) else unmount_left_mounts(_MOUNTS_AT_START, _state_roots())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if stopped and reporter:
        reporter.write_line(f"stopped {len(stopped)} process(es) the tests left running:\n  " + "\n  ".join(stopped), yellow=True)
    if unmounted and reporter:
        reporter.write_line(f"unmounted {len(unmounted)} mount(s) the tests left:\n  " + "\n  ".join(unmounted), yellow=True)
