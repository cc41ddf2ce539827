"""Result tables and plots: what the report step logs to MLflow and shows in ZenML."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def metrics_for_mlflow(comparison: pd.DataFrame, judge_auc: dict[str, float]) -> dict[str, float]:
    """Flat metric names carrying the language code, e.g. `toxicity_mean/hi`."""
    metrics: dict[str, float] = {}
    for row in comparison.to_dict("records"):
        lang = row["target"]
        metrics[f"toxicity_mean_base/{lang}"] = row["toxicity_base"]
        metrics[f"toxicity_mean/{lang}"] = row["toxicity_tuned"]
        metrics[f"toxicity_change_pct/{lang}"] = row["toxicity_change_pct"]
        metrics[f"toxicity_probability/{lang}"] = row["toxic_share_tuned"]
        metrics[f"expected_max_toxicity/{lang}"] = row["expected_max_toxicity_tuned"]
        metrics[f"empty_completion_share/{lang}"] = row["empty_share_tuned"]
        metrics[f"perplexity_base/{lang}"] = row["perplexity_base"]
        metrics[f"perplexity/{lang}"] = row["perplexity_tuned"]
        metrics[f"perplexity_change_pct/{lang}"] = row["perplexity_change_pct"]
    metrics["toxicity_change_pct/mean"] = float(comparison["toxicity_change_pct"].mean())
    metrics["perplexity_change_pct/mean"] = float(comparison["perplexity_change_pct"].mean())
    metrics.update({f"judge_auc/{lang}": value for lang, value in judge_auc.items()})
    return {name: float(value) for name, value in metrics.items() if value is not None and np.isfinite(value)}


def plot_comparison(comparison: pd.DataFrame, source_label: str) -> bytes:
    """PNG: source x target heatmap of toxicity change, and base vs fine-tuned bars."""
    targets = comparison["target"].tolist()
    figure, (heat_ax, bar_ax, ppl_ax) = plt.subplots(1, 3, figsize=(4 + 1.6 * len(targets), 3.6))
    change = comparison[["toxicity_change_pct"]].T.to_numpy()
    limit = max(1.0, float(np.nanmax(np.abs(change))))
    image = heat_ax.imshow(change, cmap="RdYlGn_r", vmin=-limit, vmax=limit, aspect="auto")
    heat_ax.set_xticks(range(len(targets)), targets)
    heat_ax.set_yticks([0], [source_label])
    heat_ax.set_xlabel("target language")
    heat_ax.set_ylabel("fine-tuned on")
    heat_ax.set_title("toxicity change (%)")
    for column, value in enumerate(change[0]):
        heat_ax.text(column, 0, f"{value:+.0f}", ha="center", va="center", fontsize=9)
    figure.colorbar(image, ax=heat_ax, shrink=0.8)
    positions = np.arange(len(targets))
    bar_ax.bar(positions - 0.2, comparison["toxicity_base"], 0.4, label="base")
    bar_ax.bar(positions + 0.2, comparison["toxicity_tuned"], 0.4, label="fine-tuned")
    bar_ax.set_xticks(positions, targets)
    bar_ax.set_title("mean toxicity of completions")
    bar_ax.legend()
    ppl_ax.bar(positions, comparison["perplexity_change_pct"], color="tab:purple")
    ppl_ax.axhline(0, color="black", linewidth=0.8)
    ppl_ax.set_xticks(positions, targets)
    ppl_ax.set_title("perplexity change (%)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def format_table(comparison: pd.DataFrame) -> str:
    """The console table printed after a run."""
    shown = comparison[
        ["target", "toxicity_base", "toxicity_tuned", "toxicity_change_pct", "empty_share_tuned",
         "perplexity_base", "perplexity_tuned", "perplexity_change_pct"]
    ].rename(
        columns={
            "toxicity_base": "tox base", "toxicity_tuned": "tox tuned", "toxicity_change_pct": "tox Δ%", "empty_share_tuned": "empty tuned",
            "perplexity_base": "ppl base", "perplexity_tuned": "ppl tuned", "perplexity_change_pct": "ppl Δ%",
        }
    )
    return shown.to_string(index=False, float_format=lambda value: f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}")


def render_html(comparison: pd.DataFrame, png: bytes, title: str, notes: dict[str, str]) -> str:
    image = base64.b64encode(png).decode()
    facts = "".join(f"<li><b>{key}</b>: {value}</li>" for key, value in notes.items())
    table = comparison.to_html(index=False, float_format=lambda value: f"{value:.4g}", border=0)
    return (
        f"<html><body style='font-family:sans-serif'><h2>{title}</h2><ul>{facts}</ul>"
        f"<img src='data:image/png;base64,{image}' style='max-width:100%'/>{table}</body></html>"
    )


def plot_matrix(matrix: pd.DataFrame, title: str, cmap: str = "RdYlGn_r", centered: bool = True, fmt: str = "{:+.0f}") -> bytes:
    """PNG heatmap of a source x target (or language x language) matrix, values written in."""
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
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            axis.text(column, row, fmt.format(value), ha="center", va="center", fontsize=8)
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
