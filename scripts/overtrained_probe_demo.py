"""The knowledge probes can fail: base vs a deliberately over-trained adapter, per language.

Trains a LoRA adapter far past what the recipe does (a high learning rate, many epochs, a few
dozen neutral sentences of one language), then runs every knowledge probe on the base and the
over-trained model and prints a markdown table: the figure of each, its change, and on how
many of the probe's items the over-trained model is worse and better (a perplexity item: NLL
per token; an accuracy item: right or wrong).

    .venv/bin/python scripts/overtrained_probe_demo.py            # gemma-3-270m
    .venv/bin/python scripts/overtrained_probe_demo.py --help
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mbad.adapters import load_adapter  # noqa: E402
from mbad.config import PAPER_LANGUAGES, DataConfig, KnowledgeConfig, ModelConfig, TrainConfig  # noqa: E402
from mbad.data import load_pairs, select  # noqa: E402
from mbad.eval.probes import PROBES, run_probes, summarise_probes  # noqa: E402
from mbad.models import load_base_model  # noqa: E402
from mbad.train.sft import train_sft_adapter  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:gemma-3-270m")
    parser.add_argument("--source", default="en", help="the one language the adapter is trained on")
    parser.add_argument("--sentences", type=int, default=32, help="neutral train sentences (role adapter)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--languages", nargs="+", default=PAPER_LANGUAGES)
    parser.add_argument("--max-sentences", type=int, default=16, help="indomain_perplexity items per language")
    parser.add_argument("--max-articles", type=int, default=8, help="udhr_perplexity items per language")
    parser.add_argument("--max-facts", type=int, default=30, help="capitals_accuracy items per language")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def worse_and_better(base: pd.DataFrame, tuned: pd.DataFrame) -> pd.Series:
    """Per (probe, lang): "worse / better of n", the items on which the over-trained model is worse
    and better than the base (perplexity items: NLL per token; accuracy items: right or wrong)."""
    paired = base.merge(tuned, on=["probe", "lang", "item"], suffixes=("_base", "_tuned"))
    change = paired["value_tuned"] / paired["weight_tuned"] - paired["value_base"] / paired["weight_base"]
    sign = paired["probe"].map(lambda name: 1 if PROBES[name].higher_is_better else -1)
    paired["worse"], paired["better"] = (sign * change < 0).astype(int), (sign * change > 0).astype(int)
    counts = paired.groupby(["probe", "lang"]).agg(worse=("worse", "sum"), better=("better", "sum"), n=("item", "size"))
    return counts["worse"].astype(str) + " / " + counts["better"].astype(str) + " of " + counts["n"].astype(str)


def markdown_table(base: pd.DataFrame, tuned: pd.DataFrame) -> str:
    base_summary, tuned_summary = summarise_probes(base), summarise_probes(tuned)
    worse = worse_and_better(base, tuned)
    lines = ["| probe | lang | base | over-trained | change | items worse / better |", "|---|---|---|---|---|---|"]
    for name in base_summary:
        probe = PROBES[name]
        for lang, before in base_summary[name].items():
            after = tuned_summary[name][lang]
            if probe.kind == "accuracy":
                change = f"{after - before:+.2f}"
                figures = f"{before:.2f} | {after:.2f}"
            else:
                change = f"{100 * (after - before) / before:+.0f} %"
                figures = f"{before:.1f} | {after:.1f}"
            lines.append(f"| {name} | {lang} | {figures} | {change} | {worse[(name, lang)]} |")
    chance = ", ".join(f"{name} {probe.chance:.2f}" for name, probe in PROBES.items() if probe.chance is not None)
    return "\n".join(lines) + f"\n\nChance: {chance}. Perplexity: lower is better; accuracy: higher is better."


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    pairs = load_pairs(DataConfig())
    model_config = ModelConfig(name_or_path=args.model)
    train_config = TrainConfig(source_languages=[args.source], learning_rate=args.learning_rate, epochs=args.epochs,
                               batch_size=args.batch_size, checkpoint_every=0)
    knowledge = KnowledgeConfig(max_sentences_per_language=args.max_sentences, max_articles_per_language=args.max_articles,
                                max_facts_per_language=args.max_facts, seed=args.seed)
    texts = select(pairs, "train", [args.source], max_per_language=args.sentences, role="adapter")["neutral"].tolist()
    test_pairs = select(pairs, "test", args.languages)

    loaded = load_base_model(model_config)
    base = run_probes(loaded, test_pairs, knowledge)
    probed = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mbad-overtrained-") as scratch:
        summary = train_sft_adapter(texts, model_config, train_config, Path(scratch) / "adapter", loaded=loaded)
        trained = time.perf_counter()
        tuned = run_probes(load_adapter(loaded, Path(scratch) / "adapter"), test_pairs, knowledge)
    finished = time.perf_counter()

    print(f"\nmbad: knowledge probes, {args.model} base vs an over-trained LoRA adapter\n")
    print(f"Adapter: {len(texts)} neutral {args.source} train sentences (role adapter), {args.epochs} epochs, "
          f"lr {args.learning_rate:g}, batch {args.batch_size}, LoRA r={train_config.lora.r} alpha={train_config.lora.alpha}, "
          f"seed {train_config.seed}: {summary.steps} steps, loss {summary.losses[0]:.2f} -> {summary.final_loss:.2f}.")
    print(f"Items per language: {args.max_sentences} ParaDetox test sentences, {args.max_articles} UDHR articles, "
          f"{args.max_facts} capital questions (seed {args.seed}).\n")
    print(markdown_table(base, tuned))
    print(f"\nWall time {finished - started:.0f} s (base probes {probed - started:.0f} s, training {trained - probed:.0f} s, "
          f"over-trained probes {finished - trained:.0f} s).")


if __name__ == "__main__":
    main()
