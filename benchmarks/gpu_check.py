"""The GPU check: LoRA (and QLoRA) training and batched generation throughput of gemma-3-270m in
bf16, and the model FLOPs utilisation (MFU) of the training step.

    benchmarks/gpu_check.sh prepare     # here: what the GPU machine needs, under .mbad/gpu_check
    benchmarks/gpu_check.sh             # there (prints a table, writes $OUT/gpu_check.json)
    python benchmarks/gpu_check.py --model-dir DIR --data-dir DIR --smoke   # CPU, tiny model: checks this script

A model directory with only config.json and the tokenizer gets random weights (the 1 GB of
gemma's weights cannot travel to the GPU machine): throughput and MFU do not depend on weight values.
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import mbad.eval.probes  # noqa: E402
import mbad.eval.probes.scoring  # noqa: E402
import mbad.train.loop  # noqa: E402
import mbad.train.sft  # noqa: E402
from benchmarks.sections import seed_loop_generate  # noqa: E402
from mbad.config import GenerationConfig, ModelConfig, TrainConfig  # noqa: E402
from mbad.data import load_directory, select  # noqa: E402
from mbad.generation import build_prompts, generate_completions  # noqa: E402
from mbad.models import LoadedModel, load_base_model  # noqa: E402

# Dense bf16 peak of an H100/H200 SXM by NVIDIA's datasheet (989.4 TFLOP/s without sparsity).
DATASHEET_BF16_PEAK = 989.4e12


@dataclass(frozen=True)
class Sizes:
    prompts: int = 256
    new_tokens: int = 48
    generation_batches: tuple[int, ...] = (64, 256)
    seed_loop_prompts: int = 8
    train_examples: int = 300
    train_epochs: int = 2
    train_batches: tuple[int, ...] = (8, 64, 256)
    perplexity_sentences: int = 512


SMOKE = Sizes(prompts=8, new_tokens=4, generation_batches=(4,), seed_loop_prompts=2, train_examples=16, train_epochs=1,
              train_batches=(4,), perplexity_sentences=8)


def model_directory(model_dir: Path, device: torch.device, scratch: Path) -> Path:
    """`model_dir` itself when it holds weights, else the same architecture with random bf16 weights."""
    for packed in model_dir.glob("*.xz"):  # the tokenizer travels compressed
        target = packed.with_suffix("")
        if not target.exists():
            target.write_bytes(lzma.decompress(packed.read_bytes()))
    if any(model_dir.glob("*.safetensors")):
        return model_dir
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=dtype)
    target = scratch / "random-weights"
    model.save_pretrained(target)
    for path in model_dir.iterdir():
        if path.name != "config.json" and path.suffix != ".xz":
            shutil.copy(path, target / path.name)
    return target


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def matmul_tflops(size: int = 8192, repeats: int = 10) -> float | None:
    """The bf16 matrix-product rate actually reachable on this GPU (random data)."""
    if not torch.cuda.is_available():
        return None
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    synchronize()
    return 2 * size**3 * repeats / (start.elapsed_time(end) / 1000) / 1e12


@torch.inference_mode()
def hf_sampler_generate(loaded: LoadedModel, prompts: list[str], config: GenerationConfig) -> None:
    """Batched like ours, but sampling through `generate`'s own top-k/top-p (the A/B of our sampler)."""
    tokenizer = loaded.tokenizer
    encoded = tokenizer(prompts)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    torch.manual_seed(config.seed)
    for start in range(0, len(order), config.batch_size):
        rows = [encoded[i] for i in order[start:start + config.batch_size]]
        batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(loaded.device)
        loaded.model.generate(**batch, do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                              max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id)


def timed(function, *args) -> float:
    synchronize()
    started = time.perf_counter()
    function(*args)
    synchronize()
    return time.perf_counter() - started


