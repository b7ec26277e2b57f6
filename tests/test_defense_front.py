"""Defenses compared per cell (`miaray.pareto.defense_front`): seed means with intervals of test accuracy,
of the best attack's balanced accuracy and of the best TPR at 1% FPR, the Pareto front across defenses
(checked on a hand case), the figure and table of analysis/figures.py and the report's section. Synthetic
rows written as unit files, loaded by `analysis.data.load_experiments`, like tests/test_claims.py."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `analysis/` is a folder of scripts at the root, not an installed package

from analysis.data import load_experiments  # noqa: E402
from analysis.figures import FIGURES, fig_defense_front, table_defense_front, write_figures  # noqa: E402
from analysis.report import render  # noqa: E402
from analysis.tables import DEFENSE_FRONT_COMMAND  # noqa: E402
from miaray import results  # noqa: E402
from miaray.results import (DEFENSE_FRONT_BY, DEFENSE_FRONT_OBJECTIVES, DEFENSE_TPR_FRONT_OBJECTIVES,  # noqa: E402
                            defense_front, pareto_front)
from miaray.stats import t_interval  # noqa: E402

SEEDS = range(4)
NOISE = np.array([0.004, -0.002, 0.002, -0.0015])   # per seed; mean 0.000625, not 0
CELL = {"dataset": "digits", "arch": "resnet18", "width": 0.125, "method": "l1_unstructured", "sparsity": 0.7,
        "shadow_method": "l1_unstructured", "shadow_sparsity": 0.7, "split_ratio": "45/45/10", "status": "ok",
        "error": "", "defense_lambda": math.nan, "defense_noise_multiplier": math.nan, "defense_alpha": math.nan}
ATTACKS = ("conf", "mentr", "samia")
# (defense, hyperparameter column, value) -> (test accuracy, best attack accuracy, best TPR at 1% FPR), the
# non-adaptive view first, then the adaptive one. The best attack is SAMIA, 0.02 above the others, so
# the seed noise never changes which attack is best and the means below are the points' means.
BASIC = (0.80, 0.62, 0.10)
POINTS = {
    ("ppb", "defense_lambda", 1.0): ((0.79, 0.57, 0.09), (0.79, 0.61, 0.10)),
    ("ppb", "defense_lambda", 4.0): ((0.78, 0.50, 0.08), (0.78, 0.59, 0.09)),   # calibration broken, signal left
    ("ppb", "defense_lambda", 16.0): ((0.70, 0.52, 0.05), (0.70, 0.58, 0.06)),
    ("dp", "defense_noise_multiplier", 0.5): ((0.75, 0.55, 0.04), (0.75, 0.56, 0.05)),
    ("dp", "defense_noise_multiplier", 2.0): ((0.65, 0.49, 0.02), (0.65, 0.53, 0.03)),
    ("adv", "defense_alpha", 1.0): ((0.795, 0.60, 0.07), (0.795, 0.615, 0.08)),
    ("adv", "defense_alpha", 4.0): ((0.76, 0.56, 0.06), (0.76, 0.57, 0.07)),
}
# By hand: (max test accuracy, min best attack accuracy) among Basic and the points above.
FRONT = {False: {"basic", "ppb lambda=1", "ppb lambda=4", "dp noise_multiplier=2", "adv alpha=1"},
         # Adaptive: every point but PPB lambda=16, which DP noise_multiplier=0.5 beats on both.
         True: {"basic", "ppb lambda=1", "ppb lambda=4", "dp noise_multiplier=0.5", "dp noise_multiplier=2",
                "adv alpha=1", "adv alpha=4"}}


def _unit_rows(cell: dict, unit_id: str, seed: int, test_acc: float, best: float, tpr: float) -> list[dict]:
    rows = []
    for attack in ATTACKS:
        margin = 0.0 if attack == "samia" else 0.02 + 0.01 * (attack == "mentr")
        rows.append({**cell, "unit_id": unit_id, "seed": seed, "target_model": "pruned", "attack": attack,
                     "attack_acc": best - margin + NOISE[seed], "attack_auc": best + 0.05,
                     # Mentr cannot measure TPR at 1% FPR here (NaN), Conf trails SAMIA.
                     "tpr_at_fpr_0.01": math.nan if attack == "mentr" else tpr - margin + NOISE[seed],
                     "target_test_acc": test_acc + 2 * NOISE[seed]})
    return rows


def write_defense_sweep(exp: Path, *, defenses: bool = True) -> None:
    """Basic and every point of POINTS (adaptive and not) in one cell, plus rows that must not count:
    the original target, shadows pruned at another sparsity, a failed unit, an attack only Basic ran, and a
    second cell with Basic alone."""
    for seed in SEEDS:
        rows = _unit_rows({**CELL, "defense": "basic", "adaptive": False}, f"basic-{seed}", seed, *BASIC)
        # LiRA ran on Basic only: the defended points never faced it, so it is left out of every maximum.
        rows.append({**rows[0], "attack": "lira", "attack_acc": 0.9, "tpr_at_fpr_0.01": 0.5})
        rows.append({**rows[0], "target_model": "original", "attack_acc": 0.99, "target_test_acc": 0.99})
        results.write_unit_rows(experiment=exp, unit_id=f"basic-{seed}", rows=rows)
        results.write_unit_rows(experiment=exp, unit_id=f"basic-s0.5-{seed}", rows=_unit_rows(
            {**CELL, "sparsity": 0.5, "shadow_sparsity": 0.5, "defense": "basic", "adaptive": False},
            f"basic-s0.5-{seed}", seed, *BASIC))
        if not defenses:
            continue
        for (defense, column, value), views in POINTS.items():
            for adaptive, numbers in zip((False, True), views):
                unit_id = f"{defense}-{value:g}-{'a' if adaptive else 'n'}-{seed}"
                cell = {**CELL, "defense": defense, "adaptive": adaptive, column: value}
                results.write_unit_rows(experiment=exp, unit_id=unit_id, rows=_unit_rows(cell, unit_id, seed, *numbers))
        unknown = {**CELL, "shadow_sparsity": 0.5, "defense": "ppb", "adaptive": False, "defense_lambda": 4.0}
        results.write_unit_rows(experiment=exp, unit_id=f"unknown-{seed}", rows=_unit_rows(
            unknown, f"unknown-{seed}", seed, 0.1, 0.99, 0.99))
    results.write_unit_rows(experiment=exp, unit_id="failed-ppb", rows=[
        {**CELL, "unit_id": "failed-ppb", "seed": 0, "defense": "ppb", "adaptive": False, "defense_lambda": 4.0,
         "target_model": "pruned", "attack": "samia", "status": "failed", "error": "boom"}])


def _label(row: pd.Series) -> str:
    return " ".join(part for part in (row["defense"], row["setting"]) if part)


@pytest.fixture
def experiment(tmp_path: Path):
    write_defense_sweep(tmp_path / "exp")
    return load_experiments([tmp_path / "exp"])


def test_front_across_defenses_on_a_hand_case(experiment) -> None:
    points = defense_front(experiment.rows)
    # One cell (Basic alone at sparsity 0.5 compares nothing), two views, Basic + 7 settings in each.
    assert set(points["sparsity"]) == {0.7} and list(points["adaptive"].value_counts().sort_index()) == [8, 8]
    assert set(points["attacks"]) == {"conf, mentr, samia"}  # LiRA ran on Basic only
    assert set(points["best_attack"]) == {"samia"} and set(points["best_tpr_attack"]) == {"samia"}
    for adaptive, expected in FRONT.items():
        view = points[points["adaptive"] == adaptive]
        assert {_label(r) for _, r in view[view["on_front"]].iterrows()} == expected, adaptive
        assert list(view["defense"]) == ["basic", "ppb", "ppb", "ppb", "dp", "dp", "adv", "adv"]
        assert list(view["setting"])[:4] == ["", "lambda=1", "lambda=4", "lambda=16"]
    # Basic is one point serving both views: the same numbers in each.
    basic = points[points["defense"] == "basic"].drop(columns=["adaptive", "on_front", "on_front_tpr"])
    assert len(basic) == 2 and basic.iloc[0].equals(basic.iloc[1])
    # The documented objectives reproduce the flags.
    front = pareto_front(points, objectives=DEFENSE_FRONT_OBJECTIVES, by=DEFENSE_FRONT_BY)
    assert front.index.equals(points.index[points["on_front"]])
    tpr_front = pareto_front(points, objectives=DEFENSE_TPR_FRONT_OBJECTIVES, by=DEFENSE_FRONT_BY)
    assert tpr_front.index.equals(points.index[points["on_front_tpr"]])
    # PPB lambda=4 breaks the calibration (best attack accuracy near 0.5, on the front) while the TPR at
    # 1% FPR still shows most of Basic's signal.
    ppb4 = points[(points["setting"] == "lambda=4") & ~points["adaptive"]].iloc[0]
    assert ppb4["best_attack_acc"] == pytest.approx(0.50 + NOISE.mean())
    assert ppb4["best_tpr_at_fpr_0.01"] == pytest.approx(0.08 + NOISE.mean())


def test_seed_means_and_intervals_match_t_interval(experiment) -> None:
    points = defense_front(experiment.rows).set_index(["adaptive", "defense", "setting"])
    rows = experiment.rows
    rows = rows[(rows["status"] == "ok") & (rows["target_model"] == "pruned") & (rows["sparsity"] == 0.7)
                & (rows["shadow_sparsity"] == 0.7) & rows["attack"].isin(ATTACKS)]
    checked = 0
    for (defense, column, value), _ in POINTS.items():
        for adaptive in (False, True):
            units = rows[(rows["defense"] == defense) & (rows[column] == value) & (rows["adaptive"] == adaptive)]
            per_unit = units.groupby("seed").agg(test=("target_test_acc", "mean"), best=("attack_acc", "max"),
                                                 tpr=("tpr_at_fpr_0.01", "max"))
            point = points.loc[(adaptive, defense, f"{column.removeprefix('defense_')}={value:g}")]
            for metric, values in (("target_test_acc", per_unit["test"]), ("best_attack_acc", per_unit["best"]),
                                   ("best_tpr_at_fpr_0.01", per_unit["tpr"])):
                mean, low, high, n = t_interval(values)
                assert n == len(SEEDS) and low < mean < high
                assert (point[metric], point[f"{metric}_ci_low"], point[f"{metric}_ci_high"]) == \
                    pytest.approx((mean, low, high)), (defense, value, adaptive, metric)
            assert point["n_seeds"] == len(SEEDS)
            checked += 1
    assert checked == 2 * len(POINTS)


def test_one_seed_has_no_interval_and_a_nan_tpr_is_skipped(tmp_path: Path) -> None:
    write_defense_sweep(tmp_path / "exp")
    rows = load_experiments([tmp_path / "exp"]).rows
    rows = rows[rows["seed"] == 0].copy()
    rows.loc[rows["unit_id"].str.startswith("dp-2-n"), "tpr_at_fpr_0.01"] = np.nan  # no attack measured it
    points = defense_front(rows)
    assert (points["n_seeds"] == 1).all() and points["target_test_acc_ci_low"].isna().all()
    dp2 = points[(points["setting"] == "noise_multiplier=2") & ~points["adaptive"]].iloc[0]
    assert math.isnan(dp2["best_tpr_at_fpr_0.01"]) and not dp2["on_front_tpr"]
    assert dp2["on_front"]  # its accuracy numbers are there


def test_no_defended_rows_give_an_empty_frame_with_the_columns(tmp_path: Path) -> None:
    write_defense_sweep(tmp_path / "exp", defenses=False)
    points = defense_front(load_experiments([tmp_path / "exp"]).rows)
    assert points.empty and {"on_front", "on_front_tpr", "best_attack_acc", *DEFENSE_FRONT_BY} <= set(points.columns)


def test_figure_and_table_are_written(experiment, tmp_path: Path) -> None:
    out = tmp_path / "figures"
    out.mkdir()
    files = fig_defense_front(experiment, out)
    assert [p.name for p in files] == ["defense_front_digits_resnet18_w0.125_l1_unstructured_s0.7.png"]
    assert all(p.stat().st_size > 10_000 and p.read_bytes()[:4] == b"\x89PNG" for p in files)
    table = table_defense_front(experiment, out)
    assert sorted(p.suffix for p in table) == [".csv", ".md"]
    csv = pd.read_csv(out / "table_defense_front.csv")
    assert len(csv) == 16 and csv["on_front"].sum() == sum(len(v) for v in FRONT.values())
    assert f"{0.78 + 2 * NOISE.mean():.3f} [" in (out / "table_defense_front.md").read_text()
    assert fig_defense_front in FIGURES.values() and table_defense_front in FIGURES.values()


def test_without_defended_rows_the_figure_is_skipped_with_the_command(tmp_path: Path) -> None:
    write_defense_sweep(tmp_path / "exp", defenses=False)
    exp = load_experiments([tmp_path / "exp"])
    assert DEFENSE_FRONT_COMMAND == "python sweeps/full_grid.py --preset defenses"
    outcomes = {o.name: o for o in write_figures(exp, tmp_path / "out")}
    front = [o for name, o in outcomes.items() if name.startswith("Defenses compared")]
    assert len(front) == 2
    for outcome in front:
        assert not outcome.files and DEFENSE_FRONT_COMMAND in outcome.skipped, outcome
    page = render(exp)
    section = page.split("What defenses buy back", 1)[1].split("<h2>", 1)[0]
    assert DEFENSE_FRONT_COMMAND in section and "<img" not in section


def test_report_has_the_section_with_figure_table_and_claims(experiment) -> None:
    page = render(experiment)
    assert page.count("What defenses buy back</h2>") == 1
    section = page.split("What defenses buy back</h2>", 1)[1].split("<h2>", 1)[0]
    assert section.count("<img") == 1 and "data:image/png;base64," in section
    assert f"{0.78 + 2 * NOISE.mean():.3f} [" in section and "lambda=16" in section and "on_front" in section
    assert "C5a" in section and "C5b" in section  # the claim rows there are (C5c, C7, C8 when they exist)
    # The figure is shown in its section, not a second time among all figures.
    assert page.count("defense_front_digits_resnet18") == 1
