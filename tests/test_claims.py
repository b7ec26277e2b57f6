"""analysis/claims.py: planted effects, nulls and reversals give holds / inconclusive / contradicted;
claims without input are 'not run' with a command. (tests/test_analysis.py runs the script on the
results of a real tiny sweep.)"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `analysis/` is a folder of scripts at the root, not an installed package

from analysis.claims import COLUMNS, claims_table  # noqa: E402
from analysis.data import load_experiments  # noqa: E402
from miaray import results  # noqa: E402

SEEDS = range(5)
SPARSITIES = (0.5, 0.7, 0.9)
# Seed noise with mean 0 over the seeds; times (1, 0, -1) over the sparsities: no slope on average.
NOISE = np.array([0.002, -0.002, 0.004, -0.004, 0.0])
ORIGINAL_NOISE = np.array([0.003, 0.001, -0.002, -0.003, 0.001])  # the original's own, also mean 0
SHAPE = dict(zip(SPARSITIES, (1.0, 0.0, -1.0)))
# Pruned minus original (at sparsity 0.7) and slope over sparsity, per attack: conf rises (planted
# effect), mentr does nothing (planted null), samia falls (planted reversal).
PLANTED = {"conf": (0.05, 0.1), "mentr": (0.0, 0.0), "samia": (-0.05, -0.1)}
ORIGINAL_ACC = 0.6
CELL = {"dataset": "digits", "arch": "resnet18", "width": 0.25, "method": "l1_unstructured", "status": "ok",
        "error": "", "split_ratio": "45/45/10", "defense": "basic", "adaptive": False, "defense_lambda": math.nan}


def _attack_acc(attack: str, sparsity: float, seed: int) -> float:
    effect, slope = PLANTED[attack]
    return ORIGINAL_ACC + effect + slope * (sparsity - 0.7) + NOISE[seed] * SHAPE[sparsity]


def write_synthetic(exp: Path, *, defenses: bool = True, unknown: bool = True, samia: bool = True) -> None:
    attacks = [a for a in PLANTED if samia or a != "samia"]
    accs = {(s, seed): _attack_acc("samia", s, seed) for s in SPARSITIES for seed in SEEDS}
    # Gaps per unit against SAMIA's accuracy (the headline attack): the confidence gap follows it, the
    # generalization gap mirrors it, the sensitivity gap's magnitude is orthogonal to it (r = 0 exactly;
    # negative, as measured: members' predictions are the less sensitive, and C3 reads |gap|).
    centred = np.array(list(accs.values())) - np.mean(list(accs.values()))
    other = np.random.default_rng(0).normal(size=len(centred))
    other -= other @ centred / (centred @ centred) * centred
    gaps = {key: (2 * acc, -(5.0 + o), 1 - acc) for (key, acc), o in zip(accs.items(), other)}
    for sparsity in SPARSITIES:
        for seed in SEEDS:
            cell = {**CELL, "sparsity": sparsity, "seed": seed, "shadow_method": "l1_unstructured",
                    "shadow_sparsity": sparsity}
            unit_id = f"basic-{sparsity}-{seed}"
            confidence, sensitivity, generalization = gaps[(sparsity, seed)]
            rows = [{**cell, "unit_id": unit_id, "target_model": "pruned", "attack": a,
                     "attack_acc": _attack_acc(a, sparsity, seed), "target_test_acc": 0.8,
                     "confidence_gap": confidence, "sensitivity_gap": sensitivity,
                     "generalization_gap": generalization} for a in attacks]
            rows += [{**cell, "unit_id": unit_id, "target_model": "original", "attack": a,
                      "attack_acc": ORIGINAL_ACC + ORIGINAL_NOISE[seed], "target_test_acc": 0.85} for a in attacks]
            results.write_unit_rows(experiment=exp, unit_id=unit_id, rows=rows)
            if defenses and sparsity == 0.7:
                # PPB: lambda 4 brings every attack to 0.5 +- 0.01 at a 0.01 cost; lambda 16 costs 0.2.
                for lam, cost in ((4.0, 0.01), (16.0, 0.2)):
                    ppb = {**cell, "defense": "ppb", "defense_lambda": lam, "unit_id": f"ppb{lam:g}-{seed}"}
                    results.write_unit_rows(experiment=exp, unit_id=ppb["unit_id"], rows=[
                        {**ppb, "target_model": "pruned", "attack": a, "attack_acc": 0.5 + NOISE[seed] * 2,
                         "target_test_acc": 0.8 - cost + NOISE[seed]} for a in attacks])
            if unknown:
                # Shadows pruned at another sparsity: the attacks lose 1% (relative) of their accuracy.
                off = {**cell, "shadow_sparsity": 0.0, "unit_id": f"unknown-{sparsity}-{seed}"}
                results.write_unit_rows(experiment=exp, unit_id=off["unit_id"], rows=[
                    {**off, "target_model": "pruned", "attack": a,
                     "attack_acc": _attack_acc(a, sparsity, seed) * (0.99 + NOISE[seed])} for a in attacks])


def _verdicts(table: pd.DataFrame, claim: str, **scope: str) -> list[str]:
    rows = table[table["claim"] == claim]
    for column, value in scope.items():
        rows = rows[rows[column] == value]
    return list(rows["verdict"])


def test_planted_effects_nulls_and_reversals(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "exp")
    table = claims_table(load_experiments([tmp_path / "exp"]))
    assert list(table.columns) == COLUMNS
    for sparsity in ("0.5", "0.7", "0.9"):
        assert _verdicts(table, "C1", sparsity=sparsity, attack="conf") == ["holds"]
        assert _verdicts(table, "C1", sparsity=sparsity, attack="mentr") == ["inconclusive"]
        assert _verdicts(table, "C1", sparsity=sparsity, attack="samia") == ["contradicted"]
        assert _verdicts(table, "C1", sparsity=sparsity, attack="best") == ["holds"]  # conf is the best
    c1 = table[(table["claim"] == "C1") & (table["sparsity"] == "0.5") & (table["attack"] == "conf")].iloc[0]
    assert c1["effect"] == pytest.approx(0.05 - 0.1 * 0.2) and c1["n"] == 5  # noise cancels over seeds
    assert c1["width"] == "0.25" and c1["method"] == "l1_unstructured"
    assert _verdicts(table, "C2", attack="conf") == ["holds"]
    assert _verdicts(table, "C2", attack="mentr") == ["inconclusive"]
    assert _verdicts(table, "C2", attack="samia") == ["contradicted"]
    c2 = table[(table["claim"] == "C2") & (table["attack"] == "conf")].iloc[0]
    assert c2["effect"] == pytest.approx(0.1)
    assert _verdicts(table, "C3", setting="|confidence gap|") == ["holds"]
    assert _verdicts(table, "C3", setting="|sensitivity gap|") == ["inconclusive"]
    assert _verdicts(table, "C3", setting="|generalization gap|") == ["contradicted"]
    # SAMIA is the weakest attack here: contradicted in each high-sparsity cell and pooled.
    assert _verdicts(table, "C4") == ["contradicted"] * 3
    assert set(table.loc[table["claim"] == "C4", "attack"]) == {"samia vs conf", "samia vs strongest other"}
    assert _verdicts(table, "C5a") == ["holds", "holds"]
    assert _verdicts(table, "C5b", setting="ppb lambda=4") == ["holds"]
    assert _verdicts(table, "C5b", setting="ppb lambda=16") == ["contradicted"]
    assert _verdicts(table, "C6", setting="study: sparsity") == ["holds"]
    assert table.loc[table["claim"] == "C6", "effect"].item() == pytest.approx(0.01)
    assert "not run" not in set(table["verdict"])


def test_one_seed_is_inconclusive_and_missing_inputs_are_not_run(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "exp", defenses=False, unknown=False, samia=False)
    rows = load_experiments([tmp_path / "exp"])
    table = claims_table(rows)
    for claim, command in (("C4", "--attacks all"), ("C5a", "--defense ppb"), ("C5b", "--defense ppb"),
                           ("C6", "sweeps/unknown_pruning.py")):
        line = table[table["claim"] == claim]
        assert list(line["verdict"]) == ["not run"] and command in line["command"].item(), claim
    one_seed = rows
    one_seed.rows = rows.rows[rows.rows["seed"] == 0]
    single = claims_table(one_seed)
    tested = single[single["claim"].isin(["C1", "C2"])]
    # One seed: an effect but no interval, so nothing is decided (C2 needs two seeds' slopes too).
    assert len(tested) and set(tested["verdict"]) == {"inconclusive"} and tested["ci_low"].isna().all()
