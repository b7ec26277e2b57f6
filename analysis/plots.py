"""Matplotlib building blocks shared by the figures: panel grids, fixed colours, grouped bars, heatmaps."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.data import label  # noqa: E402
from miaray.config import ATTACKS, DEFENSES, METHODS  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors
# One colour per name across every figure, so "SAMIA" or "Slimming" looks the same everywhere.
COLORS = {**{m: PALETTE[i] for i, m in enumerate(METHODS)},
          **{a: PALETTE[i % len(PALETTE)] for i, a in enumerate(ATTACKS)},
          # Defenses never share a panel with methods or attacks; Basic is the reference, in black.
          **dict(zip(DEFENSES, ("black", "tab:blue", "tab:orange", "tab:green")))}
MEMBER, NON_MEMBER = "black", "tab:red"          # the paper's Fig. 1 colours
ORIGINAL = "black"                              # the paper's "original model" line


def color(name: str) -> tuple:
    return COLORS.get(name, "grey")


def panels(n: int, *, ncols: int = 4, size: tuple[float, float] = (4.0, 3.2),
           title: str | None = None) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure with `n` panels in rows of at most `ncols`; unused cells hidden."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    if title:  # wrapped, so a one-panel figure does not clip its title
        fig.suptitle(textwrap.fill(title, width=int(size[0] * ncols * 11)))
    return fig, flat[:n]


def save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pair_title(dataset: str, arch: str) -> str:
    return f"{label(dataset)}, {label(arch)}"


def reference_line(ax: plt.Axes, value: float, text: str) -> None:
    """The paper's black horizontal line for the original model (skipped when unknown)."""
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        ax.axhline(value, color=ORIGINAL, linewidth=1.5, label=text)


def grouped_bars(ax: plt.Axes, table: pd.DataFrame, *, x: str, series: str, value: str,
                 order: Sequence[str]) -> None:
    """Bars of `value` at each `x`, one bar per `series` (in `order`), side by side."""
    xs = sorted(table[x].unique())
    present = [s for s in order if s in set(table[series])]
    width = 0.8 / max(1, len(present))
    means = table.groupby([x, series])[value].mean()
    for i, name in enumerate(present):
        heights = [means.get((v, name), np.nan) for v in xs]
        ax.bar(np.arange(len(xs)) + (i - (len(present) - 1) / 2) * width, heights, width,
               color=color(name), label=label(name))
    ax.set_xticks(np.arange(len(xs)), [f"{v:g}" for v in xs])


def heatmap(ax: plt.Axes, matrix: pd.DataFrame, *, vmin: float, vmax: float) -> plt.cm.ScalarMappable:
    """Annotated heatmap; rows and columns are labelled with the frame's index and columns."""
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), [f"{v:g}" for v in matrix.columns])
    ax.set_yticks(range(matrix.shape[0]), [f"{v:g}" for v in matrix.index])
    for (i, j), v in np.ndenumerate(matrix.to_numpy(dtype=float)):
        if not math.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if v < (vmin + vmax) / 2 else "black")
    return image
