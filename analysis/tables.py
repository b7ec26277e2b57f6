"""The paper's tables and the report's headline tables, as DataFrames (and the writers that show them).

Every number is a mean over seeds with its Student-t 95% interval (`miaray.results.summary`): a
value column `X` comes with `X_ci_low` and `X_ci_high` (NaN with one seed) and the table says how
many seeds (`n_seeds`). `with_intervals` turns each triple into one column of text, "0.712 [0.690,
0.734]", for markdown and HTML.

- Table 1: attack accuracy loss when the shadows are pruned differently from the target.
- Table 2: attack AUC per dataset split ratio (`split_ratio`; a sweep with `--splits` or `--preset table2`).
- cell_table: per cell, original vs pruned utility and attack success, and the best attack.
- defense_points / defense_fronts: each defense's (test accuracy, attack accuracy) points, as seed
  means, and the Pareto fronts of those means.
- defense_front_points / defense_front_table: every defense and setting of a cell compared on the best
  attack (balanced accuracy and TPR at 1% FPR), with the Pareto front across defenses
  (`miaray.pareto.defense_front`).
- ratio_budget_table: LiRA and RMIA at every number of models, from the units' `budget/` files.

Units that differ in a setting beside the cell's axes (`analysis.data.SETTINGS`: --max-epochs,
--shadows, --attack-epochs, ...) are never averaged together: where the rows hold several, each table
is made per setting and has the differing settings as its first columns (`analysis.data.kept_apart`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.data import (BUDGET_DIR, MODEL, Experiment, Skipped, headline_attack, kept_apart, known_pruning,
                           main_grid, ok, original, paper_split, pruned)
from miaray.results import defense_front, pareto_front, summary
from miaray.stats import wide
from miaray.unknown_pruning import differently_pruned, matched_losses
from miaray.vocabulary import RATIO_ATTACKS

CELL = [*MODEL, "method", "sparsity"]
SPLIT_COLUMN = "split_ratio"
DEFENSE_GROUP = [*CELL, "adaptive"]
DEFENSE_OBJECTIVES = {"target_test_acc": "max", "attack_acc": "min"}
# The paper's Fig. 16-19 drop a defense point below 75% of Basic's test accuracy or above its attack accuracy.
PAPER_MIN_RELATIVE_ACC = 0.75
CI_SUFFIXES = ("_ci_low", "_ci_high")
RATIO_BUDGET_METRICS = ("attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001")
BUDGET_GROUP = [*CELL, "target_model", "attack", "models_used"]


def interval_text(mean: float, low: float, high: float, *, digits: int = 3) -> str:
    """'0.712 [0.690, 0.734]'; the mean alone when there is no interval (one seed), '' for no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def interval_columns(table: pd.DataFrame) -> list[str]:
    """The value columns of `table` that have both `_ci_low` and `_ci_high` columns."""
    return [c for c in table.columns if all(f"{c}{suffix}" in table.columns for suffix in CI_SUFFIXES)]


