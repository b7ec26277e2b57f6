#!/usr/bin/env python
"""Regenerate the paper's figures and tables from whatever an experiment holds.

    python analysis/figures.py ~/miaray-results/full_grid-quick --out figures/
    python analysis/figures.py RUN1 RUN2 RUN3 --out figures/      # grid + unknown pruning + defenses

Writes one PNG per figure (per dataset/arch group where the paper does) and CSV + markdown per table,
then prints what it wrote and what it skipped and why (a missing input, e.g. no unknown-pruning rows).
Partial results (a sweep still running, failed units) give partial figures, never a crash; a figure
that fails on an unexpected error is reported as such and the exit status is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make the repository root (and `analysis`) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.data import (MODEL, ROC_DIR, SIGNALS_DIR, Experiment, Skipped, headline_attack, label,  # noqa: E402
                           load_for_command, main_grid, ok, original, paper_split, pruned, representative_units,
                           settings_groups, settings_label, settings_suffix)
from analysis.plots import (MEMBER, NON_MEMBER, ORIGINAL, color, grouped_bars, heatmap, line_with_band,  # noqa: E402
                            model_name, pair_title, panels, points_with_whiskers, reference_line, save)
from analysis.tables import (CELL, RATIO_BUDGET_METRICS, defense_front_points, defense_front_table,  # noqa: E402
                             defense_fronts, defense_points, hyperparameters, ratio_budget_table, split_ratio_table,
                             to_markdown, unknown_pruning_loss, with_intervals)
from miaray import results  # noqa: E402
from miaray.attacks.metrics import measurable_fpr  # noqa: E402
from miaray.cli import HelpFormatter, add_debug_option, check_writable_folder, entry_point  # noqa: E402
from miaray.stats import wide  # noqa: E402
from miaray.unknown_pruning import differently_pruned, sparsity_matrix_rows  # noqa: E402
from miaray.vocabulary import DEFENSES, METHODS, RATIO_ATTACKS, attack_names  # noqa: E402

PAIR = MODEL  # one panel (or file) per model: dataset, arch and width
SIGNAL_NAMES = {"confidence": "prediction confidence", "sensitivity": "prediction sensitivity"}
ROC_FLOOR = 1e-5   # log axes cannot show 0; the curves start here


# ---- helpers --------------------------------------------------------------------------------------
# Every point, line and bar is a mean over seeds (`miaray.results.summary`: a seed's rows averaged
# first), drawn with its Student-t 95% interval as a whisker or band; one seed draws no interval.
def _pairs(rows: pd.DataFrame) -> list[tuple]:
    return sorted(rows[PAIR].drop_duplicates().itertuples(index=False, name=None))


def _means(rows: pd.DataFrame, *, by: list[str], metrics: list[str]) -> pd.DataFrame:
    return wide(results.summary(rows, by=by, metrics=metrics), by=by)


def _grid(exp: Experiment) -> pd.DataFrame:
    grid = main_grid(exp.rows)
    if grid.empty:
        failed = int((exp.rows["status"] == "failed").sum()) if len(exp.rows) else 0
        raise Skipped(f"no successful known-pruning rows with the Basic defense ({len(exp.rows)} rows, "
                      f"{failed} failed)")
    return grid


def _original_rows(exp: Experiment, attack: str) -> tuple[pd.DataFrame, str]:
    """The original target's rows under `attack` when it ran there (like with like), else under Conf
    (the paper's Conf (Org.)), one per seed and model; and the attack used."""
    org = original(main_grid(exp.rows))
    used = attack if (org["attack"] == attack).any() else "conf"
    return org[org["attack"] == used].drop_duplicates([*PAIR, "seed"]), used


def _original_reference(exp: Experiment, attack: str, *, metrics: list[str]) -> tuple[pd.DataFrame, str]:
    """Per model (the index), the original target's `metrics` as seed means with intervals, under
    `attack` when it ran on the original (like with like), else under Conf; and the legend label."""
    org, used = _original_rows(exp, attack)
    return _means(org, by=PAIR, metrics=metrics).set_index(PAIR), f"{label(used)} (Org.)"


def _of(table: pd.DataFrame, key: tuple, column: str) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of `column` at index `key`; Nones when the key is absent."""
    if key not in table.index:
        return None, None, None
    row = table.loc[key]
    return row[column], row[f"{column}_ci_low"], row[f"{column}_ci_high"]


def _signal_units(exp: Experiment) -> pd.DataFrame:
    if not exp.signal_files:
        raise Skipped(f"no {SIGNALS_DIR}/<unit_id>.parquet files in the results")
    units = representative_units(exp.rows, list(exp.signal_files))
    if units.empty:
        raise Skipped(f"{len(exp.signal_files)} signal files, none of a successful known-pruning Basic unit")
    return units


def _signals(exp: Experiment, unit_id: str) -> pd.DataFrame:
    signals = exp.read_unit_file(SIGNALS_DIR, unit_id)  # Skipped, saying so, when the file is unreadable
    if signals.empty or not {"original", "pruned"} <= set(signals["target_model"]):
        raise Skipped(f"{SIGNALS_DIR}/{unit_id}.parquet lacks the original or the pruned target's signals")
    return signals


def _unit_title(unit: pd.Series) -> str:
    """A single unit (one seed): Fig. 1 and 4 show one model's samples, not a mean over seeds."""
    return (f"{pair_title(unit['dataset'], unit['arch'], unit['width'])}, {label(unit['method'])}, "
            f"sparsity {unit['sparsity']:g}, seed {unit['seed']:g}")


def _line_per_method(ax, table: pd.DataFrame, *, x: str, y: str) -> None:
    means = _means(table, by=["method", x], metrics=[y])
    for method in METHODS:
        points = means[means["method"] == method]
        if len(points):
            line_with_band(ax, points, x=x, y=y, color=color(method), label=label(method))


def _points_per_method(ax, table: pd.DataFrame, *, x: str, y: str, originals: pd.DataFrame,
                       original_label: str) -> None:
    """Per method, the seed means of (x, y) at each sparsity with whiskers, then the original model
    (seed means of its rows) as a black star with whiskers (skipped when none)."""
    means = _means(table, by=["method", "sparsity"], metrics=[x, y])
    for method in METHODS:
        points = means[means["method"] == method]
        if len(points):
            points_with_whiskers(ax, points, x=x, y=y, color=color(method), marker="o", label=label(method))
    if len(originals):
        points_with_whiskers(ax, _means(originals.assign(_all=0), by=["_all"], metrics=[x, y]), x=x, y=y,
                             color=ORIGINAL, marker="*", markersize=12, label=original_label)


def _lines_vs_sparsity(exp: Experiment, rows: pd.DataFrame, *, y: str, ylabel: str, reference: pd.DataFrame,
                       reference_label: str, title: str, path: Path) -> Path:
    """A panel per model: `y` against sparsity, a line per method with its band, and the original
    model's `y` (`reference`, indexed by model) as the reference line with its band."""
    groups = rows.groupby(PAIR)
    fig, axes = panels(groups.ngroups, title=title)
    for ax, (key, part) in zip(axes, groups):
        _line_per_method(ax, part, x="sparsity", y=y)
        mean, low, high = _of(reference, key, y)
        reference_line(ax, mean, reference_label, low=low, high=high)
        ax.set(title=pair_title(*key), xlabel="sparsity", ylabel=ylabel)
        ax.legend(fontsize=7)
    return save(fig, path)


# ---- Fig. 1 and 4: signals of members and non-members ---------------------------------------------
def fig01_histograms(exp: Experiment, out: Path) -> list[Path]:
    written = []
    for _, unit in _signal_units(exp).iterrows():
        signals = _signals(exp, unit["unit_id"])
        fig, axes = panels(4, ncols=2, title=f"Fig. 1: ground-truth class signals ({_unit_title(unit)})")
        for row, model in enumerate(("original", "pruned")):
            for col, signal in enumerate(SIGNAL_NAMES):
                ax = axes[2 * row + col]
                values = signals[signal].to_numpy(dtype=float)
                # Sensitivity has a long tail: bin up to the 99.5th percentile so the bulk is visible.
                upper = np.nanpercentile(values, 99.5) if signal == "sensitivity" else 1.0
                bins = np.linspace(np.nanmin(values), max(upper, np.nanmin(values) + 1e-12), 40)
                part = signals[signals["target_model"] == model]
                for member, name, c in ((True, "members", MEMBER), (False, "non-members", NON_MEMBER)):
                    v = part.loc[part["member"] == member, signal].to_numpy(dtype=float)
                    ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, color=c, alpha=0.45, label=name)
                    ax.axvline(np.nanmean(v), color=c, linestyle="--", linewidth=1.5)
                ax.set(title=f"{model} model", xlabel=SIGNAL_NAMES[signal], ylabel="count")
                ax.legend(fontsize=8)
        written.append(save(fig, out / f"fig01_histograms_{model_name(*unit[PAIR])}.png"))
    return written


