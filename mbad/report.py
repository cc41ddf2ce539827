"""Result tables and plots: what the report step logs to MLflow and shows in ZenML."""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mbad.eval.compare import FIGURES  # noqa: E402
from mbad.eval.decomposition import SWITCHING, WITHIN  # noqa: E402
from mbad.eval.judges.quality import auc_with_interval  # noqa: E402

PARTS = ("base", "tuned", "diff", "change_pct")
# MLflow names: `<metric>/<lang>` is the fine-tuned model's value, as before.
_PART_SUFFIX = {"base": "_base", "tuned": "", "diff": "_diff", "change_pct": "_change_pct"}


def metrics_for_mlflow(estimates: pd.DataFrame, judge_quality: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """Flat metric names carrying the language code: `toxicity_mean/hi` (fine-tuned),
    `toxicity_mean_base/hi`, `toxicity_change_pct/hi`, `toxicity_diff/hi`, each with
    `_ci_low` / `_ci_high` (e.g. `toxicity_change_pct_ci_low/hi`), and `toxicity_mean_n/hi`;
    the judge's quality as `judge_<figure>/<lang>` (e.g. `judge_auc/hi`, `judge_style_bias/hi`)."""
    metrics: dict[str, float] = {}
    for row in estimates.to_dict("records"):
        lang, name = row["target"], row["metric"]
        for part in PARTS:
            # The mean toxicity's change keeps its established names (`toxicity_change_pct/<lang>`).
            stem = ("toxicity" if name == "toxicity_mean" and part in ("diff", "change_pct") else name) + _PART_SUFFIX[part]
            metrics[f"{stem}/{lang}"] = row[part]
            metrics[f"{stem}_ci_low/{lang}"] = row[f"{part}_low"]
            metrics[f"{stem}_ci_high/{lang}"] = row[f"{part}_high"]
        metrics[f"{name}_n/{lang}"] = row["n"]  # prompts (or probe items) behind the figure
    for figure, by_language in (judge_quality or {}).items():
        for lang, value in by_language.items():
            metrics[f"judge_{figure}/{lang}"] = value
    return {name: float(value) for name, value in metrics.items() if value is not None and np.isfinite(value)}


# Figures whose clusters are prompts (the others are knowledge probes, whose clusters are items).
PROMPT_FIGURES = set(FIGURES)


def _row(estimates: pd.DataFrame, metric: str, target: str) -> dict | None:
    found = estimates[(estimates["metric"] == metric) & (estimates["target"] == target)]
    return found.iloc[0].to_dict() if len(found) else None


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}f}" if abs(value) < 10 else f"{value:.1f}"


def _with_interval(row: dict | None, part: str, signed: bool = False, digits: int = 3) -> str:
    if row is None:
        return "-"
    value, low, high = row[part], row[f"{part}_low"], row[f"{part}_high"]
    sign = "+" if signed else ""
    if not np.isfinite(value):
        return "-"
    if part == "change_pct":
        return f"{value:{sign}.0f} [{low:{sign}.0f}, {high:{sign}.0f}]" if np.isfinite(low) else f"{value:{sign}.0f}"
    return f"{_fmt(value, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


# The printed table: (heading, metric, part) per column; knowledge probes are added as they come.
TABLE_COLUMNS = [
    ("tox base", "toxicity_mean", "base"),
    ("tox tuned", "toxicity_mean", "tuned"),
    ("tox Δ% [95% CI]", "toxicity_mean", "change_pct"),
    ("within-lang Δ%", WITHIN, "change_pct"),
    ("switching Δ%", SWITCHING, "change_pct"),
    ("P(toxic) tuned", "toxicity_probability", "tuned"),
    ("empty tuned", "empty_share", "tuned"),
    ("in-lang base", "target_language_share", "base"),
    ("in-lang tuned", "target_language_share", "tuned"),
    ("fluency ppl Δ%", "fluency_perplexity", "change_pct"),
]


def format_table(estimates: pd.DataFrame, probes: list[str] | None = None) -> str:
    """The console table printed after a run: per target language, n prompts, toxicity with
    its paired 95 % interval, the change's within-language and language-switching parts,
    fidelity, and each knowledge probe's change with its interval."""
    if estimates.empty:
        return "(no estimates)"
    probes = probes if probes is not None else sorted(set(estimates["metric"]) - PROMPT_FIGURES)
    columns = TABLE_COLUMNS + [(f"{probe} Δ{'%' if 'perplexity' in probe else ''}", probe,
                                "change_pct" if "perplexity" in probe else "diff") for probe in probes]
    lines = []
    for target in sorted(estimates["target"].unique()):
        cells = {"target": target}
        toxicity = _row(estimates, "toxicity_mean", target)
        cells["n"] = str(int(toxicity["n"])) if toxicity else "-"
        for heading, metric, part in columns:
            row = _row(estimates, metric, target)
            interval = part in ("change_pct", "diff") or metric == "toxicity_mean"
            cells[heading] = _with_interval(row, part, signed=part in ("change_pct", "diff")) if interval and part != "base" \
                else (_fmt(row[part]) if row else "-")
        lines.append(cells)
    return pd.DataFrame(lines).to_string(index=False)


def format_judge_quality(quality: dict[str, dict[str, float]], languages: list[str], limit: float = 0.90) -> str:
    """One line per language: the judge's held-out ROC-AUC with its 95 % interval and n, marked
    where the estimate is below `limit` (the quality goal), so that a reader weighs that
    language's toxicity figures accordingly."""
    lines = []
    for lang in languages:
        auc = quality.get("auc", {}).get(lang)
        if auc is None or not math.isfinite(auc):
            lines.append(f"  {lang}: not measured")
            continue
        n = quality.get("n_test_pairs", {}).get(lang, math.nan)
        note = f"  below the {limit:.2f} goal" if auc < limit else ""
        lines.append(f"  {lang}: {auc_with_interval(quality, lang)}, n={n:.0f} test pairs{note}")
    return "\n".join(lines)


