"""`python -m mbad.eval.judges [--plot reliability.png]`: the judges' quality per language as a
markdown table: the OLD judge (n-gram, trained on the whole train split, adapters' sentences
included) and the NEW default judge (trained on the judge-role pairs only), held-out on test.

`--learning-curve 0.125,0.25,0.5,1` instead trains the default judge on the first share of each
language's train pairs (1: the whole train split, the adapters' half included, for reference
only) and prints its test AUC with its 95 % interval per language: how much the judge's quality
depends on its data."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from mbad.config import DataConfig, JudgeConfig
from mbad.data import assign_roles, load_pairs, select
from mbad.eval.judges.base import train_offline_judge
from mbad.eval.judges.classifier import ClassifierJudge, train_classifier
from mbad.eval.judges.quality import auc_with_interval, heldout_scores, judge_quality, plot_reliability, quality_from_scores

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
                cells = [auc_with_interval(quality, lang) for lang in langs]
            else:
                cells = [f"{quality[figure][lang]:.3f}" for lang in langs]
            lines.append(f"| {judge_name} | {heading} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def learning_curve(pairs: pd.DataFrame, config: JudgeConfig, shares: list[float]) -> pd.DataFrame:
    """One row per share of each language's train pairs given to the judge (`data.judge_share`):
    the pairs per language it learned from and, per language, its test AUC with its 95 % interval."""
    rows = []
    for share in shares:
        if not 0 < share <= 1:
            raise ValueError(f"a learning-curve share must be in (0, 1], got {share}")
        table = assign_roles(pairs, share)
        learned = table[table["role"] == "judge"].groupby("lang").size()
        quality = judge_quality(train_offline_judge(table, config), table)
        rows.append({"judge share": share, "pairs per language": "/".join(sorted({str(n) for n in learned}))}
                    | {lang: auc_with_interval(quality, lang) for lang in sorted(quality["auc"])})
    return pd.DataFrame(rows)


def pooled_style_bias(quality: dict[str, dict[str, float]]) -> tuple[float, float]:
    """The style bias averaged over languages and its standard error (languages are independent
    samples): the one figure whose interval is narrow enough to bound the bias at this data size."""
    bias, se = pd.Series(quality["style_bias"]).dropna(), pd.Series(quality["style_bias_se"])
    return float(bias.mean()), float((se[bias.index] ** 2).sum() ** 0.5 / len(bias))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="MultiParaDetox directory (default: as DataConfig finds it)")
    parser.add_argument("--plot", type=Path, help="write the reliability diagram (PNG) here")
    parser.add_argument("--learning-curve", metavar="SHARES",
                        help="comma-separated shares of the train pairs (e.g. 0.125,0.25,0.5,1): the default judge's test AUC for each")
    args = parser.parse_args()
    pairs = load_pairs(DataConfig(data_dir=args.data_dir))
    config = JudgeConfig()
    if args.learning_curve:
        shares = [float(share) for share in args.learning_curve.split(",")]
        curve = learning_curve(pairs, config, shares)
        print("| " + " | ".join(curve.columns) + " |\n|" + "---|" * len(curve.columns))
        print("\n".join("| " + " | ".join(map(str, row)) + " |" for row in curve.itertuples(index=False)))
        return
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