def fig04_per_class(exp: Experiment, out: Path) -> list[Path]:
    written = []
    for _, unit in _signal_units(exp).iterrows():
        signals = _signals(exp, unit["unit_id"])
        means = signals.groupby(["target_model", "member", "label"])[list(SIGNAL_NAMES)].mean()
        classes = sorted(signals["label"].unique())
        fig, axes = panels(4, ncols=2, size=(max(4.0, 0.35 * len(classes)), 3.2),
                           title=f"Fig. 4: per-class mean signals ({_unit_title(unit)})")
        for row, model in enumerate(("original", "pruned")):
            for col, signal in enumerate(SIGNAL_NAMES):
                ax = axes[2 * row + col]
                for offset, member, name, c in ((-0.2, True, "members", "tab:blue"),
                                                (0.2, False, "non-members", "tab:green")):
                    heights = [means[signal].get((model, member, k), np.nan) for k in classes]
                    ax.bar(np.arange(len(classes)) + offset, heights, 0.4, color=c, label=name)
                ax.set_xticks(np.arange(len(classes)), [str(k) for k in classes], fontsize=7)
                ax.set(title=f"{model} model", xlabel="class", ylabel=f"mean {SIGNAL_NAMES[signal]}")
                ax.legend(fontsize=8)
        written.append(save(fig, out / f"fig04_per_class_{model_name(*unit[PAIR])}.png"))
    return written


# ---- Fig. 6-9: utility, privacy risk and gaps of the main grid --------------------------------------
def fig06_test_accuracy(exp: Experiment, out: Path) -> list[Path]:
    grid = _grid(exp)
    reference, _ = _original_reference(exp, "conf", metrics=["target_test_acc"])
    return [_lines_vs_sparsity(exp, pruned(grid).drop_duplicates("unit_id"), y="target_test_acc",
                               ylabel="test accuracy", reference=reference, reference_label="original",
                               title="Fig. 6: test accuracy of the pruned models (mean over seeds, 95% interval)",
                               path=out / "fig06_test_accuracy.png")]


