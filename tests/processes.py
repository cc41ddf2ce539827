"""Nothing a test starts outlives the test session: servers, daemons (the private dockerd and its
containerd), bench workers.

Every process a test starts inherits MBAD_TEST_SESSION, a token new to each session, from the
environment, even when it detaches into a session of its own (start_new_session, a daemon's
double fork). When the session ends, passed, failed, interrupted or terminated, every process
that still carries this session's token is asked to stop (SIGTERM: dockerd then unmounts its
state) and killed after a grace period. Loaded by tests/conftest.py; `-p tests.processes` loads
it into any pytest session.
"""

from __future__ import annotations

import os
import signal
import uuid

import psutil

MARKER = "MBAD_TEST_SESSION"
GRACE_S = 30.0


def session_processes(token: str) -> list[psutil.Process]:
    """The live processes, other than this one, whose environment carries `token`."""
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(MARKER) == token and process.status() != psutil.STATUS_ZOMBIE:
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


def _parent_pid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def _terminated(signum, frame):
    # A terminated session (a CI time limit, `kill`) ends like an interrupted one: pytest still runs
    # pytest_sessionfinish, which stops what the tests started.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    os.environ[MARKER] = uuid.uuid4().hex
    signal.signal(signal.SIGTERM, _terminated)


def pytest_sessionfinish(session, exitstatus):
    stopped = stop_session_processes(os.environ[MARKER])
    if stopped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"stopped {len(stopped)} process(es) the tests left running:\n  " + "\n  ".join(stopped)
        if reporter:
            reporter.write_line(message, yellow=True)
