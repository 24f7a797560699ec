"""Bar charts of evaluation metrics: PER and PFER per language and per speaker.

    from zipa.evaluation.charts import metrics_chart, save_metrics_chart
    fig = metrics_chart(metrics)                 # metrics as compute_metrics / zipa evaluate give them
    save_metrics_chart(metrics, "chart.png")

Layout (a `matplotlib.figure.Figure`, no pyplot state): one row per split the metrics have
(``per_language``, then ``per_speaker``; only the overall bar when they have neither), two
panels per row: PER % (left) and PFER mean (right). Each panel has a bar for all utterances
(``all``, darker) and one per group, labelled with its value and utterance count.

matplotlib is optional (``pip install 'zipa-phones[plot]'``) and imported on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zipa.utils.atomic import open_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "charts need matplotlib: pip install 'zipa-phones[plot]' (or pip install matplotlib)"
SPLITS = (("per_language", "language"), ("per_speaker", "speaker"))
PANELS = (("PER", "PER %", ".2f"), ("PFER mean", "PFER mean", ".3f"))


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return Figure


def _rows(metrics: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, Mapping[str, Any]]]]]:
    """(row title, [(bar label, block), ...]) per split present; the overall block first."""
    overall = metrics["overall"]
    rows = [(title, [("all", overall), *metrics[key].items()]) for key, title in SPLITS if metrics.get(key)]
    return rows or [("all utterances", [("all", overall)])]


def metrics_chart(metrics: Mapping[str, Any], title: str | None = None) -> Figure:
    """The chart of ``metrics`` (see the module docstring)."""
    Figure = _figure_class()
    rows = _rows(metrics)
    widest = max(len(bars) for _, bars in rows)
    fig = Figure(figsize=(max(6.0, 2.0 + 0.9 * widest * 2), 3.2 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), len(PANELS), squeeze=False)
    for (row_title, bars), row_axes in zip(rows, axes):
        labels = [f"{name}\n({block['num_utts']})" for name, block in bars]
        for (key, ylabel, fmt), ax in zip(PANELS, row_axes):
            values = [block.get(key) for _, block in bars]
            heights = [v if v is not None else 0.0 for v in values]
            colours = ["#4c72b0"] + ["#8fb0d9"] * (len(bars) - 1)
            drawn = ax.bar(range(len(bars)), heights, color=colours)
            ax.bar_label(drawn, labels=["-" if v is None else format(v, fmt) for v in values], fontsize=8)
            ax.set_xticks(range(len(bars)), labels, fontsize=8)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{ylabel} per {row_title}" if row_title != "all utterances" else ylabel, fontsize=10)
            ax.margins(y=0.15)
            ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def save_metrics_chart(
    metrics: Mapping[str, Any], path: str | Path, title: str | None = None, dpi: float = 100
) -> Path:
    """Draw ``metrics`` and write the picture atomically (format from the suffix, png without
    one). Returns ``path``."""
    path = Path(path)
    fig = metrics_chart(metrics, title)
    with open_atomic(path, "wb") as f:
        fig.savefig(f, format=path.suffix[1:].lower() or "png", dpi=dpi)
    return path
