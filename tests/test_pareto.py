"""pareto_front against a brute-force definition of dominance, on random data with ties and NaNs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from miaray.pareto import pareto_front


def brute_force(df: pd.DataFrame, objectives: dict[str, str], by: list[str] | None) -> set:
    """Index labels of the front, straight from the definition (O(n^2) Python loops)."""
    front = set()
    groups = df.groupby(by, dropna=False) if by else [(None, df)]
    for _, group in groups:
        points = {label: [row[c] if s == "max" else -row[c] for c, s in objectives.items()]
                  for label, row in group.iterrows()}
        for label, p in points.items():
            if any(math.isnan(v) for v in p):
                continue
            dominated = any(all(qv >= pv for qv, pv in zip(q, p)) and any(qv > pv for qv, pv in zip(q, p))
                            for other, q in points.items()
                            if other != label and not any(math.isnan(v) for v in q))
            if not dominated:
                front.add(label)
    return front


def random_frame(rng: np.random.Generator, n: int, k: int) -> pd.DataFrame:
    # Few distinct values force many ties; some NaNs; a shuffled, non-default index.
    values = rng.integers(0, 6, size=(n, k)).astype(float)
    values[rng.random((n, k)) < 0.08] = np.nan
    df = pd.DataFrame(values, columns=[f"o{i}" for i in range(k)],
                      index=rng.permutation(np.arange(100, 100 + n)))
    df["group"] = rng.choice(["a", "b", "c"], size=n)
    df["seed"] = rng.integers(0, 2, size=n)
    return df


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("by", [None, ["group"], ["group", "seed"]])
def test_matches_brute_force(k: int, by: list[str] | None) -> None:
    rng = np.random.default_rng(k * 10 + len(by or []))
    for trial in range(15):
        df = random_frame(rng, n=int(rng.integers(1, 60)), k=k)
        senses = [("max", "min")[int(b)] for b in rng.integers(0, 2, size=k)]
        objectives = {f"o{i}": s for i, s in enumerate(senses)}
        got = pareto_front(df, objectives=objectives, by=by)
        assert set(got.index) == brute_force(df, objectives, by), (trial, objectives)
        # A subset of the input, original order kept.
        assert list(got.index) == [label for label in df.index if label in set(got.index)]


def test_identical_points_all_kept_and_nan_never_on_front() -> None:
    df = pd.DataFrame({"acc": [0.9, 0.9, 0.8, np.nan, 1.0],
                       "attack": [0.6, 0.6, 0.7, 0.1, np.nan]})
    front = pareto_front(df, objectives={"acc": "max", "attack": "min"})
    assert list(front.index) == [0, 1]  # both copies of (0.9, 0.6); the NaN rows never


def test_infinite_values_compare_like_numbers() -> None:
    df = pd.DataFrame({"x": [-np.inf, -np.inf, 1.0], "y": [5.0, 1.0, -np.inf]})
    front = pareto_front(df, objectives={"x": "max", "y": "max"})
    assert list(front.index) == [0, 2]


def test_large_two_objective_front_is_fast_and_exact() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"acc": rng.random(200_000), "attack": rng.random(200_000)})
    front = pareto_front(df, objectives={"acc": "max", "attack": "min"})
    # Each front point beats every other front point on one objective: sorted by acc, attack rises.
    ordered = front.sort_values("acc")
    assert ordered["attack"].is_monotonic_increasing
    best_acc = df["acc"].idxmax()
    assert best_acc in front.index and df["attack"].idxmin() in front.index
    # Exactness on a slice small enough for the brute force.
    small = df.iloc[:300]
    assert set(pareto_front(small, objectives={"acc": "max", "attack": "min"}).index) == \
        brute_force(small, {"acc": "max", "attack": "min"}, None)


def test_empty_and_bad_arguments() -> None:
    empty = pd.DataFrame({"a": pd.Series([], dtype=float), "g": pd.Series([], dtype=str)})
    assert pareto_front(empty, objectives={"a": "max"}, by=["g"]).empty
    df = pd.DataFrame({"a": [1.0], "b": [2.0]})
    with pytest.raises(ValueError, match="choose one of"):
        pareto_front(df, objectives={"a": "maximise"})
    with pytest.raises(KeyError, match="zzz"):
        pareto_front(df, objectives={"zzz": "max"})
    with pytest.raises(KeyError, match="nope"):
        pareto_front(df, objectives={"a": "max"}, by=["nope"])
    with pytest.raises(ValueError, match="empty"):
        pareto_front(df, objectives={})


def test_brute_force_helper_sanity() -> None:
    # The reference itself on a case worked by hand: (2,2) dominates (1,1); (3,0) and (0,3) survive.
    df = pd.DataFrame(list(itertools.chain([(2, 2), (1, 1), (3, 0), (0, 3)])), columns=["x", "y"], dtype=float)
    assert brute_force(df, {"x": "max", "y": "max"}, None) == {0, 2, 3}