def _attack_rows(exp: Experiment) -> tuple[pd.DataFrame, str]:
    grid = _grid(exp)
    attack = headline_attack(grid)
    rows = pruned(grid)
    return rows[rows["attack"] == attack], attack


def fig07_attack_vs_accuracy(exp: Experiment, out: Path) -> list[Path]:
    rows, attack = _attack_rows(exp)
    originals, used = _original_rows(exp, attack)
    original_label = f"original ({label(used)})"
    groups = rows.groupby(PAIR)
    fig, axes = panels(groups.ngroups, title=f"Fig. 7: {label(attack)} attack accuracy vs test accuracy "
                                              "(mean over seeds, 95% intervals)")
    for ax, (key, part) in zip(axes, groups):
        mine = originals[np.logical_and.reduce([originals[c] == v for c, v in zip(PAIR, key)])]
        _points_per_method(ax, part, x="target_test_acc", y="attack_acc", originals=mine,
                           original_label=original_label)
        ax.set(title=pair_title(*key), xlabel="test accuracy", ylabel="attack accuracy")
        ax.legend(fontsize=7)
    return [save(fig, out / "fig07_attack_vs_test_accuracy.png")]


def fig08_attack_vs_sparsity(exp: Experiment, out: Path) -> list[Path]:
    rows, attack = _attack_rows(exp)
    reference, reference_label = _original_reference(exp, attack, metrics=["attack_acc"])
    return [_lines_vs_sparsity(exp, rows, y="attack_acc", ylabel="attack accuracy", reference=reference,
                               reference_label=reference_label,
                               title=f"Fig. 8: {label(attack)} attack accuracy vs sparsity (mean over seeds, "
                                     "95% interval)",
                               path=out / "fig08_attack_vs_sparsity.png")]


def fig09_gaps(exp: Experiment, out: Path) -> list[Path]:
    rows, attack = _attack_rows(exp)
    originals, used = _original_rows(exp, attack)
    original_label = f"original ({label(used)})"
    gaps = {"confidence_gap": "confidence gap", "sensitivity_gap": "sensitivity gap",
            "generalization_gap": "generalization gap"}
    written = []
    for key, part in rows.groupby(PAIR):
        org = originals[np.logical_and.reduce([originals[c] == v for c, v in zip(PAIR, key)])]
        fig, axes = panels(3, ncols=3, title=f"Fig. 9: gaps vs {label(attack)} attack accuracy "
                                             f"({pair_title(*key)}; mean over seeds, 95% intervals)")
        for ax, (gap, name) in zip(axes, gaps.items()):
            _points_per_method(ax, part, x=gap, y="attack_acc", originals=org, original_label=original_label)
            ax.set(xlabel=name, ylabel="attack accuracy")
            ax.legend(fontsize=7)
        written.append(save(fig, out / f"fig09_gaps_{model_name(*key)}.png"))
    return written


# ---- Fig. 10/11: the attacks compared ----------------------------------------------------------------
def _attack_bars(ax, part: pd.DataFrame, originals: pd.DataFrame, title: str) -> None:
    """Bars per attack and sparsity with intervals; the Conf (Org.) line (the paper's) and, per attack
    that ran on the original too, a black tick at its accuracy there (like with like)."""
    grouped_bars(ax, _means(part, by=["sparsity", "attack"], metrics=["attack_acc"]), x="sparsity",
                 series="attack", value="attack_acc", order=attack_names(),
                 reference=_means(originals, by=["attack"], metrics=["attack_acc"]) if len(originals) else None)
    conf = originals[originals["attack"] == "conf"]
    conf_org = _means(conf.assign(_all=0), by=["_all"], metrics=["attack_acc"]).iloc[0] if len(conf) else None
    if conf_org is not None:
        reference_line(ax, conf_org["attack_acc"], "Conf (Org.)", low=conf_org["attack_acc_ci_low"],
                       high=conf_org["attack_acc_ci_high"])
    low = np.nanmin([part["attack_acc"].min(), originals["attack_acc"].min() if len(originals) else np.nan])
    ax.set_ylim(min(0.45, low - 0.02), None)
    ax.set(title=title, xlabel="sparsity", ylabel="attack accuracy")


def _model_originals(exp: Experiment, key: tuple) -> pd.DataFrame:
    """The original target's rows of one model, every attack that ran on it, one per seed and attack."""
    org = original(main_grid(exp.rows))
    org = org[np.logical_and.reduce([org[c] == v for c, v in zip(PAIR, key)])]
    return org.drop_duplicates(["seed", "attack"])


def fig10_attacks_per_method(exp: Experiment, out: Path) -> list[Path]:
    rows = pruned(_grid(exp))
    written = []
    for key, part in rows.groupby(PAIR):
        methods = [m for m in METHODS if m in set(part["method"])]
        fig, axes = panels(len(methods), ncols=2, size=(5.5, 3.4),
                           title=f"Fig. 10: attacks compared ({pair_title(*key)}; mean over seeds, 95% intervals)")
        originals = _model_originals(exp, key)
        for ax, method in zip(axes, methods):
            _attack_bars(ax, part[part["method"] == method], originals, label(method))
        axes[0].legend(fontsize=7, ncols=2)
        written.append(save(fig, out / f"fig10_attacks_{model_name(*key)}.png"))
    return written


