"""The paper's tables and the report's headline tables, as DataFrames (and a markdown writer).

- Table 1: attack accuracy loss when the shadows are pruned differently from the target.
- Table 2: attack AUC per dataset split ratio (`split_ratio`; a sweep with `--splits` or `--preset table2`).
- cell_table: per cell, original vs pruned utility and attack success, and the best attack.
- defense_points / defense_fronts: each defense's (test accuracy, attack accuracy) points and fronts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.data import Skipped, baseline, headline_attack, known_pruning, main_grid, ok, paper_split, pruned
from miaray.pareto import pareto_front
from miaray.unknown_pruning import accuracy_loss_table, differently_pruned

CELL = ["dataset", "arch", "method", "sparsity"]
SPLIT_COLUMN = "split_ratio"
DEFENSE_GROUP = ["dataset", "arch", "method", "sparsity", "adaptive"]
DEFENSE_OBJECTIVES = {"target_test_acc": "max", "attack_acc": "min"}
# The paper's Fig. 16-19 drop a defense point below 75% of Basic's test accuracy or above its attack accuracy.
PAPER_MIN_RELATIVE_ACC = 0.75


def unknown_pruning_loss(rows: pd.DataFrame, *, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1 (`miaray.unknown_pruning.accuracy_loss_table`): mean (acc_known - acc_unknown) /
    acc_known per (dataset, arch, study), one column per attack, plus the number of pairs; the study
    'random pairs' averages the drawn `pairs` (the paper's statistic). Skipped, saying which rows are
    missing, when nothing matches. Rows of the paper's split only, as every table but Table 2."""
    rows = paper_split(rows)
    table = accuracy_loss_table(rows, pairs=pairs)
    if not table.empty:
        return table
    unknown = differently_pruned(pruned(ok(rows)))
    if unknown.empty:
        raise Skipped("no rows whose shadows were pruned differently from the target "
                      "(run sweeps/unknown_pruning.py)")
    raise Skipped(f"{unknown['unit_id'].nunique()} units have differently pruned shadows but none has "
                  "its known-pruning counterpart in these results (add the full-grid experiment)")


def split_ratio_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 2: headline-attack AUC per cell of the main grid (known pruning, Basic; mean over seeds),
    one column per split ratio (train/test/validation % of each half), by ascending train share."""
    grid = pruned(main_grid(rows, all_splits=True))
    if grid.empty:
        raise Skipped("no successful known-pruning rows with the Basic defense")
    selected = grid[grid["attack"] == headline_attack(grid)]
    ratios = sorted(selected[SPLIT_COLUMN].unique(), key=lambda ratio: [int(p) for p in ratio.split("/")])
    if len(ratios) < 2:
        raise Skipped(f"every unit used the same split ({SPLIT_COLUMN} {', '.join(ratios)}); Table 2 "
                      "compares several: run `python sweeps/full_grid.py --preset table2` (the paper's four) "
                      "or give a sweep --splits, e.g. --splits 45/45/10,60/30/10")
    table = selected.pivot_table(index=CELL, columns=SPLIT_COLUMN, values="attack_auc")
    return table[ratios].reset_index()


def cell_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, method, sparsity) of the main grid, averaged over seeds: original and pruned
    test accuracy, Conf (Org.), the headline attack, and the best attack with its AUC and low-FPR TPR."""
    grid = pruned(main_grid(rows))
    if grid.empty:
        raise Skipped("no successful known-pruning rows with the Basic defense")
    attack = headline_attack(grid)  # chosen on the main grid, as in Fig. 7-9
    mean = grid.groupby(CELL + ["attack"], as_index=False)[
        ["attack_acc", "attack_auc", "tpr_at_fpr_0.001", "target_test_acc"]].mean()
    best = mean.sort_values("attack_acc", ascending=False).drop_duplicates(CELL)
    table = (best.rename(columns={"attack": "best_attack", "attack_acc": "best_attack_acc",
                                  "attack_auc": "best_attack_auc", "tpr_at_fpr_0.001": "best_tpr_at_fpr_0.001",
                                  "target_test_acc": "pruned_test_acc"})
             .merge(mean[mean["attack"] == attack][CELL + ["attack_acc"]]
                    .rename(columns={"attack_acc": f"{attack}_acc"}), on=CELL, how="left")
             .merge(baseline(rows).rename(columns={"target_test_acc": "original_test_acc",
                                                   "attack_acc": "conf_org_acc"}),
                    on=["dataset", "arch"], how="left"))
    columns = CELL + ["original_test_acc", "pruned_test_acc", "conf_org_acc", f"{attack}_acc", "best_attack",
                      "best_attack_acc", "best_attack_auc", "best_tpr_at_fpr_0.001"]
    return table[columns].sort_values(CELL, ignore_index=True)