def with_intervals(table: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """`table` with every (X, X_ci_low, X_ci_high) triple as one text column X, "mean [low, high]"."""
    table = table.copy()
    for column in interval_columns(table):
        low, high = (table.pop(f"{column}{suffix}") for suffix in CI_SUFFIXES)
        table[column] = [interval_text(m, lo, hi, digits=digits) for m, lo, hi in zip(table[column], low, high)]
    return table


def _seed_means(rows: pd.DataFrame, *, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """`miaray.results.summary` as one row per group: X, X_ci_low, X_ci_high per metric, and n_seeds
    (the most seeds any metric had)."""
    table = wide(summary(rows, by=by, metrics=metrics), by=by)
    if table.empty:
        return pd.DataFrame(columns=[*by, *[f"{m}{s}" for m in metrics for s in ("", *CI_SUFFIXES)], "n_seeds"])
    counts = [f"{m}_n_seeds" for m in metrics]
    table["n_seeds"] = table[counts].max(axis=1)
    return table.drop(columns=counts)


def _renamed(table: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """Rename value columns together with their interval columns."""
    mapping = {}
    for old, new in names.items():
        mapping[old] = new
        mapping.update({f"{old}{s}": f"{new}{s}" for s in CI_SUFFIXES})
    return table.rename(columns=mapping)


@kept_apart
def unknown_pruning_loss(rows: pd.DataFrame, *, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1: the attack accuracy loss (acc_known - acc_unknown) / acc_known per (dataset, arch,
    width, study), one column per attack with its interval over seeds (the pairs of a seed are
    averaged first: `miaray.unknown_pruning.matched_losses`, then `summary`), plus `pairs` (the
    differently pruned units) and `n_seeds`. The study 'random pairs' averages the drawn `pairs` (the
    paper's statistic). Skipped, saying which rows are missing, when nothing matches. Rows of the
    paper's split only, as every table but Table 2."""
    rows = paper_split(rows)
    matched = matched_losses(rows, pairs=pairs)
    if matched.empty:
        unknown = differently_pruned(pruned(ok(rows)))
        if unknown.empty:
            raise Skipped("no rows whose shadows were pruned differently from the target "
                          "(run sweeps/unknown_pruning.py)")
        raise Skipped(f"{unknown['unit_id'].nunique()} units have differently pruned shadows but none has "
                      "its known-pruning counterpart in these results (add the full-grid experiment)")
    group = [*MODEL, "study"]
    per_attack = wide(summary(matched, by=[*group, "attack"], metrics=["loss"]), by=[*group, "attack"])
    table = matched.groupby(group, dropna=False).agg(pairs=("unit_id_unknown", "nunique"),
                                                     n_seeds=("seed", "nunique")).reset_index()
    for attack in sorted(per_attack["attack"].unique()):
        part = _renamed(per_attack[per_attack["attack"] == attack], {"loss": attack})
        table = table.merge(part[[*group, attack, f"{attack}_ci_low", f"{attack}_ci_high"]], on=group, how="left")
    columns = [*group, *[c for c in table.columns if c not in (*group, "pairs", "n_seeds")], "pairs", "n_seeds"]
    return table[columns].sort_values(group, ignore_index=True)


@kept_apart
def split_ratio_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 2: headline-attack AUC per cell of the main grid (known pruning, Basic), one column per
    split ratio (train/test/validation % of each half, by ascending train share), each with its
    interval over seeds, and `n_seeds` (the most of any ratio)."""
    grid = pruned(main_grid(rows, all_splits=True))
    if grid.empty:
        raise Skipped("no successful known-pruning rows with the Basic defense")
    selected = grid[grid["attack"] == headline_attack(grid)]
    ratios = sorted(selected[SPLIT_COLUMN].unique(), key=lambda ratio: [int(p) for p in ratio.split("/")])
    if len(ratios) < 2:
        raise Skipped(f"every unit used the same split ({SPLIT_COLUMN} {', '.join(ratios)}); Table 2 "
                      "compares several: run `python sweeps/full_grid.py --preset table2` (the paper's four) "
                      "or give a sweep --splits, e.g. --splits 45/45/10,60/30/10")
    means = wide(summary(selected, by=[*CELL, SPLIT_COLUMN], metrics=["attack_auc"]), by=[*CELL, SPLIT_COLUMN])
    table = means[CELL].drop_duplicates().reset_index(drop=True)
    for ratio in ratios:
        part = _renamed(means[means[SPLIT_COLUMN] == ratio], {"attack_auc": ratio})
        table = table.merge(part[[*CELL, ratio, f"{ratio}_ci_low", f"{ratio}_ci_high"]], on=CELL, how="left")
    table["n_seeds"] = means.groupby(CELL, dropna=False)["attack_auc_n_seeds"].max().to_numpy()
    return table.sort_values(CELL, ignore_index=True)


@kept_apart
def cell_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, width, method, sparsity) of the main grid, means over seeds with intervals:
    original and pruned test accuracy, Conf on the original (the paper's Conf (Org.)), the headline
    attack, and the best attack (by mean accuracy) on the pruned target with its AUC, TPR at 1% and
    0.1% FPR (NaN where the non-members are too few to measure it) and its accuracy on the original
    target (like with like; blank when it did not run there)."""
    grid = main_grid(rows)
    target = pruned(grid)
    if target.empty:
        raise Skipped("no successful known-pruning rows with the Basic defense")
    attack = headline_attack(target)  # chosen on the main grid, as in Fig. 7-9
    per_attack = _seed_means(target, by=[*CELL, "attack"],
                             metrics=["attack_acc", "attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001"])
    best = per_attack.sort_values("attack_acc", ascending=False, kind="stable").drop_duplicates(CELL)
    table = _renamed(best, {"attack_acc": "best_attack_acc", "attack_auc": "best_attack_auc",
                            "tpr_at_fpr_0.01": "best_tpr_at_fpr_0.01", "tpr_at_fpr_0.001": "best_tpr_at_fpr_0.001"}
                     ).rename(columns={"attack": "best_attack"})
    accuracy = _seed_means(target.drop_duplicates("unit_id"), by=CELL, metrics=["target_test_acc"])
    table = table.drop(columns="n_seeds").merge(
        _renamed(accuracy, {"target_test_acc": "pruned_test_acc"}), on=CELL, how="left")
    org = original(grid)
    org_accuracy = _seed_means(org.drop_duplicates("unit_id"), by=CELL, metrics=["target_test_acc"])
    table = table.merge(_renamed(org_accuracy, {"target_test_acc": "original_test_acc"}).drop(columns="n_seeds"),
                        on=CELL, how="left")
    org_attacks = _seed_means(org, by=[*CELL, "attack"], metrics=["attack_acc"]).drop(columns="n_seeds")
    headline = per_attack[per_attack["attack"] == attack][[*CELL, "attack_acc", "attack_acc_ci_low", "attack_acc_ci_high"]]
    table = table.merge(_renamed(headline, {"attack_acc": f"{attack}_acc"}), on=CELL, how="left")
    conf_org = org_attacks[org_attacks["attack"] == "conf"].drop(columns="attack")
    table = table.merge(_renamed(conf_org, {"attack_acc": "conf_org_acc"}), on=CELL, how="left")
    best_org = _renamed(org_attacks.rename(columns={"attack": "best_attack"}), {"attack_acc": "best_attack_org_acc"})
    table = table.merge(best_org, on=[*CELL, "best_attack"], how="left")
    values = ["original_test_acc", "pruned_test_acc", "conf_org_acc", f"{attack}_acc", "best_attack_acc",
              "best_attack_org_acc", "best_attack_auc", "best_tpr_at_fpr_0.01", "best_tpr_at_fpr_0.001"]
    columns = [*CELL, *[c for v in values for c in (v, f"{v}_ci_low", f"{v}_ci_high")], "best_attack", "n_seeds"]
    columns.insert(columns.index("best_attack_acc"), columns.pop(columns.index("best_attack")))
    return table[columns].sort_values(CELL, ignore_index=True)


@kept_apart
def defense_points(rows: pd.DataFrame, *, adaptive: bool) -> pd.DataFrame:
    """(test accuracy, attack accuracy) of every defended pruned target, as means over seeds with
    intervals, one point per (cell, defense, hyperparameters), with the Basic point of its cell;
    adaptive selects the attacks whose shadows used the same defense. Basic has no adaptive variant,
    so its point serves both. Column `paper_dropped` marks the points the paper leaves out (a mean
    below 75% of Basic's mean test accuracy, or a higher mean attack accuracy than Basic's)."""
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
    params = sorted(c for c in points.columns if c.startswith("defense_"))
    key = [*DEFENSE_GROUP, "defense", *params]
    points = _seed_means(pd.concat([basic, defended], ignore_index=True), by=key,
                         metrics=["target_test_acc", "attack_acc", "epsilon"])
    points.insert(len(DEFENSE_GROUP), "attack", attack)
    reference = points[points["defense"] == "basic"][[*DEFENSE_GROUP, "target_test_acc", "attack_acc"]]
    points = points.merge(reference, on=DEFENSE_GROUP, how="left", suffixes=("", "_basic"))
    # Without a Basic point in the cell the comparisons are False: nothing is dropped.
    points["paper_dropped"] = ((points["target_test_acc"] < PAPER_MIN_RELATIVE_ACC * points["target_test_acc_basic"])
                               | (points["attack_acc"] > points["attack_acc_basic"])) & (points["defense"] != "basic")
    return points.drop(columns=["target_test_acc_basic", "attack_acc_basic"])


@kept_apart
def defense_fronts(points: pd.DataFrame) -> pd.DataFrame:
    """Each defense's Pareto front (max mean test accuracy, min mean attack accuracy) within each
    cell, over the points the paper keeps."""
    return pareto_front(points[~points["paper_dropped"]], objectives=DEFENSE_OBJECTIVES,
                        by=DEFENSE_GROUP + ["defense"])


DEFENSE_FRONT_COMMAND = "python sweeps/full_grid.py --preset defenses"
DEFENSE_FRONT_VALUES = ("target_test_acc", "best_attack_acc", "best_tpr_at_fpr_0.01", "epsilon")


@kept_apart
def defense_front_points(rows: pd.DataFrame) -> pd.DataFrame:
    """`miaray.pareto.defense_front` of the paper split's rows: per cell and adaptive flag, one point per
    (defense, setting) with Basic's, seed means with intervals of test accuracy, best attack accuracy and
    best TPR at 1% FPR, and the front across defenses (`on_front`, `on_front_tpr`). Skipped, naming the
    command that runs them, when there is no successful defended row."""
    points = defense_front(paper_split(rows))
    if points.empty:
        defended = int((rows["defense"].isin(["ppb", "dp", "adv"])).sum()) if len(rows) else 0
        found = (f" ({defended} defended row{'' if defended == 1 else 's'}, none successful on a pruned target "
                 "with shadows pruned like it)") if defended else ""
        raise Skipped(f"no defended rows (defense ppb, dp or adv) of the 45/45/10 split{found}: run "
                      f"`{DEFENSE_FRONT_COMMAND}` (Basic and each defense setting, adaptive and not, in one "
                      "experiment)")
    return points


@kept_apart
def defense_front_table(points: pd.DataFrame) -> pd.DataFrame:
    """The points of `defense_front_points` to show: the cell, `adaptive`, `defense`, `setting`, the seed
    means with their intervals (epsilon only when a DP point has one), `n_seeds`, the attacks most often
    the best, the front flags and the attacks the maxima are over."""
    values = [v for v in DEFENSE_FRONT_VALUES if v != "epsilon" or points[v].notna().any()]
    columns = [*CELL, "adaptive", "defense", "setting",
               *[c for v in values for c in (v, *[f"{v}{s}" for s in CI_SUFFIXES])],
               "n_seeds", "best_attack", "best_tpr_attack", "on_front", "on_front_tpr", "attacks"]
    return points[columns].reset_index(drop=True)


def hyperparameters(row: pd.Series) -> str:
    """The defense hyperparameters of one row, e.g. 'lambda=4' (blank for Basic)."""
    parts = [f"{c.removeprefix('defense_')}={row[c]:g}" for c in row.index
             if c.startswith("defense_") and isinstance(row[c], (float, np.floating)) and not math.isnan(row[c])]
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


@kept_apart
def ratio_budget_table(exp: Experiment) -> pd.DataFrame:
    """The likelihood-ratio attacks (LiRA, RMIA) at every number of models `models_used` (the shadows offline,
    the reference models online), from the `budget/` files of the main grid's units: per (model,
    method, sparsity, target model, attack, models_used), AUC and TPR at 1% and 0.1% FPR as means over
    seeds with intervals, `n_seeds`, and `fpr_floor` = 1 / n_nonmembers (a TPR at a lower FPR is NaN:
    not measurable on the set). Pruned target first, attacks in RATIO_ATTACKS order."""
    if not exp.budget_files:
        raise Skipped(f"no {BUDGET_DIR}/<unit_id>.parquet files: no unit ran {', '.join(RATIO_ATTACKS)} "
                      "(e.g. python sweeps/full_grid.py --preset lira)")
    cells = main_grid(exp.rows).drop_duplicates("unit_id")[["unit_id", *CELL, "seed"]]
    units = [unit for unit in cells["unit_id"] if unit in exp.budget_files]
    if not units:
        raise Skipped(f"{len(exp.budget_files)} {BUDGET_DIR}/ files, none of a successful known-pruning Basic unit")
    lines = exp.read_unit_files(BUDGET_DIR, units)  # unreadable files are left out, with a note
    if lines.empty:
        raise Skipped(f"no readable {BUDGET_DIR}/ file among the main grid's {len(units)} units")
    lines = lines.merge(cells, on="unit_id")
    table = _seed_means(lines, by=BUDGET_GROUP, metrics=RATIO_BUDGET_METRICS)
    floor = 1.0 / lines.groupby(BUDGET_GROUP, dropna=False)["n_nonmembers"].min().rename("fpr_floor")
    table = table.merge(floor.reset_index(), on=BUDGET_GROUP, how="left")
    rank = {"target_model": {"pruned": 0, "original": 1}, "attack": {a: i for i, a in enumerate(RATIO_ATTACKS)}}
    return table.sort_values(BUDGET_GROUP, key=lambda c: c.map(rank[c.name]) if c.name in rank else c,
                             ignore_index=True)