def fig11_attacks_per_dataset(exp: Experiment, out: Path) -> list[Path]:
    rows = pruned(_grid(exp))
    rows = rows[rows["method"] == "l1_unstructured"]
    if rows.empty:
        raise Skipped("no L1 unstructured rows in the main grid")
    groups = rows.groupby(PAIR)
    fig, axes = panels(groups.ngroups, ncols=2, size=(5.5, 3.4),
                       title="Fig. 11: attacks compared (L1 unstructured; mean over seeds, 95% intervals)")
    for ax, (key, part) in zip(axes, groups):
        _attack_bars(ax, part, _model_originals(exp, key), pair_title(*key))
    axes[0].legend(fontsize=7, ncols=2)
    return [save(fig, out / "fig11_attacks_l1_unstructured.png")]


# ---- Fig. 12/13 and Table 1: unknown pruning ----------------------------------------------------------
MATRIX = [*PAIR, "method"]


def _sparsity_matrices(exp: Experiment) -> tuple[pd.DataFrame, str]:
    """Fig. 12/13's data: the seed means (with intervals) of `miaray.unknown_pruning.sparsity_matrix_rows`
    of the Basic rows per (model, method, target sparsity, shadow sparsity), for the headline attack
    among the rows whose shadows were pruned at another sparsity."""
    rows = pruned(ok(paper_split(exp.rows)))
    rows = rows[rows["defense"] == "basic"]
    off = differently_pruned(rows[rows["shadow_method"] == rows["method"]])
    if off.empty:
        raise Skipped("no rows with shadow_sparsity != sparsity (run sweeps/unknown_pruning.py --study sparsity)")
    attack = headline_attack(off)  # an attack the unknown-sparsity study ran (a grid may run more)
    matrix_rows = sparsity_matrix_rows(rows, attack=attack)
    if matrix_rows.empty:
        raise Skipped(f"no {attack} rows with shadow_sparsity != sparsity on a pruned target")
    return _means(matrix_rows, by=[*MATRIX, "sparsity", "shadow_sparsity"], metrics=["attack_acc"]), attack


def _matrix_panels(table: pd.DataFrame, keys: list[tuple], title_of: Callable[[tuple], str],
                   title: str, path: Path) -> Path:
    fig, axes = panels(len(keys), ncols=2, size=(4.8, 3.8), title=title)
    vmin, vmax = np.nanmin(table["attack_acc"]), np.nanmax(table["attack_acc"])
    for ax, key in zip(axes, keys):
        part = table[np.logical_and.reduce([table[c] == v for c, v in zip(MATRIX, key)])]
        matrix = part.pivot(index="sparsity", columns="shadow_sparsity", values="attack_acc")
        half = (part.assign(half=(part["attack_acc_ci_high"] - part["attack_acc_ci_low"]) / 2)
                .pivot(index="sparsity", columns="shadow_sparsity", values="half"))
        image = heatmap(ax, matrix, vmin=vmin, vmax=max(vmax, vmin + 1e-6), half_widths=half)
        ax.set(title=title_of(key), xlabel="shadow sparsity", ylabel="target sparsity")
        fig.colorbar(image, ax=ax, label="attack accuracy (mean over seeds)")
    return save(fig, path)


def fig12_unknown_sparsity(exp: Experiment, out: Path) -> list[Path]:
    table, attack = _sparsity_matrices(exp)
    written = []
    for model in _pairs(table):
        keys = [(*model, m) for m in METHODS
                if np.logical_and.reduce([table[c] == v for c, v in zip(MATRIX, (*model, m))]).any()]
        written.append(_matrix_panels(table, keys, lambda k: label(k[-1]),
                                      f"Fig. 12: {label(attack)} accuracy, unknown sparsity ({pair_title(*model)}; "
                                      "+- half the 95% interval over seeds)",
                                      out / f"fig12_unknown_sparsity_{model_name(*model)}.png"))
    return written


def fig13_unknown_sparsity_l1(exp: Experiment, out: Path) -> list[Path]:
    table, attack = _sparsity_matrices(exp)
    table = table[table["method"] == "l1_unstructured"]
    if table.empty:
        raise Skipped("no L1 unstructured unknown-sparsity rows")
    keys = [(*model, "l1_unstructured") for model in _pairs(table)]
    return [_matrix_panels(table, keys, lambda k: pair_title(*k[:-1]),
                           f"Fig. 13: {label(attack)} accuracy, unknown sparsity (L1 unstructured; "
                           "+- half the 95% interval over seeds)",
                           out / "fig13_unknown_sparsity_l1_unstructured.png")]


def _write_table(table: pd.DataFrame, path: Path, heading: str) -> list[Path]:
    """The CSV keeps means and interval bounds as numbers; the markdown shows 'mean [low, high]'."""
    table.to_csv(path.with_suffix(".csv"), index=False)
    path.with_suffix(".md").write_text(f"{heading}\n\n{to_markdown(with_intervals(table))}")
    return [path.with_suffix(".csv"), path.with_suffix(".md")]


def table1_unknown_pruning(exp: Experiment, out: Path) -> list[Path]:
    return _write_table(unknown_pruning_loss(exp.rows, pairs=exp.pairs), out / "table1_unknown_pruning",
                        "Table 1: attack accuracy loss (acc_known - acc_unknown) / acc_known, mean over seeds "
                        "(pairs of a seed averaged first) [95% interval]")