def check_generation(loaded: LoadedModel, prompts: list[str], sizes: Sizes) -> dict:
    """Ours vs the same batching with HF's sampler, alternated twice (the first of each pays for new
    shapes: allocator growth, kernel selection), best of two; then the seed loop on a few prompts."""
    results: dict = {"prompts": len(prompts), "max_new_tokens": sizes.new_tokens}
    tokens = len(prompts) * sizes.new_tokens
    for batch in sizes.generation_batches:
        config = GenerationConfig(max_new_tokens=sizes.new_tokens, batch_size=batch)
        seconds: dict[str, list[float]] = {"ours": [], "hf": []}
        for _ in range(2):
            seconds["ours"].append(timed(generate_completions, loaded, prompts, config))
            seconds["hf"].append(timed(hf_sampler_generate, loaded, prompts, config))
        ours, hf = min(seconds["ours"]), min(seconds["hf"])
        results[f"batch_{batch}"] = {"ours_tokens_per_s": tokens / ours, "hf_sampler_tokens_per_s": tokens / hf,
                                     "sampler_speedup": hf / ours, "seconds": seconds}
    loop_prompts = prompts[:: max(1, len(prompts) // sizes.seed_loop_prompts)][: sizes.seed_loop_prompts]
    config = GenerationConfig(max_new_tokens=sizes.new_tokens)
    seed_loop_generate(loaded, loop_prompts[:1], config)  # warm-up
    loop = timed(seed_loop_generate, loaded, loop_prompts, config)
    results["seed_loop"] = {"prompts": len(loop_prompts), "tokens_per_s": len(loop_prompts) * sizes.new_tokens / loop}
    best = max(value["ours_tokens_per_s"] for key, value in results.items() if key.startswith("batch_"))
    results["speedup_vs_seed_loop"] = best / results["seed_loop"]["tokens_per_s"]
    return results


def train_once(model_dir: Path, texts: list[str], batch: int, epochs: int, quantization: str = "none",
               fused: bool = True) -> dict:
    model = ModelConfig(name_or_path=str(model_dir), quantization=quantization)
    loaded = load_base_model(model)
    n_params = sum(p.numel() for p in loaded.model.parameters())  # tied embeddings counted once
    split = mbad.train.loop.split_lm_head
    if not fused:  # the A/B of the fused output projection + loss
        mbad.train.loop.split_lm_head = lambda model: None
    try:
        with tempfile.TemporaryDirectory() as scratch:
            config = TrainConfig(batch_size=batch, epochs=epochs, checkpoint_every=0)
            train = mbad.train.sft.train_sft_adapter
            # Warm-up on every batch shape of the measured run (one epoch), then the run itself.
            train(texts, model, config.model_copy(update={"epochs": 1}), Path(scratch) / "warm", loaded=loaded)
            reset_peak()
            summary = train(texts, model, config, Path(scratch) / "adapter", loaded=loaded)
    finally:
        mbad.train.loop.split_lm_head = split
    return {"batch_size": batch, "quantization": quantization, "fused_loss": fused, "steps": summary.steps,
            "tokens": summary.tokens, "tokens_per_s": summary.tokens_per_second, "params": n_params,
            "peak_memory_mb": peak_mb(), "final_loss": summary.final_loss}


def with_mfu(result: dict, peaks: dict[str, float | None]) -> dict:
    """6 x params x tokens/s over a peak: the usual dense-training count (forward 2N, backward 4N). LoRA
    computes no weight gradients for the frozen base, so the FLOPs actually done are nearer 4N."""
    flops = 6 * result["params"] * result["tokens_per_s"]
    result["model_tflops_per_s"] = flops / 1e12
    for name, peak in peaks.items():
        result[f"mfu_vs_{name}"] = flops / peak if peak else None
    return result


def check_training(model_dir: Path, texts: list[str], sizes: Sizes, peaks: dict) -> dict:
    runs = [train_once(model_dir, texts, batch, sizes.train_epochs) for batch in sizes.train_batches]
    runs += [train_once(model_dir, texts, batch, sizes.train_epochs, fused=False) for batch in sizes.train_batches[-2:]]
    runs.append(train_once(model_dir, texts, sizes.train_batches[-1], sizes.train_epochs))  # order effects?
    try:
        import bitsandbytes  # noqa: F401

        qlora = torch.cuda.is_available()
    except ImportError:
        qlora = False
    qlora_error = None
    if qlora:
        try:
            runs.append(train_once(model_dir, texts, sizes.train_batches[-1], sizes.train_epochs, quantization="4bit"))
        except Exception as error:  # keep the LoRA figures
            traceback.print_exc()
            qlora_error = repr(error)
    for run in runs:  # a 4-bit model packs two weights per element: count the bf16 model's parameters
        run["params"] = runs[0]["params"]
    return {"examples": len(texts), "epochs": sizes.train_epochs, "qlora_checked": qlora, "qlora_error": qlora_error,
            "runs": [with_mfu(run, peaks) for run in runs]}


def check_perplexity(loaded: LoadedModel, texts: list[str]) -> dict:
    """The fused output projection vs full logits, alternated twice, best of two."""
    seconds: dict[str, list[float]] = {"fused": [], "full_logits": []}
    split = mbad.eval.probes.scoring.split_lm_head
    peaks = {}
    for _ in range(2):
        for name in seconds:
            mbad.eval.probes.scoring.split_lm_head = split if name == "fused" else (lambda model: None)
            try:
                reset_peak()
                seconds[name].append(timed(mbad.eval.probes.mean_token_nll, loaded, texts, 64))
                peaks[name] = peak_mb()
            finally:
                mbad.eval.probes.scoring.split_lm_head = split
    return {name: {"sentences_per_s": len(texts) / min(times), "peak_memory_mb": peaks[name], "seconds": times}
            for name, times in seconds.items()}


def markdown(report: dict) -> str:
    lines = [f"GPU check, {report['date']}, {report['device']} (torch {report['torch']}, CUDA {report['cuda']}); "
             f"model: {report['model']}; measured bf16 matmul peak: {report['matmul_tflops']} TFLOP/s", "",
             "| what | batch | tokens/s | MFU (datasheet 989 TF) | MFU (measured peak) | peak memory MB |", "|---|---|---|---|---|---|"]
    for run in report["training"].get("runs", []):
        kind = ("QLoRA 4-bit" if run["quantization"] == "4bit" else "LoRA") + ("" if run["fused_loss"] else ", HF loss")
        mfu = [f"{100 * run[key]:.1f} %" if run.get(key) else "-" for key in ("mfu_vs_datasheet", "mfu_vs_measured")]
        lines.append(f"| train {kind} | {run['batch_size']} | {run['tokens_per_s']:,.0f} | {mfu[0]} | {mfu[1]} | "
                     f"{run['peak_memory_mb'] or 0:,.0f} |")
    generation = report["generation"]
    if "error" in generation or "error" in report["perplexity"]:
        return "\n".join(lines + [f"errors: {generation.get('error')} {report['perplexity'].get('error')}"])
    for key, value in generation.items():
        if key.startswith("batch_"):
            lines.append(f"| generate, ours (HF sampler) | {key[6:]} | {value['ours_tokens_per_s']:,.0f} "
                         f"({value['hf_sampler_tokens_per_s']:,.0f}) | | | |")
    lines.append(f"| generate, seed loop | 1 | {generation['seed_loop']['tokens_per_s']:,.0f} | | | |")
    lines.append(f"\nbatched generation vs seed loop: {generation['speedup_vs_seed_loop']:.0f}x; perplexity: "
                 + ", ".join(f"{name} {value['sentences_per_s']:,.0f} sentences/s ({value['peak_memory_mb'] or 0:,.0f} MB)"
                             for name, value in report["perplexity"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="MultiParaDetox CSV files")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script on a CPU")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else Sizes()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pairs = load_directory(args.data_dir)
    test = select(pairs, "test")
    prompts = build_prompts(test["toxic"].tolist(), test["lang"].tolist(), GenerationConfig().protocol)[: sizes.prompts]
    texts = select(pairs, "train", ["en"], max_per_language=sizes.train_examples)["neutral"].tolist()
    sentences = test["neutral"].tolist()[: sizes.perplexity_sentences]

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = model_directory(args.model_dir, device, Path(scratch))
        measured = matmul_tflops()
        peaks = {"datasheet": DATASHEET_BF16_PEAK if device.type == "cuda" else None,
                 "measured": measured * 1e12 if measured else None}
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda, "model": f"{args.model_dir.name} ({'given' if model_dir == args.model_dir else 'random'} weights)",
            "matmul_tflops": round(measured, 1) if measured else None,
            "peak_used_for_mfu": "989.4 TFLOP/s dense bf16 (H100/H200 SXM datasheet); also the measured matmul rate",
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        loaded = load_base_model(ModelConfig(name_or_path=str(model_dir)))
        for name, check in (("generation", lambda: check_generation(loaded, prompts, sizes)),
                            ("perplexity", lambda: check_perplexity(loaded, sentences)),
                            ("training", lambda: check_training(model_dir, texts, sizes, peaks))):
            started = time.perf_counter()
            try:
                report[name] = check()
            except Exception as error:  # one lease, one call: record it and go on with the other checks
                traceback.print_exc()
                report[name] = {"error": repr(error)}
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
            args.out.write_text(json.dumps(report, indent=2))  # what is done survives a timeout
    print("\n" + markdown(report))


if __name__ == "__main__":
    main()
