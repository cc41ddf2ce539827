"""What a user sees and serves after a run: the MLflow run's dataset, completions table,
description and model card; `make ui` (ZenML dashboard + MLflow UI) over HTTP and in a headless
browser; `make serve` (`mlflow models serve`) answering prompts and refusing bad payloads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mbad.tracking import tracking_uri

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "mbad-detox"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(url: str, body: bytes | None = None, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the server for {url} exited with {process.returncode}:\n{output[-3000:]}")
        try:
            if http(url, timeout=3)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(url)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def registered(stack, tiny_training_run):
    """The session's tiny detox_training run: (MLflow run id, registered version, ZenML run name)."""
    _, run = tiny_training_run
    steps = stack.get_pipeline_run(run.id).steps
    version = steps["register_model"].run_metadata["mlflow_model_version"]
    return str(steps["report"].run_metadata["mlflow_run_id"]), str(version), run.name


def test_run_has_dataset_completions_description_and_card(registered, tmp_path):
    run_id, version, _ = registered
    client = MlflowClient(tracking_uri())
    run = client.get_run(run_id)
    # The data as an MLflow dataset input, the data hash as its digest, the source named.
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == run.data.params["data_hash"]
    assert "multiparadetox" in dataset_input.dataset.source
    # Every completion with its score and detected language, as a table.
    mlflow.set_tracking_uri(tracking_uri())
    table = mlflow.load_table("completions.json", run_ids=[run_id])
    assert set(table["model"]) == {"base", "tuned"}
    assert {"prompt", "lang", "sample", "completion", "score", "detected_lang"} <= set(table.columns)
    assert set(table["lang"]) == {"en", "ru", "zh"} and len(table) == 2 * 3 * 3
    description = run.data.tags["mlflow.note.content"]
    assert "trained on the MultiParaDetox" in description and "en" in description
    # The model card: the version's description and the adapter's README.md, the same text.
    card = client.get_model_version(MODEL, version).description
    assert "## Results" in card and "[" in card and "Toxicity judge" in card and "Limitations" in card
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version}", dst_path=str(tmp_path)))
    readme = next(local.rglob("README.md"))
    assert readme.read_text(encoding="utf-8") == card
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements and all("==" in line for line in requirements), requirements
    assert any(line.startswith("torch==") for line in requirements)


def test_serve_answers_prompts_and_refuses_bad_payloads(registered):
    _, version, _ = registered
    client = MlflowClient(tracking_uri())
    client.set_registered_model_alias(MODEL, "served", version)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "serve.py"), "--alias", "served", "--port", str(port)],
                              env=os.environ | {"MBAD_SERVE_DEVICE": "cpu"}, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/ping", server)
        prompts = {"inputs": ["Complete the sentence: you are", "Complete the sentence: ты"]}
        status, body = http(f"{url}/invocations", json.dumps(prompts).encode())
        assert status == 200, body
        predictions = json.loads(body)["predictions"]
        assert len(predictions) == 2 and all(isinstance(text, str) for text in predictions)
        for bad in (b"not json", b"{}", b'{"inputs": []}', b'{"inputs": [1, 2]}', b'{"inputs": "one string"}', b'{"inputs": [""]}'):
            status, body = http(f"{url}/invocations", bad)
            assert 400 <= status < 500, (bad, status, body)
            error = json.loads(body)
            assert "message" in error and "Traceback" not in error["message"], (bad, error)
    finally:
        stop(server)
        client.delete_registered_model_alias(MODEL, "served")  # the registry is shared by the session's tests


def test_serve_without_the_alias_says_so(registered):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "serve.py"), "--alias", "nobody", "--port", str(free_port())],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no version of 'mbad-detox' carries the alias 'nobody'" in result.stderr and "Traceback" not in result.stderr


def test_ui_serves_the_dashboard_the_run_and_its_completions(registered, tmp_path):
    run_id, _, zenml_run_name = registered
    zenml_port, mlflow_port = free_port(), free_port()
    ui = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "ui.py"), "--zenml-port", str(zenml_port),
                           "--mlflow-port", str(mlflow_port)], start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    zenml_url, mlflow_url = f"http://127.0.0.1:{zenml_port}", f"http://127.0.0.1:{mlflow_port}"
    try:
        wait_for(f"{mlflow_url}/health", ui)
        wait_for(f"{zenml_url}/health", ui)
        status, page = http(zenml_url)
        assert status == 200 and b"ZenML Dashboard" in page
        status, runs = http(f"{zenml_url}/api/v1/runs?name={zenml_run_name}")
        assert status == 200 and json.loads(runs)["total"] == 1
        status, completions = http(f"{mlflow_url}/get-artifact?path=completions.json&run_uuid={run_id}")
        assert status == 200
        table = json.loads(completions)
        assert "completion" in table["columns"] and len(table["data"]) == 18
        experiment_id = MlflowClient(tracking_uri()).get_run(run_id).info.experiment_id
        screenshot = tmp_path / "run.png"
        browse(f"{mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}", f"--screenshot={screenshot}")
        assert_not_blank(screenshot)
        # The dashboard's runs page shows the run, not ZenML's first-use form.
        runs_page = f"{zenml_url}/projects/default/runs"
        assert f"ZenML dashboard: {runs_page}" in read_until(ui, "ZenML dashboard: ")
        dom = browse(runs_page, "--dump-dom")
        assert zenml_run_name in dom and "Add your account details" not in dom, dom[-3000:]
        screenshot = tmp_path / "zenml_runs.png"
        browse(runs_page, f"--screenshot={screenshot}")
        assert_not_blank(screenshot)
    finally:
        stop(ui, signal.SIGINT)
    assert ui.returncode == 0, ui.stdout.read()
    for url in (zenml_url, mlflow_url):
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/health", timeout=3)


