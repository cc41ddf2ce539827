"""A real `mlflow server` process (SQLite backend, loopback only) that a test can stop and restart,
a context that points MLflow and the ZenML stack at it, and helpers for promotion tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from mlflow import MlflowClient

from mbad.tracking import tracking_uri

REPO_ROOT = Path(__file__).resolve().parents[2]
# Fail fast when the server is down (MLflow's default retries wait for minutes).
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
MODEL = "mbad-detox"
# The tiny model's numbers mean nothing: tests pick thresholds that make the outcome certain
# (the gate's arithmetic is unit-tested). No tiny model fails LENIENT or passes STRICT.
# A gate every version passes. Its toxicity claim is the total change: a tiny model's gibberish
# often leaves a language group empty, where the within-language change is not estimable and so
# cannot pass (the within-language claim is tested on evidence made for it, tests/unit/test_gate.py).
LENIENT = {"min_toxicity_reduction_pct": -1e6, "max_perplexity_increase_pct": 1e6, "max_empty_share_increase": 1e6,
           "max_fidelity_drop": 1e6, "champion_toxicity_tolerance": 1e6, "champion_perplexity_tolerance_pct": 1e6,
           "min_prompts_per_language": 1, "min_judge_auc": 0.5, "statistics": {"n_resamples": 1000},
           "toxicity_claim": "total"}
STRICT = {**LENIENT, "min_toxicity_reduction_pct": 1000.0}  # toxicity must fall by 1000 %


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """`credentials` (user, password): MLflow's `basic-auth` app, with that user as its admin;
    every request but /health then needs them."""

    def __init__(self, root: Path, credentials: tuple[str, str] | None = None):
        self.root = root
        self.port = _free_port()
        self.credentials = credentials
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240) -> None:
        """Start on the same database and port as before (a restart keeps the registry)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        command = [str(Path(sys.executable).parent / "mlflow"), "server",
                   "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--artifacts-destination", str(self.root / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        if self.credentials:
            auth_config = self.root / "basic_auth.ini"
            auth_config.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{self.root / 'basic_auth.db'}\n"
                f"admin_username = {self.credentials[0]}\nadmin_password = {self.credentials[1]}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(auth_config), MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())
            command += ["--app-name", "basic-auth"]
        with open(self.root / "server.log", "ab") as log:
            # Its own process group, so that stop() ends the server and its workers, nothing else.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"mlflow server at {self.uri} did not answer within {timeout_s} s")

    def stop(self) -> None:
        """Kill it (MLflow going away, not a clean shutdown)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _setup_stack() -> None:
    """`make setup` in a subprocess, then make this process see the re-pointed tracker. ZenML
    caches the active stack in-process (keyed by the stack's last update, and once more for runs,
    which name the stack in ZENML_ACTIVE_STACK_ID): touch the stack, re-activate it, drop the run cache."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "setup_stack.py")], check=True, env=os.environ.copy())
    client = Client()
    stack = client.active_stack_model
    tracker = stack.components[StackComponentType.EXPERIMENT_TRACKER][0].name
    client.update_stack(stack.id, component_updates={StackComponentType.EXPERIMENT_TRACKER: [tracker]})
    client.activate_stack(stack.id)
    client._active_stack = None  # what runs use: refetched (now with the new update time) at the next run
    assert client.active_stack.experiment_tracker.get_tracking_uri() == tracking_uri()


CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@contextmanager
def registry_served_by(server: MlflowServer) -> Iterator[MlflowServer]:
    """MLFLOW_TRACKING_URI and the stack's MLflow tracker point at `server` inside the block. A
    server with credentials: `make setup` puts them into the tracker's ZenML secret, and the block
    starts with none in the environment (every step must take them from the stack)."""
    saved = {key: os.environ.get(key) for key in ["MLFLOW_TRACKING_URI", *CREDENTIALS, *CLIENT_ENV]}
    os.environ.update({"MLFLOW_TRACKING_URI": server.uri, **CLIENT_ENV})
    for key in CREDENTIALS:
        os.environ.pop(key, None)
    if server.credentials:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = server.credentials
    try:
        _setup_stack()
        for key in CREDENTIALS:
            os.environ.pop(key, None)
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _setup_stack()


@contextmanager
def serving(server: MlflowServer) -> Iterator[MlflowServer]:
    """Start `server`, point MLflow and the stack at it (`registry_served_by`), stop it after."""
    server.start()
    try:
        with registry_served_by(server):
            yield server
    finally:
        server.stop()


def set_aliases(server: MlflowServer, champion: str | None, previous: str | None = None) -> MlflowClient:
    """Put the registry in a known state (each test says where it starts)."""
    client = MlflowClient(server.uri)
    for alias, version in {"champion": champion, "previous": previous}.items():
        if version:
            client.set_registered_model_alias(MODEL, alias, version)
        else:
            client.delete_registered_model_alias(MODEL, alias)
    return client


def run_promotion(stack, tmp_path: Path, **config):
    from pipelines.promotion import promote_model

    path = tmp_path / "promote.yaml"
    path.write_text(yaml.safe_dump({"enable_cache": True, "parameters": {"config": {"model_name": MODEL, **config}}}))
    return stack.get_pipeline_run(promote_model.with_options(config_path=str(path))().id)
