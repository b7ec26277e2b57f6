"""Means with intervals over seeds: the statistics every table and claim of the analysis rests on.

The sampling unit is the seed: a seed draws the data split, every model's initialisation and batch
order, and the cells of one seed share their original models, so their results are not independent
of each other, while two seeds are. Hence:

- `summary`: per group, rows of one seed are averaged first, then the seeds give the mean and a
  Student-t interval, mean +- t_{(1 + level) / 2, n - 1} * sd / sqrt(n) (scipy.stats.t); one seed
  gives NaN bounds, never a made-up interval;
- `paired_effect`: treated minus control (by default pruned minus original target) within each seed,
  then the same t-interval over the seeds' differences: a seed's cells share one original, so the
  pairing removes the seed-to-seed spread of the original;
- `pearson_interval`: Pearson r with the Fisher-z interval tanh(atanh(r) +- z_{(1 + level) / 2} /
  sqrt(n - 3)) (NaN bounds below 4 points).

Values that are NaN (a metric a set cannot measure, e.g. TPR at 0.1% FPR on 405 non-members) are left
out; `n_seeds` counts the seeds that had a value.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
SEED = "seed"
# What `summary` reports unless told otherwise: the attack metrics people compare, and utility.
SUMMARY_METRICS = ("attack_acc", "advantage", "attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001",
                   "target_test_acc")
INTERVAL = ["mean", "ci_low", "ci_high", "n_seeds"]


def successful(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that are results: of successful units (`status == 'ok'`), without the attacks that
    collapsed on their target (`attack_status == 'collapsed'`: constant or non-finite scores, which rank
    nothing). Every mean, best attack and claim reads only these."""
    keep = rows["status"] == "ok"
    if "attack_status" in rows:
        keep &= rows["attack_status"].fillna("ok") != "collapsed"
    return rows[keep]


def t_interval(values: Sequence[float] | np.ndarray, *, level: float = LEVEL) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite `values` with a Student-t interval; NaN bounds when n < 2,
    all NaN when n == 0."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def pearson_interval(x: Sequence[float], y: Sequence[float], *, level: float = LEVEL
                     ) -> tuple[float, float, float, int]:
    """(r, low, high, n): Pearson r of the finite (x, y) pairs with the Fisher-z interval; NaN bounds
    below 4 pairs, NaN r when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan, n
    r = float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))
    if n < 4:
        return r, math.nan, math.nan, n
    half = float(stats.norm.ppf(0.5 + level / 2)) / math.sqrt(n - 3)
    z = math.atanh(r) if abs(r) < 1 else math.copysign(math.inf, r)
    return r, math.tanh(z - half), math.tanh(z + half), n


def _check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{what} column(s) {missing} not in the frame (columns: {', '.join(map(str, df.columns))})")


def _groups(df: pd.DataFrame, by: list[str]):
    """(key tuple, part) per group of `by`, NaN keys kept; the whole frame when `by` is empty."""
    if not by:
        yield (), df
        return
    for key, part in df.groupby(by, sort=True, dropna=False):
        yield key, part


def summary(df: pd.DataFrame, *, by: Sequence[str], metrics: Sequence[str] = SUMMARY_METRICS,
            seed: str = SEED, level: float = LEVEL) -> pd.DataFrame:
    """Per group of `by` and metric: `mean`, `ci_low`, `ci_high` (Student-t `level` interval over
    seeds) and `n_seeds`, one row each (columns: by..., metric, mean, ci_low, ci_high, n_seeds).

    Rows of one seed in a group (e.g. the attacks of a cell, when `attack` is not in `by`) are averaged
    first, so each seed counts once. Metrics missing from `df` are skipped; filter the rows first
    (e.g. `status == "ok"`): nothing is filtered here."""
    by = list(by)
    _check_columns(df, [*by, seed], "group or seed")
    metrics = [m for m in metrics if m in df.columns]
    lines = []
    for key, part in _groups(df, by):
        per_seed = part.groupby(seed)[metrics].mean()
        for metric in metrics:
            lines.append({**dict(zip(by, key)), "metric": metric,
                          **dict(zip(INTERVAL, t_interval(per_seed[metric], level=level)))})
    return pd.DataFrame(lines, columns=[*by, "metric", *INTERVAL])


def paired_effect(df: pd.DataFrame, *, by: Sequence[str], metric: str = "attack_acc",
                  condition: str = "target_model", treated: str = "pruned", control: str = "original",
                  seed: str = SEED, level: float = LEVEL) -> pd.DataFrame:
    """Treated minus control paired by seed, per group of `by` (e.g. dataset, arch, method, sparsity,
    attack): within a seed the mean of `metric` over the treated rows minus that over the control
    rows, then `effect` (the mean difference), `ci_low`, `ci_high` (Student-t over the seeds'
    differences) and `n_seeds` (seeds that have both). `treated_mean` and `control_mean` are the
    means over those same seeds."""
    by = list(by)
    _check_columns(df, [*by, seed, condition, metric], "group, seed, condition or metric")
    lines = []
    for key, part in _groups(df[df[condition].isin([treated, control])], by):
        per_seed = part.groupby([seed, condition])[metric].mean().unstack(condition)
        per_seed = per_seed.reindex(columns=[treated, control]).dropna()
        effect, low, high, n = t_interval(per_seed[treated] - per_seed[control], level=level)
        lines.append({**dict(zip(by, key)), "metric": metric,
                      "treated_mean": float(per_seed[treated].mean()) if n else math.nan,
                      "control_mean": float(per_seed[control].mean()) if n else math.nan,
                      "effect": effect, "ci_low": low, "ci_high": high, "n_seeds": n})
    return pd.DataFrame(lines, columns=[*by, "metric", "treated_mean", "control_mean", "effect", "ci_low",
                                        "ci_high", "n_seeds"])


def wide(table: pd.DataFrame, *, by: Sequence[str]) -> pd.DataFrame:
    """A `summary` table with one row per group and, per metric, the columns `<metric>` (the mean),
    `<metric>_ci_low`, `<metric>_ci_high` and `<metric>_n_seeds`, metrics in their order."""
    by = list(by)
    metrics = list(dict.fromkeys(table["metric"]))
    lines = []
    for key, part in _groups(table, by):
        rows = part.set_index("metric")
        line = dict(zip(by, key))
        for m in metrics:
            found = m in rows.index
            line.update({m: rows.at[m, "mean"] if found else math.nan,
                         f"{m}_ci_low": rows.at[m, "ci_low"] if found else math.nan,
                         f"{m}_ci_high": rows.at[m, "ci_high"] if found else math.nan,
                         f"{m}_n_seeds": int(rows.at[m, "n_seeds"]) if found else 0})
        lines.append(line)
    return pd.DataFrame(lines) if lines else pd.DataFrame(columns=by)
