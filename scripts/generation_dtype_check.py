"""Does sampling in bfloat16 (`generation.dtype: bfloat16`) change what mbad measures?

Samples the quickstart's prompts (toxic test sentences, k samples each, the same random streams)
with the base model twice: as loaded (float32 on CPU) and in bfloat16. Scores both sets with the
default judge and the fluency scorer (the float32 base model), and prints per language each
figure in both dtypes with float32's paired 95 % bootstrap interval, whether the bfloat16 value
lies inside it, and the paired difference with its interval; then both generation rates.

    .venv/bin/python scripts/generation_dtype_check.py     # gemma-3-270m
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mbad.config import DataConfig, GenerationConfig, JudgeConfig, ModelConfig, StatisticsConfig  # noqa: E402
from mbad.data import load_pairs, select  # noqa: E402
from mbad.eval.compare import ModelEvidence, compare_models  # noqa: E402
from mbad.eval.judges import score_frame, train_offline_judge  # noqa: E402
from mbad.eval.probes.fluency import completion_nll  # noqa: E402
from mbad.generation import generate_for_targets  # noqa: E402
from mbad.models import load_base_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:gemma-3-270m")
    parser.add_argument("--languages", nargs="+", default=["en", "es", "ru", "hi"])
    parser.add_argument("--prompts", type=int, default=32, help="toxic test prompts per language")
    parser.add_argument("--samples", type=int, default=2, help="completions per prompt")
    parser.add_argument("--data-dir", help="MultiParaDetox directory (default: as DataConfig finds it)")
    return parser.parse_args(argv)


FIGURES_SHOWN = {"toxicity_mean": "toxicity", "fluency_perplexity": "fluency perplexity"}


def dtype_table(estimates: pd.DataFrame) -> pd.DataFrame:
    """float32 as `base` and bfloat16 as `tuned` of `compare_models`: per figure and language,
    float32's value and interval, bfloat16's value, whether it lies inside, and the paired difference."""
    rows = []
    for row in estimates[estimates["metric"].isin(FIGURES_SHOWN)].itertuples(index=False):
        rows.append({"figure": FIGURES_SHOWN[row.metric], "lang": row.target, "n prompts": row.n,
                     "float32 [95% CI]": f"{row.base:.3f} [{row.base_low:.3f}, {row.base_high:.3f}]",
                     "bfloat16": f"{row.tuned:.3f}", "inside": "yes" if row.base_low <= row.tuned <= row.base_high else "NO",
                     "bf16 - fp32 [95% CI]": f"{row.diff:+.3f} [{row.diff_low:+.3f}, {row.diff_high:+.3f}]"})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pairs = load_pairs(DataConfig(data_dir=args.data_dir))
    prompts = select(pairs, "test", args.languages, max_per_language=args.prompts)
    loaded = load_base_model(ModelConfig(name_or_path=args.model))
    config = GenerationConfig(num_samples=args.samples, max_prompts_per_language=args.prompts)
    tokens = len(prompts) * args.samples * config.max_new_tokens
    completions, rates = {}, {}
    for dtype in ("float32", "bfloat16"):
        started = time.perf_counter()
        completions[dtype] = generate_for_targets(loaded, prompts, config.model_copy(update={"dtype": dtype}), desc=f"generate ({dtype})")
        rates[dtype] = tokens / (time.perf_counter() - started)
    same = float(np.mean(completions["float32"]["completion"].to_numpy() == completions["bfloat16"]["completion"].to_numpy()))
    judge_config = JudgeConfig()
    judge = train_offline_judge(pairs, judge_config)
    measured = {dtype: (score_frame(judge, frame), completion_nll(loaded, frame, batch_size=16))
                for dtype, frame in completions.items()}
    (fp32_scores, fp32_fluency), (bf16_scores, bf16_fluency) = measured["float32"], measured["bfloat16"]
    comparison = compare_models(ModelEvidence(fp32_scores, fluency=fp32_fluency), ModelEvidence(bf16_scores, fluency=bf16_fluency),
                                judge_config.threshold, StatisticsConfig())
    table = dtype_table(comparison.estimates)
    print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(str(value) for value in row) + " |")
    print(f"\n{len(prompts)} prompts x {args.samples} samples, {config.max_new_tokens} new tokens, judge {judge.name}; "
          f"identical completions: {same:.1%}; generation (upper bound of new tokens / wall time): "
          f"float32 {rates['float32']:.1f} tokens/s, bfloat16 {rates['bfloat16']:.1f} tokens/s "
          f"({rates['bfloat16'] / rates['float32']:.2f}x)")


if __name__ == "__main__":
    main()