def defense_points(rows: pd.DataFrame, *, adaptive: bool) -> pd.DataFrame:
    """(test accuracy, attack accuracy) of every defended pruned target, with the Basic point of its
    cell; adaptive selects the attacks whose shadows used the same defense. Basic has no adaptive
    variant, so its point serves both. Column `paper_dropped` marks the points the paper leaves out
    (below 75% of Basic's test accuracy, or a higher attack accuracy than Basic's)."""
    points = known_pruning(pruned(ok(paper_split(rows))))
    defended = points[(points["defense"] != "basic") & (points["adaptive"] == adaptive)]
    if defended.empty:
        kind = "adaptive" if adaptive else "non-adaptive"
        raise Skipped(f"no {kind} defense rows (defense ppb/dp/adv with adaptive={adaptive})")
    # The attack is chosen among those the defense runs used (a search may run fewer than the grid).
    attack = headline_attack(defended)
    defended = defended[defended["attack"] == attack]
    basic = points[(points["defense"] == "basic") & (points["attack"] == attack)]
    # Basic's point only where a defense was tried: a cell with Basic alone compares nothing.
    basic = basic.assign(adaptive=adaptive).merge(defended[DEFENSE_GROUP].drop_duplicates(), on=DEFENSE_GROUP)
    points = pd.concat([basic, defended], ignore_index=True)
    reference = basic.groupby(DEFENSE_GROUP, as_index=False)[["target_test_acc", "attack_acc"]].mean()
    points = points.merge(reference, on=DEFENSE_GROUP, how="left", suffixes=("", "_basic"))
    # Without a Basic point in the cell the comparisons are False: nothing is dropped.
    points["paper_dropped"] = ((points["target_test_acc"] < PAPER_MIN_RELATIVE_ACC * points["target_test_acc_basic"])
                               | (points["attack_acc"] > points["attack_acc_basic"])) & (points["defense"] != "basic")
    return points.drop(columns=["target_test_acc_basic", "attack_acc_basic"])


def defense_fronts(points: pd.DataFrame) -> pd.DataFrame:
    """Each defense's Pareto front (max test accuracy, min attack accuracy) within each cell, over the
    points the paper keeps."""
    return pareto_front(points[~points["paper_dropped"]], objectives=DEFENSE_OBJECTIVES,
                        by=DEFENSE_GROUP + ["defense"])


def hyperparameters(row: pd.Series) -> str:
    """The defense hyperparameters of one row, e.g. 'lambda=4' (blank for Basic)."""
    parts = [f"{c.removeprefix('defense_')}={row[c]:g}" for c in row.index
             if c.startswith("defense_") and isinstance(row[c], float) and not math.isnan(row[c])]
    return ", ".join(parts)


def to_markdown(table: pd.DataFrame, *, digits: int = 4) -> str:
    """A GitHub markdown table (pandas needs the optional `tabulate` package for this)."""
    def cell(value: object) -> str:
        if isinstance(value, (float, np.floating)):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"
