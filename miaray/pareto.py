"""Pareto fronts of result rows: the rows no other row beats on every objective.

Used for the defense trade-off (maximise test accuracy, minimise attack accuracy) but generic in the
objectives. Conventions:

- A row dominates another when it is at least as good on every objective and strictly better on one.
- A row with NaN in any objective is never on a front (an unmeasured point cannot be compared).
- Ties: rows with identical objective values do not dominate each other, so all copies of a
  non-dominated point are kept (e.g. two hyperparameters that reach the same numbers).

`defense_front` compares defenses with each other: from result rows (as `miaray.results.load` gives
them), one point per cell, adaptive flag and (defense, setting), judged on the strongest attack by
balanced accuracy AND by TPR at 1% FPR (a defense can break the attacker's calibration, attack_acc
0.5 at the shadow-calibrated threshold, while AUC and TPR at low FPR still show the membership
signal), with the Pareto front across defenses flagged:

    from miaray.results import DEFENSE_FRONT_BY, DEFENSE_FRONT_OBJECTIVES, defense_front, load, pareto_front
    points = defense_front(load("~/miaray-results/full_grid-defenses"))
    front = pareto_front(points, objectives=DEFENSE_FRONT_OBJECTIVES, by=DEFENSE_FRONT_BY)
    assert front.index.equals(points.index[points["on_front"]])
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from miaray.stats import LEVEL, successful, t_interval
from miaray.unknown_pruning import known_pruning
from miaray.vocabulary import DEFENSES, PAPER_SPLIT, defense_label, format_split

SENSES = ("max", "min")
# Booleans in one block of the pairwise comparison: a block of max(1, CHUNK_CELLS // (n * k)) candidate
# rows is compared with all n rows at once, so each (b, n, k) temporary holds about CHUNK_CELLS booleans
# (at least n * k when a single row already exceeds it).
CHUNK_CELLS = 4_000_000


def _non_dominated_2d(values: np.ndarray) -> np.ndarray:
    """Front mask for two maximised objectives in O(n log n): sort by the first, scan the second."""
    a, b = values[:, 0], values[:, 1]
    order = np.lexsort((-b, -a))  # a descending, then b descending
    a_sorted, b_sorted = a[order], b[order]
    # Points sharing the same `a` form a block; within it only the largest `b` survives (ties kept).
    block_start = np.r_[True, a_sorted[1:] != a_sorted[:-1]]
    block_id = np.cumsum(block_start) - 1
    block_best_b = b_sorted[block_start]            # sorted b descending, so the first is the block max
    # Best `b` among points with a strictly larger `a`: running max over the preceding blocks.
    before = np.r_[-np.inf, np.maximum.accumulate(block_best_b)[:-1]]
    # The first block has nothing before it (tested by id, so a point at -inf is not lost).
    keep_sorted = (b_sorted == block_best_b[block_id]) & ((block_id == 0) | (b_sorted > before[block_id]))
    keep = np.empty(len(values), dtype=bool)
    keep[order] = keep_sorted
    return keep


def _non_dominated_nd(values: np.ndarray) -> np.ndarray:
    """Front mask for any number of maximised objectives: chunked pairwise comparison."""
    n, k = values.shape
    keep = np.ones(n, dtype=bool)
    step = max(1, CHUNK_CELLS // max(1, n * k))
    for start in range(0, n, step):
        block = values[start:start + step, None, :]          # (b, 1, k): the candidates
        at_least = (values[None, :, :] >= block).all(axis=2)  # (b, n): row j is >= candidate on all
        better = (values[None, :, :] > block).any(axis=2)     # (b, n): and > on one
        keep[start:start + step] = ~(at_least & better).any(axis=1)
    return keep


def non_dominated(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of an (n, k) array where every objective is maximised.

    Rows holding NaN are never on the front.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be a 2-d array (rows x objectives), got shape {values.shape}")
    finite = ~np.isnan(values).any(axis=1)
    keep = np.zeros(len(values), dtype=bool)
    candidates = values[finite]
    if len(candidates):
        front = _non_dominated_2d if candidates.shape[1] == 2 else _non_dominated_nd
        keep[finite] = front(candidates)
    return keep


def pareto_front(df: pd.DataFrame, *, objectives: Mapping[str, str],
                 by: Sequence[str] | None = None) -> pd.DataFrame:
    """The non-dominated rows of `df`, separately per group of `by` (all rows when None).

    `objectives` maps a column to 'max' or 'min'. Returns a subset of `df` (index and row order
    kept). NaN in any objective keeps a row off the front; identical points are all kept.
    """
    if not objectives:
        raise ValueError("objectives is empty: give at least one column, e.g. {'target_test_acc': 'max'}")
    for column, sense in objectives.items():
        if sense not in SENSES:
            raise ValueError(f"objectives[{column!r}]={sense!r}: choose one of {', '.join(SENSES)}")
        if column not in df.columns:
            raise KeyError(f"objective column {column!r} is not in the frame")
    missing = [c for c in (by or []) if c not in df.columns]
    if missing:
        raise KeyError(f"group column(s) {missing} not in the frame")
    # Turn every objective into one to maximise, so one comparison serves both senses.
    signs = np.array([1.0 if sense == "max" else -1.0 for sense in objectives.values()])
    values = df[list(objectives)].to_numpy(dtype=float, na_value=np.nan) * signs
    if by:
        keep = np.zeros(len(df), dtype=bool)
        for positions in df.groupby(list(by), sort=False, dropna=False).indices.values():
            keep[positions] = non_dominated(values[positions])
    else:
        keep = non_dominated(values)
    return df[keep]


# ---- defenses compared --------------------------------------------------------------------------------
UNDEFENDED = "basic"
# A cell of the defense comparison; rows without `split_ratio` (older results) used the paper's.
DEFENSE_CELL = ["dataset", "arch", "width", "method", "sparsity", "split_ratio"]
# One view: a cell and whether the attacks' shadows were fine-tuned with the defense (adaptive).
DEFENSE_FRONT_BY = [*DEFENSE_CELL, "adaptive"]
# The front across defenses: the highest test accuracy for the weakest best attack (balanced accuracy).
DEFENSE_FRONT_OBJECTIVES = {"target_test_acc": "max", "best_attack_acc": "min"}
# The same by the best attack's TPR at 1% FPR (flagged in `on_front_tpr`).
DEFENSE_TPR_FRONT_OBJECTIVES = {"target_test_acc": "max", "best_tpr_at_fpr_0.01": "min"}
DEFENSE_FRONT_METRICS = {"target_test_acc": "target_test_acc", "best_attack_acc": "attack_acc",
                         "best_tpr_at_fpr_0.01": "tpr_at_fpr_0.01", "epsilon": "epsilon"}
_CI = ("_ci_low", "_ci_high")
_NEEDED = ["unit_id", "status", "target_model", "attack", "seed", "defense", "attack_acc", "target_test_acc",
           *[c for c in DEFENSE_CELL if c != "split_ratio"]]


def _setting(defense: str, params: Mapping[str, float]) -> str:
    """'lambda=4' from ('ppb', {'defense_lambda': 4.0, 'defense_alpha': nan}), as the sweeps print it
    (`miaray.vocabulary.defense_label` without the defense's name); '' for Basic."""
    given = {name.removeprefix("defense_"): value for name, value in params.items()
             if not (isinstance(value, float) and math.isnan(value))}
    return defense_label(defense, given).removeprefix(defense).strip()


def _defense_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The successful known-pruning rows on pruned targets, with the columns `defense_front` reads."""
    missing = [c for c in _NEEDED if c not in rows.columns]
    if missing and rows.empty:  # no rows at all (an experiment with no finished unit)
        rows = rows.reindex(columns=[*rows.columns, *missing])
    elif missing:
        raise KeyError(f"defense_front: column(s) {missing} not in the rows")
    rows = successful(rows)
    rows = rows[rows["target_model"] == "pruned"].copy()
    if {"shadow_method", "shadow_sparsity"} <= set(rows.columns):
        rows = known_pruning(rows)  # shadows pruned like the target: the setting the defenses are run in
    paper = format_split(PAPER_SPLIT)
    rows["split_ratio"] = rows["split_ratio"].fillna(paper) if "split_ratio" in rows else paper
    adaptive = rows["adaptive"] if "adaptive" in rows else pd.Series(False, index=rows.index)
    rows["adaptive"] = adaptive.astype("boolean").fillna(False).astype(bool)
    for column in ("tpr_at_fpr_0.01", "epsilon"):
        rows[column] = pd.to_numeric(rows[column], errors="coerce") if column in rows else np.nan
    for column in ("attack_acc", "target_test_acc", "seed"):
        rows[column] = pd.to_numeric(rows[column], errors="coerce")
    return rows


def _most_often(values: pd.Series) -> str:
    counts = Counter(v for v in values if isinstance(v, str))
    return counts.most_common(1)[0][0] if counts else ""


def _cell_points(part: pd.DataFrame, params: list[str], attacks: Sequence[str] | None,
                 level: float) -> list[dict]:
    """The points of one cell (both adaptive views), Basic once per view."""
    defended = part[part["defense"] != UNDEFENDED]
    if defended.empty:
        return []
    # A point: (defense, setting) and, for a defense, the adaptive flag; Basic's flag is ignored.
    part = part.assign(_view=np.where(part["defense"] == UNDEFENDED, -1, part["adaptive"].astype(int)))
    key = ["defense", "_view", *params]
    # The best attack is taken over the attacks every point of the cell ran, so no point is judged on
    # an attack another did not face.
    scored = part[np.isfinite(part["attack_acc"])]
    ran = [set(group["attack"]) for _, group in scored.groupby(key, dropna=False)]
    common = set.intersection(*ran) if len(ran) == part.groupby(key, dropna=False).ngroups else set()
    if attacks is not None:
        common &= set(attacks)
    cell = dict(zip(DEFENSE_CELL, part[DEFENSE_CELL].iloc[0]))
    # The other attacks' values are left out of the maxima (a unit keeps its test accuracy).
    part = part.copy()
    part.loc[~part["attack"].isin(common), ["attack_acc", "tpr_at_fpr_0.01"]] = np.nan
    per_unit = part.groupby([*key, "seed", "unit_id"], dropna=False).agg(
        target_test_acc=("target_test_acc", "mean"), best_attack_acc=("attack_acc", "max"),
        **{"best_tpr_at_fpr_0.01": ("tpr_at_fpr_0.01", "max")}, epsilon=("epsilon", "mean")).reset_index()
    by_acc = part[part["attack_acc"].notna()].sort_values("attack_acc", ascending=False, kind="stable") \
        .drop_duplicates("unit_id")
    by_tpr = part[part["tpr_at_fpr_0.01"].notna()].sort_values("tpr_at_fpr_0.01", ascending=False, kind="stable") \
        .drop_duplicates("unit_id")
    per_unit["best_attack"] = per_unit["unit_id"].map(by_acc.set_index("unit_id")["attack"])
    per_unit["best_tpr_attack"] = per_unit["unit_id"].map(by_tpr.set_index("unit_id")["attack"])
    points = []
    for values, units in per_unit.sort_values(["seed", "unit_id"]).groupby(key, dropna=False, sort=False):
        defense, view, *settings = values
        per_seed = units.groupby("seed")[list(DEFENSE_FRONT_METRICS)].mean()  # a seed counts once
        point = {"defense": defense, "_view": view, **dict(zip(params, settings)),
                 "setting": _setting(defense, dict(zip(params, settings)))}
        for metric in DEFENSE_FRONT_METRICS:
            mean, low, high, _ = t_interval(per_seed[metric], level=level)
            point.update({metric: mean, f"{metric}{_CI[0]}": low, f"{metric}{_CI[1]}": high})
        point.update(n_seeds=len(per_seed), best_attack=_most_often(units["best_attack"]),
                     best_tpr_attack=_most_often(units["best_tpr_attack"]), attacks=", ".join(sorted(common)))
        points.append(point)
    lines = []
    for adaptive in sorted(set(defended["adaptive"])):
        for point in points:
            if point["_view"] in (-1, int(adaptive)):
                lines.append({**cell, "adaptive": bool(adaptive), **point})
    return lines


def defense_front(rows: pd.DataFrame, *, attacks: Sequence[str] | None = None,
                  level: float = LEVEL) -> pd.DataFrame:
    """Defenses compared per cell: one point per (defense, setting), the Pareto front across defenses.

    From result rows (one per unit, target model and attack; only successful rows on the pruned
    target whose shadows were pruned like it count), per view `DEFENSE_FRONT_BY` (dataset, arch,
    width, method, sparsity, split_ratio, adaptive) one row per (defense, setting) that holds:

    - `defense`, the `defense_*` hyperparameter columns of the rows and `setting`, the same as text
      ('lambda=4'; '' for Basic);
    - `target_test_acc`, `best_attack_acc` (per unit the highest attack_acc over the attacks, i.e.
      the strongest attack at its own shadow-calibrated threshold), `best_tpr_at_fpr_0.01` (per unit
      the highest TPR at 1% FPR over the attacks, NaN ones skipped; NaN when none could measure it)
      and `epsilon` (DP's guarantee, NaN otherwise): each the mean over seeds with its Student-t
      `level` interval (`X_ci_low`, `X_ci_high`; a seed's units averaged first, NaN bounds with one
      seed, as `miaray.stats.t_interval`), and `n_seeds`;
    - `best_attack`, `best_tpr_attack`: the attack most often the best over the point's units;
      `attacks`: the attacks the maxima are taken over, those that every point of the cell ran
      (optionally only those in `attacks`), so that no point is judged on an attack another did not face
      (when there is none, `attacks` is '' and the attack columns are NaN: such a point is on no front);
    - `on_front`: on the Pareto front across all defenses and settings of its view by
      `DEFENSE_FRONT_OBJECTIVES` (max test accuracy, min best attack accuracy) of the seed means, so
      that `pareto_front(points, objectives=DEFENSE_FRONT_OBJECTIVES, by=DEFENSE_FRONT_BY)` gives
      exactly the rows with `on_front`; `on_front_tpr` the same by `DEFENSE_TPR_FRONT_OBJECTIVES`
      (max test accuracy, min best TPR at 1% FPR).

    Basic (undefended) is one point per cell: its rows are pooled whatever their `adaptive` flag and
    the point appears, with the same numbers, in both the non-adaptive and the adaptive view. Only
    views that hold a defended point are returned (a cell with Basic alone compares nothing); without
    any defended row the frame is empty (with the columns). Rows are sorted by view, then defense in
    the order basic, ppb, dp, adv, then setting.
    """
    rows = _defense_rows(rows)
    params = sorted(c for c in rows.columns if c.startswith("defense_"))
    for column in params:
        rows[column] = pd.to_numeric(rows[column], errors="coerce")
    lines = []
    for _, part in rows.groupby(DEFENSE_CELL, dropna=False, sort=True):
        lines.extend(_cell_points(part, params, attacks, level))
    metrics = [c for m in DEFENSE_FRONT_METRICS for c in (m, f"{m}{_CI[0]}", f"{m}{_CI[1]}")]
    columns = [*DEFENSE_FRONT_BY, "defense", *params, "setting", *metrics, "n_seeds", "best_attack",
               "best_tpr_attack", "attacks"]
    points = pd.DataFrame(lines, columns=columns)
    if len(points):
        order = {name: i for i, name in enumerate(DEFENSES)}
        points["_order"] = points["defense"].map(order).fillna(len(order))
        points = points.sort_values([*DEFENSE_FRONT_BY, "_order", *params], kind="stable", na_position="first") \
            .drop(columns="_order").reset_index(drop=True)
    points["n_seeds"] = points["n_seeds"].astype(int)
    points["adaptive"] = points["adaptive"].astype(bool)
    for flag, objectives in (("on_front", DEFENSE_FRONT_OBJECTIVES), ("on_front_tpr", DEFENSE_TPR_FRONT_OBJECTIVES)):
        points[flag] = points.index.isin(pareto_front(points, objectives=objectives, by=DEFENSE_FRONT_BY).index)
    return points
