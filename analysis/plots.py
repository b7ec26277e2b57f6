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
from miaray.vocabulary import ATTACKS, DEFENSES, METHODS, RATIO_ATTACKS  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors
# One colour per name across every figure, so "SAMIA" or "Slimming" looks the same everywhere.
COLORS = {**{m: PALETTE[i] for i, m in enumerate(METHODS)},
          **{a: PALETTE[i % len(PALETTE)] for i, a in enumerate(ATTACKS)},
          # LiRA teal, RMIA red; online dark, offline light.
          **dict(zip(RATIO_ATTACKS, ("#17becf", "#e07a5f", "#005f73", "#9b2226"))),
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


def pair_title(dataset: str, arch: str, width: float | None = None) -> str:
    """'Digits, ResNet18' and, given a width, ', width 0.125'."""
    text = f"{label(dataset)}, {label(arch)}"
    return text if width is None or _missing(width) else f"{text}, width {width:g}"


def model_name(dataset: str, arch: str, width: float) -> str:
    """The part of a file name that says which model: digits_resnet18_w0.125."""
    return f"{dataset}_{arch}" + ("" if _missing(width) else f"_w{width:g}")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _errors(mean: Sequence[float], low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """matplotlib's (2, n) error-bar lengths from interval bounds; 0 where there is no interval."""
    mean, low, high = (np.asarray(v, dtype=float) for v in (mean, low, high))
    return np.nan_to_num(np.vstack([mean - low, high - mean]), nan=0.0)


def reference_line(ax: plt.Axes, value: float | None, text: str, *, low: float | None = None,
                   high: float | None = None) -> None:
    """The paper's black horizontal line for the original model, with its interval over seeds as a
    grey band (skipped when unknown; no band with one seed)."""
    if _missing(value):
        return
    ax.axhline(value, color=ORIGINAL, linewidth=1.5, label=text)
    if not (_missing(low) or _missing(high)):
        ax.axhspan(low, high, color=ORIGINAL, alpha=0.12, linewidth=0)


def line_with_band(ax: plt.Axes, table: pd.DataFrame, *, x: str, y: str, **style) -> None:
    """A line through the means `y` at each `x`, with the `y_ci_low`..`y_ci_high` interval as a band."""
    table = table.sort_values(x)
    ax.plot(table[x], table[y], marker="o", **style)
    ax.fill_between(table[x], table[f"{y}_ci_low"], table[f"{y}_ci_high"], alpha=0.18, linewidth=0,
                    color=style.get("color"))


def points_with_whiskers(ax: plt.Axes, table: pd.DataFrame, *, x: str, y: str, **style) -> None:
    """Points at the means (x, y) with whiskers for both intervals (none where there is only one seed)."""
    ax.errorbar(table[x], table[y], xerr=_errors(table[x], table[f"{x}_ci_low"], table[f"{x}_ci_high"]),
                yerr=_errors(table[y], table[f"{y}_ci_low"], table[f"{y}_ci_high"]), linestyle="none",
                elinewidth=0.9, capsize=2, **style)


def grouped_bars(ax: plt.Axes, table: pd.DataFrame, *, x: str, series: str, value: str,
                 order: Sequence[str], reference: pd.DataFrame | None = None) -> None:
    """Bars of the mean `value` at each `x`, one bar per `series` (in `order`), side by side, with the
    `value_ci_low`..`value_ci_high` interval as error bars. `reference` (same columns) adds a black
    tick on each bar: the same series on the original model."""
    xs = sorted(table[x].unique())
    present = [s for s in order if s in set(table[series])]
    width = 0.8 / max(1, len(present))
    indexed = table.set_index([x, series])
    for i, name in enumerate(present):
        rows = indexed.reindex([(v, name) for v in xs])
        positions = np.arange(len(xs)) + (i - (len(present) - 1) / 2) * width
        ax.bar(positions, rows[value], width, color=color(name), label=label(name),
               yerr=_errors(rows[value], rows[f"{value}_ci_low"], rows[f"{value}_ci_high"]),
               error_kw={"elinewidth": 0.8, "capsize": 1.5})
        if reference is not None and name in set(reference[series]):
            org = reference.set_index(series).loc[[name]]
            ax.scatter(positions, np.repeat(org[value].to_numpy()[:1], len(xs)), marker="_", s=90,
                       color=ORIGINAL, zorder=3, label="same attack on the original" if i == 0 else None)
    ax.set_xticks(np.arange(len(xs)), [f"{v:g}" for v in xs])


def heatmap(ax: plt.Axes, matrix: pd.DataFrame, *, vmin: float, vmax: float,
            half_widths: pd.DataFrame | None = None) -> plt.cm.ScalarMappable:
    """Annotated heatmap; rows and columns are labelled with the frame's index and columns. With
    `half_widths` (same shape) each cell also shows +- its interval's half-width."""
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), [f"{v:g}" for v in matrix.columns])
    ax.set_yticks(range(matrix.shape[0]), [f"{v:g}" for v in matrix.index])
    spread = None if half_widths is None else half_widths.reindex_like(matrix).to_numpy(dtype=float)
    for (i, j), v in np.ndenumerate(matrix.to_numpy(dtype=float)):
        if not math.isnan(v):
            text = f"{v:.3f}"
            if spread is not None and not math.isnan(spread[i, j]):
                text += f"\n\u00b1{spread[i, j]:.3f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if v < (vmin + vmax) / 2 else "black")
    return image
