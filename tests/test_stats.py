"""Means with intervals over seeds, paired effects and correlation intervals, against scipy on
hand-made frames; one seed gives NaN bounds."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

import miaray.pareto
from miaray.results import load, paired_effect, pareto_front, summary  # the one import for the pandas side
from miaray.stats import pearson_interval, t_interval, wide


def _frame() -> pd.DataFrame:
    """Group 'a': 4 seeds, two rows (attacks) per seed; group 'b': one seed; group 'c': a NaN seed."""
    rows = []
    per_seed = {0: (0.60, 0.70), 1: (0.66, 0.70), 2: (0.59, 0.75), 3: (0.72, 0.80)}
    for seed, (x, y) in per_seed.items():
        rows += [{"cell": "a", "seed": seed, "attack_acc": x, "target_test_acc": 0.9},
                 {"cell": "a", "seed": seed, "attack_acc": y, "target_test_acc": 0.9}]
    rows.append({"cell": "b", "seed": 0, "attack_acc": 0.55, "target_test_acc": 0.8})
    rows += [{"cell": "c", "seed": 0, "attack_acc": 0.5, "target_test_acc": 0.7},
             {"cell": "c", "seed": 1, "attack_acc": math.nan, "target_test_acc": 0.7},
             {"cell": "c", "seed": 2, "attack_acc": 0.6, "target_test_acc": 0.7}]
    return pd.DataFrame(rows)


def test_summary_is_the_student_t_interval_over_seed_means():
    table = summary(_frame(), by=["cell"], metrics=("attack_acc", "target_test_acc"))
    assert list(table.columns) == ["cell", "metric", "mean", "ci_low", "ci_high", "n_seeds"]
    a = table[(table.cell == "a") & (table.metric == "attack_acc")].iloc[0]
    seed_means = np.array([0.65, 0.68, 0.67, 0.76])  # each seed's two rows averaged first
    low, high = st.t.interval(0.95, df=3, loc=seed_means.mean(), scale=st.sem(seed_means))
    assert (a["mean"], a["ci_low"], a["ci_high"]) == pytest.approx((seed_means.mean(), low, high))
    assert a["n_seeds"] == 4
    # A constant metric has a zero-width interval, not NaN.
    acc = table[(table.cell == "a") & (table.metric == "target_test_acc")].iloc[0]
    assert acc["ci_low"] == acc["ci_high"] == pytest.approx(0.9)
    # One seed: the mean, and NaN bounds (never a made-up interval).
    b = table[(table.cell == "b") & (table.metric == "attack_acc")].iloc[0]
    assert b["mean"] == 0.55 and math.isnan(b["ci_low"]) and math.isnan(b["ci_high"]) and b["n_seeds"] == 1
    # A NaN value (an unmeasurable metric) leaves its seed out.
    c = table[(table.cell == "c") & (table.metric == "attack_acc")].iloc[0]
    low, high = st.t.interval(0.95, df=1, loc=0.55, scale=st.sem([0.5, 0.6]))
    assert (c["mean"], c["ci_low"], c["ci_high"], c["n_seeds"]) == pytest.approx((0.55, low, high, 2))
    # Over everything: one group; a 90% level is narrower.
    assert len(summary(_frame(), by=[], metrics=("attack_acc",))) == 1
    narrow = summary(_frame(), by=["cell"], metrics=("attack_acc",), level=0.9).set_index("cell")
    assert narrow.loc["a", "ci_high"] - narrow.loc["a", "ci_low"] < a["ci_high"] - a["ci_low"]
    flat = wide(table, by=["cell"]).set_index("cell")
    assert flat.loc["a", "attack_acc"] == a["mean"] and flat.loc["a", "attack_acc_ci_high"] == a["ci_high"]
    assert flat.loc["b", "attack_acc_n_seeds"] == 1
    with pytest.raises(KeyError, match="'arch'"):
        summary(_frame(), by=["arch"])


def test_paired_effect_is_the_t_interval_of_within_seed_differences():
    rng = np.random.default_rng(0)
    seed_level = rng.normal(0.7, 0.05, 5)  # a seed-to-seed spread shared by both conditions
    rows = []
    for seed, level in enumerate(seed_level):
        rows.append({"attack": "conf", "seed": seed, "target_model": "original", "attack_acc": level})
        for attack_acc in (level + 0.02 + 0.001 * seed, level + 0.02 + 0.003 * seed):
            rows.append({"attack": "conf", "seed": seed, "target_model": "pruned", "attack_acc": attack_acc})
    rows.append({"attack": "conf", "seed": 9, "target_model": "pruned", "attack_acc": 0.1})  # no original: unpaired
    rows.append({"attack": "mentr", "seed": 0, "target_model": "pruned", "attack_acc": 0.6})
    rows.append({"attack": "mentr", "seed": 0, "target_model": "original", "attack_acc": 0.5})
    effect = paired_effect(pd.DataFrame(rows), by=["attack"]).set_index("attack")
    diffs = 0.02 + 0.002 * np.arange(5)
    low, high = st.t.interval(0.95, df=4, loc=diffs.mean(), scale=st.sem(diffs))
    conf = effect.loc["conf"]
    assert (conf["effect"], conf["ci_low"], conf["ci_high"], conf["n_seeds"]) == pytest.approx(
        (diffs.mean(), low, high, 5))
    assert conf["control_mean"] == pytest.approx(seed_level.mean())
    assert conf["treated_mean"] - conf["control_mean"] == pytest.approx(conf["effect"])
    # The pairing removes the seeds' common spread: the interval is far narrower than the spread itself.
    assert conf["ci_high"] - conf["ci_low"] < seed_level.std()
    mentr = effect.loc["mentr"]
    assert mentr["effect"] == pytest.approx(0.1) and math.isnan(mentr["ci_low"]) and mentr["n_seeds"] == 1


def test_pearson_interval_is_fisher_z():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = 0.5 * x + rng.normal(size=30)
    r, low, high, n = pearson_interval(x, y)
    reference = st.pearsonr(x, y)
    expected = reference.confidence_interval(0.95)  # scipy's is the Fisher-z interval too
    assert (r, low, high, n) == pytest.approx((reference.statistic, expected.low, expected.high, 30))
    assert all(math.isnan(v) for v in pearson_interval([1, 2, 3], [1, 3, 2])[1:3])  # below 4 points
    assert math.isnan(pearson_interval([1, 1, 1, 1], [1, 2, 3, 4])[0])                 # constant x
    assert t_interval([])[3] == 0 and math.isnan(t_interval([])[0])


def test_one_import_for_the_pandas_side(tmp_path):
    assert pareto_front is miaray.pareto.pareto_front  # re-exported, not a copy
    (tmp_path / "empty").mkdir()
    assert load(tmp_path / "empty").empty  # an experiment with no finished unit yet
