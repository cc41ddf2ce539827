"""`python -m mbad.eval.judges [--plot reliability.png]`: the judges' quality per language as a
markdown table: the OLD judge (n-gram, trained on the whole train split, adapters' sentences
included) and the NEW default judge (trained on the judge-role pairs only), held-out on test."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from mbad.config import DataConfig, JudgeConfig
from mbad.data import load_pairs, select
from mbad.eval.judges.base import train_offline_judge
from mbad.eval.judges.classifier import ClassifierJudge, train_classifier
from mbad.eval.judges.quality import heldout_scores, plot_reliability, quality_from_scores

FIGURES = {"auc": "ROC-AUC [95 % CI]", "style_bias": "style bias (± s.e.)", "brier": "Brier", "pair_accuracy": "pair accuracy"}


def markdown_table(qualities: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per (judge, figure), one column per language."""
    langs = sorted(next(iter(qualities.values()))["auc"])
    lines = ["| judge | figure | " + " | ".join(langs) + " |", "|---|---|" + "---|" * len(langs)]
    for judge_name, quality in qualities.items():
        for figure, heading in FIGURES.items():
            if figure == "style_bias":
                cells = [f"{quality[figure][lang]:+.3f} ± {quality['style_bias_se'][lang]:.3f}" for lang in langs]
            elif figure == "auc":
                cells = [f"{quality['auc'][lang]:.3f} [{quality['auc_ci_low'][lang]:.3f}, {quality['auc_ci_high'][lang]:.3f}]"
                         for lang in langs]
            else:
                cells = [f"{quality[figure][lang]:.3f}" for lang in langs]
            lines.append(f"| {judge_name} | {heading} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pooled_style_bias(quality: dict[str, dict[str, float]]) -> tuple[float, float]:
    """The style bias averaged over languages and its standard error (languages are independent
    samples): the one figure whose interval is narrow enough to bound the bias at this data size."""
    bias, se = pd.Series(quality["style_bias"]).dropna(), pd.Series(quality["style_bias_se"])
    return float(bias.mean()), float((se[bias.index] ** 2).sum() ** 0.5 / len(bias))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="MultiParaDetox directory (default: as DataConfig finds it)")
    parser.add_argument("--plot", type=Path, help="write the reliability diagram (PNG) here")
    args = parser.parse_args()
    pairs = load_pairs(DataConfig(data_dir=args.data_dir))
    config = JudgeConfig()
    started = time.perf_counter()
    judges = {
        "old: n-gram, whole train split": ClassifierJudge(train_classifier(select(pairs, "train"), config.classifier)),
        f"new: {config.backend}, judge half": train_offline_judge(pairs, config),
    }
    scored = {name: heldout_scores(judge, pairs) for name, judge in judges.items()}
    qualities = {name: quality_from_scores(rows) for name, rows in scored.items()}
    print(markdown_table(qualities))
    new_name = list(judges)[1]
    print(f"\nnew judge: {judges[new_name].name}  ({time.perf_counter() - started:.0f} s for both judges)")
    if args.plot:
        test = {name: rows[rows["kind"] != "adapter_neutral"] for name, rows in scored.items()}
        args.plot.write_bytes(plot_reliability({name: (rows["score"], rows["label"]) for name, rows in test.items()}))
        print(f"reliability diagram: {args.plot}")
    for name, quality in qualities.items():
        mean, se = pooled_style_bias(quality)
        print(f"style bias over languages, {name}: {mean:+.3f}, 95 % CI [{mean - 1.96 * se:+.3f}, {mean + 1.96 * se:+.3f}]")
    summary = pd.DataFrame({name: {figure: pd.Series(quality[figure]).mean() for figure in FIGURES} for name, quality in qualities.items()})
    print("\nmeans over languages:\n" + summary.round(3).to_string())


if __name__ == "__main__":
    main()
