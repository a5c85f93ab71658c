"""Plot helpers shared by the metric families: real in blue, synthetic in orange, always overlaid on
the same axes so a reader sees the difference, rendered to PNG bytes without a display."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

REAL = "#1f77b4"
SYNTHETIC = "#ff7f0e"


def panels(count: int, columns: int = 3, size: tuple[float, float] = (4.2, 3.4)) -> tuple[Figure, list[Axes]]:
    """A figure with `count` axes laid out in rows of `columns` (unused cells hidden)."""
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows), squeeze=False)
    flat = list(axes.ravel())
    for unused in flat[count:]:
        unused.set_visible(False)
    return figure, flat[:count]


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (no software-version metadata, so identical inputs give identical bytes)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def identity_scatter(ax: Axes, real: np.ndarray, synthetic: np.ndarray, title: str, r2: float | None) -> None:
    """Synthetic against real per item; points on the diagonal are reproduced exactly."""
    top = float(max(real.max(initial=0), synthetic.max(initial=0))) or 1.0
    ax.plot([0, top], [0, top], color="grey", linewidth=1, linestyle="--")
    ax.scatter(real, synthetic, s=10, alpha=0.6, color=SYNTHETIC, edgecolors="none")
    ax.set_xlabel("real")
    ax.set_ylabel("synthetic")
    ax.set_title(f"{title}\nR² = {r2:.3f}" if r2 is not None else title)


def overlaid_histograms(ax: Axes, real: np.ndarray, synthetic: np.ndarray, title: str, xlabel: str,
                        bins: int = 30) -> None:
    """Both distributions as densities on shared bins (clipped at the 99th percentile of either)."""
    both = np.concatenate([real, synthetic])
    if both.size == 0:
        ax.set_title(f"{title}\n(no data)")
        return
    low, high = float(both.min()), float(np.percentile(both, 99))
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    for values, color, label in ((real, REAL, "real"), (synthetic, SYNTHETIC, "synthetic")):
        if values.size:
            density, _ = np.histogram(np.clip(values, low, high), bins=edges, density=True)
            ax.stairs(density, edges, fill=True, alpha=0.5, color=color, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8)


def paired_bars(ax: Axes, labels: Sequence[str], real: Sequence[float], synthetic: Sequence[float],
                title: str, ylabel: str, legend: tuple[str, str] = ("real", "synthetic")) -> None:
    """Real and synthetic side by side for each label (slanted labels when there are many)."""
    x = np.arange(len(labels))
    ax.bar(x - 0.2, real, width=0.4, color=REAL, label=legend[0])
    ax.bar(x + 0.2, synthetic, width=0.4, color=SYNTHETIC, label=legend[1])
    slanted = len(labels) > 6
    ax.set_xticks(x, labels, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_ylim(bottom=0, top=max([*real, *synthetic, 0]) * 1.15 or 1)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
