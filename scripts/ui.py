"""`make ui`: the ZenML dashboard (local ZenML server) and the MLflow UI, both on 127.0.0.1.

    python scripts/ui.py [--zenml-port 8237] [--mlflow-port 5000]

Prints both URLs once they answer, the dashboard's on its pipeline runs; Ctrl-C (or SIGTERM) stops
both, and the ZenML client goes back to the local store it used before.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mbad.tracking import tracking_uri  # noqa: E402

BIN = Path(sys.executable).parent


def wait_until_up(url: str, process: subprocess.Popen | None, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server behind {url} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


def complete_first_use(zenml_url: str) -> None:
    """Answers the local server's first-use form for its default user (no e-mail, no updates), which
    the dashboard otherwise shows in place of every page until someone fills it in.

    Imported here because the client must read the configuration `zenml login --local` just wrote.
    The form is saved through /current-user, as the dashboard saves it: the /users endpoint behind
    `Client.update_user` drops `email_opted_in`, the field the dashboard checks first.
    """
    from zenml.client import Client
    from zenml.constants import CURRENT_USER
    from zenml.models import UserUpdate

    client = Client()
    if client.zen_store.url != zenml_url:
        raise RuntimeError(f"the ZenML client is connected to {client.zen_store.url}, not to the local server at {zenml_url}")
    user = client.active_user
    answers = {**user.user_metadata, "finished_onboarding_survey": True}
    client.zen_store.put(CURRENT_USER, body=UserUpdate(email_opted_in=False, user_metadata=answers))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zenml-port", type=int, default=int(os.environ.get("ZENML_PORT", "8237")))
    parser.add_argument("--mlflow-port", type=int, default=int(os.environ.get("MLFLOW_PORT", "5000")))
    args = parser.parse_args()
    stopping = False

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    mlflow_ui = None
    zenml_started = False
    try:
        subprocess.run([str(BIN / "zenml"), "login", "--local", "--ip-address", "127.0.0.1", "--port", str(args.zenml_port)],
                       check=True, stdout=subprocess.DEVNULL)
        zenml_started = True
        mlflow_ui = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", tracking_uri(), "--host", "127.0.0.1",
                                      "--port", str(args.mlflow_port)], start_new_session=True)
        zenml_url, mlflow_url = f"http://127.0.0.1:{args.zenml_port}", f"http://127.0.0.1:{args.mlflow_port}"
        wait_until_up(f"{zenml_url}/health", None)
        wait_until_up(f"{mlflow_url}/health", mlflow_ui)
        complete_first_use(zenml_url)
        print(f"ZenML dashboard: {zenml_url}/projects/default/runs\nMLflow UI:       {mlflow_url}\n(Ctrl-C stops both)", flush=True)
        while not stopping and mlflow_ui.poll() is None:
            time.sleep(0.5)
    finally:
        if mlflow_ui is not None and mlflow_ui.poll() is None:
            os.killpg(mlflow_ui.pid, signal.SIGTERM)
            try:
                mlflow_ui.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(mlflow_ui.pid, signal.SIGKILL)
        if zenml_started:
            subprocess.run([str(BIN / "zenml"), "logout", "--local"], check=False, stdout=subprocess.DEVNULL)
        print("stopped the ZenML dashboard and the MLflow UI", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
