"""Pareto fronts of result rows: the rows no other row beats on every objective.

Used for the defense trade-off (maximise test accuracy, minimise attack accuracy) but generic in the
objectives. Conventions:

- A row dominates another when it is at least as good on every objective and strictly better on one.
- A row with NaN in any objective is never on a front (an unmeasured point cannot be compared).
- Ties: rows with identical objective values do not dominate each other, so all copies of a
  non-dominated point are kept (e.g. two hyperparameters that reach the same numbers).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

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