def table2_split_ratios(exp: Experiment, out: Path) -> list[Path]:
    return _write_table(split_ratio_table(exp.rows), out / "table2_split_ratios",
                        "Table 2: attack AUC per dataset split ratio (train/test/validation %), mean over seeds "
                        "[95% interval]")


# ---- Fig. 16-19: defenses --------------------------------------------------------------------------------
def _defense_panel(ax, points: pd.DataFrame, title: str) -> None:
    """Each defense's points (seed means with whiskers for the 95% intervals) and the Pareto front of
    those means; Basic is the star."""
    fronts = defense_fronts(points)
    for defense in DEFENSES:
        mine = points[points["defense"] == defense]
        if mine.empty:
            continue
        kept, dropped = mine[~mine["paper_dropped"]], mine[mine["paper_dropped"]]
        marker = "*" if defense == "basic" else "o"
        if len(kept):
            points_with_whiskers(ax, kept, x="target_test_acc", y="attack_acc", color=color(defense), marker=marker,
                                 markersize=11 if defense == "basic" else 5, alpha=0.7, label=label(defense))
        # Points the paper drops (too inaccurate, or leakier than Basic) stay visible, hollow.
        if len(dropped):
            points_with_whiskers(ax, dropped, x="target_test_acc", y="attack_acc", color=color(defense), marker="o",
                                 markersize=5, markerfacecolor="none", alpha=0.5,
                                 label=f"{label(defense)} (dropped by the paper's rule)")
        front = fronts[fronts["defense"] == defense].sort_values("target_test_acc")
        if len(front) > 1:
            ax.step(front["target_test_acc"], front["attack_acc"], where="post", color=color(defense))
        for _, row in front.iterrows():
            ax.annotate(hyperparameters(row), (row["target_test_acc"], row["attack_acc"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set(title=f"{title} ({label(points['attack'].iloc[0])})", xlabel="test accuracy (mean over seeds)",
           ylabel="attack accuracy (mean over seeds)")


def _defense_figures(exp: Experiment, out: Path, *, adaptive: bool, by_method: bool) -> list[Path]:
    points = defense_points(exp.rows, adaptive=adaptive)
    kind = "adaptive attacks" if adaptive else "defenses"
    number = (18 if by_method else 19) if adaptive else (16 if by_method else 17)
    folder = "adaptive" if adaptive else "defenses"
    written = []
    if by_method:  # one figure per (model, sparsity), a panel per method (paper Fig. 16/18)
        for (*model, sparsity), part in points.groupby([*PAIR, "sparsity"]):
            methods = [m for m in METHODS if m in set(part["method"])]
            fig, axes = panels(len(methods), ncols=2, size=(4.8, 3.6),
                               title=f"Fig. {number}: {kind} ({pair_title(*model)}, sparsity {sparsity:g})")
            for ax, method in zip(axes, methods):
                _defense_panel(ax, part[part["method"] == method], label(method))
            axes[0].legend(fontsize=7)
            written.append(save(fig, out / f"fig{number}_{folder}_{model_name(*model)}_s{sparsity:g}.png"))
    else:  # one figure per sparsity for L1 unstructured, a panel per model (paper Fig. 17/19)
        points = points[points["method"] == "l1_unstructured"]
        if points.empty:
            raise Skipped("no L1 unstructured defense rows")
        for sparsity, part in points.groupby("sparsity"):
            groups = part.groupby(PAIR)
            fig, axes = panels(groups.ngroups, ncols=2, size=(4.8, 3.6),
                               title=f"Fig. {number}: {kind} (L1 unstructured, sparsity {sparsity:g})")
            for ax, (model, model_points) in zip(axes, groups):
                _defense_panel(ax, model_points, pair_title(*model))
            axes[0].legend(fontsize=7)
            written.append(save(fig, out / f"fig{number}_{folder}_l1_unstructured_s{sparsity:g}.png"))
    return written


def fig16_defenses(exp: Experiment, out: Path) -> list[Path]:
    return _defense_figures(exp, out, adaptive=False, by_method=True)


def fig17_defenses_datasets(exp: Experiment, out: Path) -> list[Path]:
    return _defense_figures(exp, out, adaptive=False, by_method=False)


def fig18_adaptive(exp: Experiment, out: Path) -> list[Path]:
    return _defense_figures(exp, out, adaptive=True, by_method=True)


def fig19_adaptive_datasets(exp: Experiment, out: Path) -> list[Path]:
    return _defense_figures(exp, out, adaptive=True, by_method=False)


# ---- Beyond the paper: every defense and setting of a cell compared --------------------------------------
# The two panels of a view: the objective, its axis label, what guessing scores, and the front flag.
FRONT_PANELS = (("best_attack_acc", "best attack balanced accuracy", 0.5, "on_front"),
                ("best_tpr_at_fpr_0.01", "best attack TPR at 1% FPR", 0.01, "on_front_tpr"))


def _setting_labels(view: pd.DataFrame) -> dict:
    """Per point (index) its setting as the annotation: the hyperparameters that differ among its defense's
    points in the view (all of its hyperparameters when it is the defense's only point); '' for Basic."""
    params = [c for c in view.columns if c.startswith("defense_")]
    labels = {}
    for defense, mine in view.groupby("defense"):
        taken = [c for c in params if mine[c].notna().any()]
        varying = [c for c in taken if mine[c].nunique() > 1] or taken
        labels.update({index: hyperparameters(row[varying]) for index, row in mine.iterrows()})
    return labels


def _front_panel(ax, view: pd.DataFrame, *, y: str, ylabel: str, guess: float, flag: str, title: str) -> None:
    """Every point of a view (seed means, whiskers for the 95% intervals), a colour per defense, Basic as
    a star, each annotated with its setting; the Pareto front across defenses as a step line (its
    attainment line: no point beats it on both axes), and what guessing scores."""
    x = "target_test_acc"
    for defense in [d for d in DEFENSES if d in set(view["defense"])]:
        mine = view[view["defense"] == defense]
        basic = defense == "basic"
        points_with_whiskers(ax, mine, x=x, y=y, color=color(defense), marker="*" if basic else "o",
                             markersize=13 if basic else 6, alpha=0.85, zorder=3,
                             label=f"{label(defense)} (undefended)" if basic else label(defense))
    front = view[view[flag]].sort_values([x, y])
    if len(front):
        ax.step(front[x], front[y], where="pre", color="black", linestyle="--", linewidth=1.1, zorder=2,
                label="Pareto front across defenses")
    if flag != "on_front":  # where the points on the balanced-accuracy front land on this axis
        ring = view[view["on_front"]]
        ax.scatter(ring[x], ring[y], s=170, facecolors="none", edgecolors="grey", linewidths=1.0, zorder=4,
                   label="on the balanced-accuracy front")
    low, high = view[x].min(), view[x].max()
    for index, text in _setting_labels(view).items():
        if text and not math.isnan(view.at[index, y]):
            # Right of the point, but left of those near the right edge (where Basic's star sits).
            left = view.at[index, x] > low + 0.8 * (high - low)
            ax.annotate(text, (view.at[index, x], view.at[index, y]), fontsize=6.5, xytext=(-5 if left else 5, 3),
                        ha="right" if left else "left", textcoords="offset points",
                        color=color(view.at[index, "defense"]))
    ax.axhline(guess, color="grey", linewidth=0.9, linestyle=":", label=f"guessing ({guess:g})")
    ax.set(title=title, xlabel="test accuracy (mean over seeds)", ylabel=f"{ylabel} (mean over seeds)")


def fig_defense_front(exp: Experiment, out: Path) -> list[Path]:
    """Per cell: a row per view (non-adaptive, adaptive attacks), two panels each: test accuracy against the
    best attack's balanced accuracy and against its TPR at 1% FPR, every defense and setting as seed means
    with 95% whiskers, the cross-defense Pareto front of each panel as a step line."""
    points = defense_front_points(exp.rows)
    written = []
    for (*model, method, sparsity), cell in points.groupby(CELL, dropna=False):
        views = sorted(set(cell["adaptive"]))
        fig, axes = panels(len(FRONT_PANELS) * len(views), ncols=len(FRONT_PANELS), size=(6.0, 4.6),
                           title=f"What defenses buy back ({pair_title(*model)}, {label(method)}, sparsity "
                                 f"{sparsity:g}; mean over seeds, 95% intervals; per unit the best of "
                                 f"{cell['attacks'].iloc[0] or 'no common attack'}; adaptive: the shadows "
                                 "trained with the defense)")
        for row, adaptive in enumerate(views):
            view = cell[cell["adaptive"] == adaptive]
            kind = "adaptive attacks" if adaptive else "non-adaptive attacks"
            for col, (y, ylabel, guess, flag) in enumerate(FRONT_PANELS):
                _front_panel(axes[row * len(FRONT_PANELS) + col], view, y=y, ylabel=ylabel, guess=guess, flag=flag,
                             title=f"{kind}: {ylabel.removeprefix('best attack ')}")
        for ax in axes[:len(FRONT_PANELS)]:
            ax.legend(fontsize=7)
        written.append(save(fig, out / f"defense_front_{model_name(*model)}_{method}_s{sparsity:g}.png"))
    return written


def table_defense_front(exp: Experiment, out: Path) -> list[Path]:
    return _write_table(defense_front_table(defense_front_points(exp.rows)), out / "table_defense_front",
                        "Defenses compared per cell and adaptive flag: every defense and setting (Basic, undefended, "
                        "serves both views), mean over seeds [95% interval] of the test accuracy, the best attack's "
                        "balanced accuracy and its TPR at 1% FPR (per unit the best of `attacks`); `on_front`: on the "
                        "Pareto front across defenses (max test accuracy, min best balanced accuracy), `on_front_tpr`: "
                        "the same with TPR at 1% FPR")


# ---- ROC curves (beyond the paper) -------------------------------------------------------------------------
def roc_curves(exp: Experiment, out: Path) -> list[Path]:
    if not exp.roc_files:
        raise Skipped(f"no {ROC_DIR}/<unit_id>.parquet files in the results")
    # Per method the unit nearest the paper's example sparsity, lowest seed first.
    chosen = representative_units(_grid(exp), list(exp.roc_files), per=PAIR + ["method"])
    if chosen.empty:
        raise Skipped(f"{len(exp.roc_files)} ROC files, none of a successful known-pruning Basic unit")
    written = []
    for model, part in chosen.groupby(PAIR):
        units = part.set_index("method").loc[[m for m in METHODS if m in set(part["method"])]]
        fig, axes = panels(len(units), ncols=2, size=(4.6, 4.0),
                           title=f"ROC curves, log scale ({pair_title(*model)}; one unit each)")
        for ax, (method, unit) in zip(axes, units.iterrows()):
            curves = exp.read_unit_files(ROC_DIR, [unit["unit_id"]])  # empty when unreadable (warned)
            if curves.empty:
                ax.set(title=f"{label(method)}: ROC file unreadable")
                continue
            # The original's curves: Conf only, the paper's reference (the others would hide the pruned ones).
            curves = curves[(curves["target_model"] == "pruned") | (curves["attack"] == "conf")]
            for (target_model, attack), curve in curves.groupby(["target_model", "attack"], sort=False):
                style = dict(color=ORIGINAL, linestyle="--", label="Conf (Org.)") if target_model == "original" \
                    else dict(color=color(attack), label=label(attack))
                ax.plot(np.maximum(curve["fpr"], ROC_FLOOR), np.maximum(curve["tpr"], ROC_FLOOR), **style)
            ax.plot([ROC_FLOOR, 1], [ROC_FLOOR, 1], color="grey", linewidth=0.8, linestyle=":")
            ax.set(xscale="log", yscale="log", xlim=(ROC_FLOOR, 1), ylim=(ROC_FLOOR, 1),
                   title=f"{label(method)}, sparsity {unit['sparsity']:g}, seed {unit['seed']:g}",
                   xlabel="false positive rate", ylabel="true positive rate")
            ax.legend(fontsize=6, ncols=2)
        written.append(save(fig, out / f"roc_{model_name(*model)}.png"))
    return written


# ---- Beyond the paper: likelihood-ratio attacks against their number of models ---------------------------------
BUDGET_METRICS = dict(zip(RATIO_BUDGET_METRICS, ("AUC", "TPR at 1% FPR", "TPR at 0.1% FPR")))
GUESS = {"attack_auc": 0.5, "tpr_at_fpr_0.01": 0.01, "tpr_at_fpr_0.001": 0.001}  # what guessing scores


def _unsupported(ax, metric: str, n_nonmembers: float) -> None:
    """Say on the panel that its FPR level cannot be measured on this many non-members."""
    ax.text(0.5, 0.5, f"not measurable:\nFPR {GUESS[metric]:g} < 1 / {n_nonmembers:.0f} non-members", ha="center",
            va="center", transform=ax.transAxes, fontsize=9, color="#8a5a00")
    ax.set(xscale="linear", xticks=[], yticks=[])


def fig_ratio_budget(exp: Experiment, out: Path) -> list[Path]:
    """Per model and method: AUC and TPR at 1% / 0.1% FPR (rows) of each likelihood-ratio attack against its
    number of models, one column per sparsity: the pruned target (solid) and the original (dashed),
    means over seeds with their 95% bands; the paper's headline attack on the pruned target (dotted)."""
    table = ratio_budget_table(exp)
    grid = pruned(_grid(exp))
    paper = grid[grid["attack"] == headline_attack(grid[~grid["attack"].isin(RATIO_ATTACKS)])] \
        if (~grid["attack"].isin(RATIO_ATTACKS)).any() else grid.iloc[:0]
    written = []
    for (*model, method), part in table.groupby([*PAIR, "method"]):
        sparsities = sorted(part["sparsity"].unique())
        fig, axes = panels(len(BUDGET_METRICS) * len(sparsities), ncols=len(sparsities), size=(4.4, 3.3),
                           title=f"Likelihood-ratio attacks against their number of models ({pair_title(*model)}, "
                                 f"{label(method)}; solid: pruned target, dashed: original; mean over seeds, 95% "
                                 "bands; offline attacks count shadows, online ones reference models)")
        mine = paper[np.logical_and.reduce([paper[c] == v for c, v in zip([*PAIR, "method"], (*model, method))])]
        headline = _means(mine, by=["sparsity"], metrics=list(BUDGET_METRICS)).set_index("sparsity") \
            if len(mine) else None
        for row, (metric, name) in enumerate(BUDGET_METRICS.items()):
            for col, sparsity in enumerate(sparsities):
                ax = axes[row * len(sparsities) + col]
                points = part[part["sparsity"] == sparsity]
                ax.set(title=f"sparsity {sparsity:g}", xlabel="number of models", ylabel=name, xscale="log")
                n_nonmembers = round(1 / points["fpr_floor"].max())
                if metric != "attack_auc" and not measurable_fpr(GUESS[metric], n_nonmembers):
                    _unsupported(ax, metric, n_nonmembers)
                    continue
                for attack in [a for a in RATIO_ATTACKS if a in set(points["attack"])]:
                    for target_model, style in (("pruned", "-"), ("original", "--")):
                        line = points[(points["attack"] == attack) & (points["target_model"] == target_model)]
                        if len(line):
                            line_with_band(ax, line, x="models_used", y=metric, color=color(attack), linestyle=style,
                                           label=label(attack) if target_model == "pruned" else None)
                ks = sorted(points["models_used"].unique())
                ax.set_xticks(ks, [f"{k:g}" for k in ks])
                ax.minorticks_off()
                ax.axhline(GUESS[metric], color="grey", linewidth=0.8, linestyle=":", label="guessing")
                if headline is not None and sparsity in headline.index:
                    ax.axhline(headline.at[sparsity, metric], color=color(mine["attack"].iloc[0]), linewidth=1.2,
                               linestyle="-.", label=f"{label(mine['attack'].iloc[0])} (pruned)")
        axes[0].legend(fontsize=7)
        written.append(save(fig, out / f"ratio_budget_{model_name(*model)}_{method}.png"))
    return written


def table_ratio_budget(exp: Experiment, out: Path) -> list[Path]:
    return _write_table(ratio_budget_table(exp), out / "table_ratio_budget",
                        "Likelihood-ratio attacks against their number of models (`models_used`: shadows for the offline "
                        "attacks, reference models for the online ones), pruned and original target, mean over seeds "
                        "[95% interval]; a TPR at an FPR below `fpr_floor` = 1 / n_nonmembers is blank (not "
                        "measurable on the set)")


# ---- driver ----------------------------------------------------------------------------------------------
# The report shows these two in their own section ("What defenses buy back").
DEFENSE_FRONT_FIGURE = "Defenses compared: test accuracy vs best attack (figure)"
DEFENSE_FRONT_TABLE = "Defenses compared: points and fronts across defenses (table)"
FIGURES: dict[str, Callable[[Experiment, Path], list[Path]]] = {
    "Fig. 1 (signal histograms)": fig01_histograms,
    "Fig. 4 (per-class signals)": fig04_per_class,
    "Fig. 6 (test accuracy vs sparsity)": fig06_test_accuracy,
    "Fig. 7 (attack vs test accuracy)": fig07_attack_vs_accuracy,
    "Fig. 8 (attack accuracy vs sparsity)": fig08_attack_vs_sparsity,
    "Fig. 9 (gaps vs attack accuracy)": fig09_gaps,
    "Fig. 10 (attacks per method)": fig10_attacks_per_method,
    "Fig. 11 (attacks per dataset)": fig11_attacks_per_dataset,
    "Fig. 12 (unknown sparsity per method)": fig12_unknown_sparsity,
    "Fig. 13 (unknown sparsity, L1 unstructured)": fig13_unknown_sparsity_l1,
    "Table 1 (unknown pruning loss)": table1_unknown_pruning,
    "Table 2 (split ratios)": table2_split_ratios,
    "Fig. 16 (defenses per method)": fig16_defenses,
    "Fig. 17 (defenses per dataset)": fig17_defenses_datasets,
    "Fig. 18 (adaptive attacks per method)": fig18_adaptive,
    "Fig. 19 (adaptive attacks per dataset)": fig19_adaptive_datasets,
    DEFENSE_FRONT_FIGURE: fig_defense_front,
    DEFENSE_FRONT_TABLE: table_defense_front,
    "ROC curves (log scale)": roc_curves,
    "Likelihood-ratio attacks vs number of models (figure)": fig_ratio_budget,
    "Likelihood-ratio attacks vs number of models (table, blank TPR = not measurable)": table_ratio_budget,
}


@dataclass
class Outcome:
    """What became of one figure: the files written, or why it was skipped, or the error it hit."""

    name: str
    files: list[Path]
    skipped: str | None = None
    error: str | None = None


def write_figures(exp: Experiment, out: Path) -> list[Outcome]:
    """Every figure and table the results allow, into `out`; one Outcome per entry of FIGURES. Where the
    rows hold units that differ in a setting (`analysis.data.settings_groups`: e.g. two --max-epochs runs
    under one --name), every figure and table is made per setting, never averaged across them: its files
    end in the setting (`_max_epochs-3`) and its Outcome's name says it ('Fig. 6 (...) [max_epochs 3]')."""
    out.mkdir(parents=True, exist_ok=True)
    groups = settings_groups(exp.rows)
    if len(groups) > 1:
        outcomes = []
        for setting, rows in groups:
            with tempfile.TemporaryDirectory(dir=out, prefix=".settings-") as tmp:
                for outcome in write_figures(dataclasses.replace(exp, rows=rows), Path(tmp)):
                    files = [path.replace(out / f"{path.stem}{settings_suffix(setting)}{path.suffix}")
                             for path in outcome.files]
                    outcomes.append(dataclasses.replace(outcome, name=f"{outcome.name} [{settings_label(setting)}]",
                                                        files=files))
        return outcomes
    outcomes = []
    for name, make in FIGURES.items():
        if exp.rows.empty:
            outcomes.append(Outcome(name, [], skipped="no result rows"))
            continue
        try:
            files = make(exp, out)
            outcomes.append(Outcome(name, files) if files else Outcome(name, [], skipped="nothing to plot"))
        except Skipped as reason:
            outcomes.append(Outcome(name, [], skipped=str(reason)))
        except Exception as error:  # noqa: BLE001  one broken figure must not cost the others
            outcomes.append(Outcome(name, [], error="".join(traceback.format_exception_only(error)).strip()))
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        if o.files:
            lines.append(f"wrote    {o.name}: {', '.join(p.name for p in o.files)}")
        elif o.skipped:
            lines.append(f"skipped  {o.name}: {o.skipped}")
        else:
            lines.append(f"ERROR    {o.name}: {o.error}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="figures.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("results", nargs="+", help="experiment directories (<storage>/<name>, holding rows/)")
    p.add_argument("--out", required=True, type=Path, help="folder for the PNG, CSV and markdown files (created if missing)")
    return add_debug_option(p)


@entry_point(prog="figures.py")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    exp = load_for_command(parser, args.results, checks=[lambda: check_writable_folder(str(args.out), option="--out")])
    outcomes = write_figures(exp, args.out)
    for note in exp.notes:
        print(f"note: {note}")
    print(f"{len(exp.rows)} rows ({int((exp.rows.get('status') == 'failed').sum()) if len(exp.rows) else 0} "
          f"failed) from {len(args.results)} experiment(s)")
    print(summary(outcomes))
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