def test_ui_lists_every_completion_as_a_trace_of_the_run(registered, tmp_path):
    run_id, _, _ = registered
    mlflow.set_tracking_uri(tracking_uri())
    table = mlflow.load_table("completions.json", run_ids=[run_id])
    traces = mlflow.search_traces(run_id=run_id, return_type="list")
    assert len(traces) == len(table) == 18
    # One trace per completion: its model, prompt language, pair, sample and text, scored by the run's judge.
    roots = [trace.data.spans[0] for trace in traces]
    logged = sorted((span.inputs["model"], span.inputs["prompt_language"], str(span.inputs["pair_id"]), span.inputs["sample"],
                     span.outputs) for span in roots)
    columns = [table["model"], table["lang"], table["pair_id"].astype(str), table["sample"], table["completion"]]
    assert logged == sorted(zip(*columns, strict=True))
    judges = {a.source.source_id for t in traces for a in t.info.assessments if a.name == "toxicity"}
    assert judges == set(table["judge"]) and all(t.info.request_metadata["mlflow.sourceRun"] == run_id for t in traces)
    # Completions as the UI shows them (JSON strings) whose text the DOM keeps as is: the tiny model's
    # output can hold a partial UTF-8 character (U+FFFD), which the page may render differently.
    shown = [text for text in table["completion"] if text.strip() and "\ufffd" not in text
             and json.dumps(text, ensure_ascii=False)[1:-1] == text and not set(text) & set("&<>")]
    trace_ids = [trace.info.trace_id for trace in traces]
    port = free_port()
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", tracking_uri(),
                           "--host", "127.0.0.1", "--port", str(port)], start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    mlflow_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{mlflow_url}/health", ui)
        experiment_id = MlflowClient(tracking_uri()).get_run(run_id).info.experiment_id
        traces_tab = f"{mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}/traces"
        # The traces arrive after the page has loaded: on a busy machine a later look waits longer.
        for budget_ms in (20000, 40000, 80000):
            dom = browse(traces_tab, "--dump-dom", budget_ms=budget_ms)
            listed = [trace_id for trace_id in trace_ids if trace_id in dom]
            if len(listed) == len(trace_ids) and all(f'"{text}"' in dom for text in shown):
                break
        # Every completion's trace is a row of the run's evaluation view, with its text.
        assert len(listed) == len(trace_ids), f"{len(listed)} of {len(trace_ids)} traces in the page"
        assert [text for text in shown if f'"{text}"' not in dom] == []
        screenshot = tmp_path / "traces.png"
        browse(traces_tab, "--window-size=2200,900", f"--screenshot={screenshot}", budget_ms=20000)
        assert_not_blank(screenshot)
    finally:
        stop(ui)


def browse(url: str, *action: str, budget_ms: int = 15000) -> str:
    """What headless Chromium makes of a page once its scripts have run: the DOM for --dump-dom.
    Without WebGL: the ZenML dashboard's software-rendered WebGL keeps a screenshot from ever finishing.
    On a loaded machine Chromium now and then never finishes a page: a process that hangs is killed
    and a new one loads the page once more; a second hang fails the test."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is missing: `make test` installs Debian's chromium"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000",
               "--disable-3d-apis", f"--virtual-time-budget={budget_ms}", *action, url]
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout
    except subprocess.TimeoutExpired:
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout


def read_until(process: subprocess.Popen, marker: str) -> str:
    """The process's output up to and including the first line that contains the marker."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"{marker!r} never came; the output was:\n{''.join(lines)[-3000:]}")


def assert_not_blank(png: Path) -> None:
    """A rendered page: many distinct colours and some dark text pixels, not one flat colour."""
    import numpy as np
    from matplotlib.image import imread

    pixels = imread(str(png))[..., :3].reshape(-1, 3)
    distinct = len(np.unique((pixels * 255).astype(np.uint8), axis=0))
    dark_share = float((pixels.mean(axis=1) < 0.4).mean())
    assert distinct > 50 and dark_share > 0.002, (distinct, dark_share)