def plot_comparison(estimates: pd.DataFrame, source_label: str) -> bytes:
    """PNG: per target language, the change in toxicity and its within-language and switching
    parts, and each knowledge probe's change, as bars with their paired 95 % intervals (error
    bars), and the fidelity of both models."""
    panels = [("toxicity_mean", "change_pct", "toxicity change (%)"), (WITHIN, "change_pct", "within-language part (%)"),
              (SWITCHING, "change_pct", "language-switching part (%)")]
    panels += [(probe, "change_pct" if "perplexity" in probe else "diff",
                f"{probe} change ({'%' if 'perplexity' in probe else 'points'})")
               for probe in sorted(set(estimates["metric"]) - PROMPT_FIGURES) + ["fluency_perplexity"]
               if probe in set(estimates["metric"])]
    panels += [("target_language_share", "both", "share in the target language")]
    panels = [panel for panel in panels if panel[0] in set(estimates["metric"])]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for axis, (metric, part, title) in zip(axes[0], panels):
        rows = estimates[estimates["metric"] == metric].sort_values("target")
        positions = np.arange(len(rows))
        if part == "both":
            for offset, side, color in ((-0.15, "base", "tab:gray"), (0.15, "tuned", "tab:blue")):
                errors = np.vstack([rows[side] - rows[f"{side}_low"], rows[f"{side}_high"] - rows[side]])
                axis.errorbar(positions + offset, rows[side], yerr=np.nan_to_num(errors), fmt="o", color=color, label=side, capsize=3)
            axis.set_ylim(0, 1.05)
            axis.legend(fontsize=7)
        else:
            scale = 100 if part == "diff" else 1
            values = rows[part] * scale
            errors = np.vstack([values - rows[f"{part}_low"] * scale, rows[f"{part}_high"] * scale - values])
            excludes_zero = (rows[f"{part}_low"] > 0) | (rows[f"{part}_high"] < 0)
            colors = ["tab:red" if flag else "tab:gray" for flag in excludes_zero]
            axis.bar(positions, values, color=colors, alpha=0.6)
            axis.errorbar(positions, values, yerr=np.nan_to_num(errors), fmt="none", ecolor="black", capsize=3)
            axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(positions, rows["target"])
        axis.set_title(title, fontsize=9)
    figure.suptitle(f"fine-tuned on {source_label} vs base (95 % paired bootstrap intervals; coloured: excludes 0)", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def render_html(comparison: pd.DataFrame, png: bytes, title: str, notes: dict[str, str]) -> str:
    image = base64.b64encode(png).decode()
    facts = "".join(f"<li><b>{key}</b>: {value}</li>" for key, value in notes.items())
    table = comparison.to_html(index=False, float_format=lambda value: f"{value:.4g}", border=0)
    return (
        f"<html><body style='font-family:sans-serif'><h2>{title}</h2><ul>{facts}</ul>"
        f"<img src='data:image/png;base64,{image}' style='max-width:100%'/>{table}</body></html>"
    )


def plot_matrix(matrix: pd.DataFrame, title: str, cmap: str = "RdYlGn_r", centered: bool = True, fmt: str = "{:+.0f}",
                marked: pd.DataFrame | None = None) -> bytes:
    """PNG heatmap of a source x target (or language x language) matrix, values written in;
    cells True in `marked` (the same shape: e.g. intervals that exclude 0) get a star."""
    values = matrix.to_numpy(dtype=float)
    figure, axis = plt.subplots(figsize=(1.2 + 0.75 * values.shape[1], 1.0 + 0.6 * values.shape[0]))
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    bounds = {"vmin": -limit, "vmax": limit} if centered else {}
    image = axis.imshow(values, cmap=cmap, aspect="auto", **bounds)
    axis.set_xticks(range(values.shape[1]), matrix.columns)
    axis.set_yticks(range(values.shape[0]), matrix.index)
    axis.set_xlabel(matrix.columns.name or "target")
    axis.set_ylabel(matrix.index.name or "source")
    axis.set_title(title)
    stars = marked.reindex(index=matrix.index, columns=matrix.columns).fillna(False).to_numpy(dtype=bool) \
        if marked is not None else np.zeros(values.shape, dtype=bool)
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            axis.text(column, row, fmt.format(value) + ("*" if stars[row, column] else ""), ha="center", va="center", fontsize=8)
    if marked is not None:
        axis.set_title(f"{title}\n* 95 % interval excludes 0", fontsize=9)
    figure.colorbar(image, ax=axis, shrink=0.8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def images_html(title: str, images: dict[str, bytes], tables: dict[str, pd.DataFrame]) -> str:
    """A page of named PNGs and tables (ZenML renders it in the dashboard)."""
    parts = [f"<html><body style='font-family:sans-serif'><h2>{title}</h2>"]
    for name, png in images.items():
        parts.append(f"<h3>{name}</h3><img src='data:image/png;base64,{base64.b64encode(png).decode()}' style='max-width:100%'/>")
    for name, table in tables.items():
        parts.append(f"<h3>{name}</h3>" + table.to_html(float_format=lambda value: f"{value:.4g}", border=0))
    return "".join(parts) + "</body></html>"


def png_to_image(png: bytes):
    """A PIL image of PNG bytes, for `mlflow.log_image`."""
    from PIL import Image

    return Image.open(io.BytesIO(png))
