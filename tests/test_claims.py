"""analysis/claims.py: planted effects, nulls and reversals give holds / inconclusive / contradicted;
claims without input are 'not run' with a command. `write_synthetic` plants the grid's claims (C1-C6),
`write_defenses` the defense claims (C5 in every view, C5c, C7, C8). (tests/test_analysis.py runs the
script on the results of a real tiny sweep.)"""

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
                     "attack_auc": 0.7 + NOISE[seed],
                     "confidence_gap": confidence, "sensitivity_gap": sensitivity,
                     "generalization_gap": generalization} for a in attacks]
            rows += [{**cell, "unit_id": unit_id, "target_model": "original", "attack": a,
                      "attack_acc": ORIGINAL_ACC + ORIGINAL_NOISE[seed], "target_test_acc": 0.85} for a in attacks]
            results.write_unit_rows(experiment=exp, unit_id=unit_id, rows=rows)
            if defenses and sparsity == 0.7:
                # PPB: lambda 4 brings every attack to 0.5 +- 0.01 at a 0.01 cost; lambda 16 costs 0.2. The
                # scores move away from the shadows' threshold, not together: the AUC stays Basic's (+- noise).
                for lam, cost in ((4.0, 0.01), (16.0, 0.2)):
                    ppb = {**cell, "defense": "ppb", "defense_lambda": lam, "unit_id": f"ppb{lam:g}-{seed}"}
                    results.write_unit_rows(experiment=exp, unit_id=ppb["unit_id"], rows=[
                        {**ppb, "target_model": "pruned", "attack": a, "attack_acc": 0.5 + NOISE[seed] * 2,
                         "attack_auc": 0.7 - NOISE[seed], "target_test_acc": 0.8 - cost + NOISE[seed]}
                        for a in attacks])
            if unknown:
                # Shadows pruned at another sparsity: the attacks lose 1% (relative) of their accuracy.
                off = {**cell, "shadow_sparsity": 0.0, "unit_id": f"unknown-{sparsity}-{seed}"}
                results.write_unit_rows(experiment=exp, unit_id=off["unit_id"], rows=[
                    {**off, "target_model": "pruned", "attack": a,
                     "attack_acc": _attack_acc(a, sparsity, seed) * (0.99 + NOISE[seed])} for a in attacks])


# ---- the defense claims ---------------------------------------------------------------------------
# Per attack: its offset from the unit's best (conf is the best; mentr cannot measure TPR at 1% FPR).
OFFSETS = {"conf": 0.0, "mentr": -0.05, "lira_offline": -0.03, "rmia_offline": -0.05}
DEFENSE_METHODS = ("l1_unstructured", "l1_structured", "l2_structured")
DP = {"defense_noise_multiplier": math.nan, "defense_max_grad_norm": 1.0, "defense_delta": 1e-5}
# (defense, hyperparameters, best attack accuracy, test accuracy, sign of the seed noise); Basic: 0.65, 0.8, +.
# PPB: lambda 4 brings the best attack to 0.52 at a 0.01 cost (effect), lambda 2 does nothing (null: its noise
# mirrors Basic's), lambda 1 makes it leakier (reversal). DP: each setting leaks about as one PPB setting
# does, at 0.19 less test accuracy (noise_multiplier 2, against lambda 4: C7 holds), the same (1, against
# lambda 2: null) and 0.05 more (0.5, against lambda 1: reversal); its only setting within C5b's cost is
# noise_multiplier 1 (distance 0.15). ADV (cost 0.02): per method, see ADV_BEST.
SETTINGS = [("ppb", {"defense_lambda": 1.0}, 0.75, 0.80, -1), ("ppb", {"defense_lambda": 2.0}, 0.65, 0.80, -1),
            ("ppb", {"defense_lambda": 4.0}, 0.52, 0.79, -1),
            ("dp", {**DP, "defense_noise_multiplier": 2.0}, 0.50, 0.60, 1),
            ("dp", {**DP, "defense_noise_multiplier": 1.0}, 0.65, 0.80, 1),
            ("dp", {**DP, "defense_noise_multiplier": 0.5}, 0.76, 0.85, 1)]
# C8: under L1 unstructured ADV beats DP (effect); under L1 structured it ties with PPB (null: mirrored
# noise), under L2 structured it beats PPB (reversal of "PPB is the best").
ADV_BEST = {"l1_unstructured": 0.53, "l1_structured": 0.52, "l2_structured": 0.505}
PARAMS = ("defense_lambda", "defense_noise_multiplier", "defense_max_grad_norm", "defense_delta", "defense_alpha",
          "defense_k")


def _defense_rows(unit: dict, best: float, test_acc: float, sign: int, seed: int, *, offline_tpr: bool) -> list[dict]:
    noise = sign * NOISE[seed]
    rows = []
    for attack, offset in OFFSETS.items():
        tpr = 0.02 + 0.5 * (best - 0.5) + 0.1 * offset + noise
        measured = attack == "conf" or (offline_tpr and attack in ("lira_offline", "rmia_offline"))
        rows.append({**unit, "target_model": "pruned", "attack": attack, "attack_acc": best + offset + noise,
                     "attack_auc": best + 0.05 + offset + noise, "tpr_at_fpr_0.01": tpr if measured else math.nan,
                     "target_test_acc": test_acc + noise})
    return rows


def write_defenses(exp: Path, *, offline_tpr: bool = True) -> None:
    """Basic, PPB (also adaptive at lambda 4 under L1 unstructured), DP and ADV units of three methods at
    sparsity 0.7, five seeds: the planted effects, nulls and reversals of SETTINGS and ADV_BEST."""
    for method, seed in ((m, s) for m in DEFENSE_METHODS for s in SEEDS):
        cell = {**CELL, **{p: math.nan for p in PARAMS}, "method": method, "sparsity": 0.7, "seed": seed,
                "shadow_method": method, "shadow_sparsity": 0.7}
        units = [("basic", {}, 0.65, 0.80, 1, False), *((*setting, False) for setting in SETTINGS),
                 ("adv", {"defense_alpha": 4.0, "defense_k": 1.0}, ADV_BEST[method], 0.78, 1, False)]
        if method == "l1_unstructured":
            units.append((*SETTINGS[2], True))
        for n, (defense, params, best, test_acc, sign, adaptive) in enumerate(units):
            unit = {**cell, **params, "defense": defense, "adaptive": adaptive, "unit_id": f"{method}-{n}-{seed}"}
            results.write_unit_rows(experiment=exp, unit_id=unit["unit_id"],
                                    rows=_defense_rows(unit, best, test_acc, sign, seed, offline_tpr=offline_tpr))


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
    # PPB brings the accuracy at the shadows' threshold to 0.5 but leaves the AUC: the threshold-free view
    # keeps the membership signal (no TPR was measured: no such row).
    for lam in ("4", "16"):
        assert _verdicts(table, "C5a", setting=f"ppb lambda={lam}") == ["holds"]
        assert _verdicts(table, "C5a", setting=f"ppb lambda={lam}; AUC") == ["inconclusive"]
    assert len(table[table["claim"] == "C5a"]) == 4
    assert _verdicts(table, "C5b", setting="ppb lambda=4") == ["holds"]
    assert _verdicts(table, "C5b", setting="ppb lambda=16") == ["contradicted"]
    assert _verdicts(table, "C6", setting="study: sparsity") == ["holds"]
    assert table.loc[table["claim"] == "C6", "effect"].item() == pytest.approx(0.01)
    # PPB alone, without offline attacks: the other defense claims are not run, each with its command.
    missing = table[table["verdict"] == "not run"].set_index("claim")
    assert set(missing.index) == {"C5c", "C7", "C8", "C9", "C10"}  # no two-model attack, no --finetune no
    assert "lira_offline,rmia_offline" in missing.at["C5c", "command"]
    assert missing.at["C7", "statistic"] == "no DP rows"
    assert all("--preset defenses" in missing.at[claim, "command"] for claim in ("C5c", "C7", "C8"))
    assert all("--preset beyond" in missing.at[claim, "command"] for claim in ("C9", "C10"))
    assert list(dict.fromkeys(table["claim"])) == ["C1", "C2", "C3", "C4", "C5a", "C5b", "C5c", "C6", "C7", "C8",
                                                    "C9", "C10"]


def test_one_seed_is_inconclusive_and_missing_inputs_are_not_run(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "exp", defenses=False, unknown=False, samia=False)
    rows = load_experiments([tmp_path / "exp"])
    table = claims_table(rows)
    for claim, command in (("C4", "--attacks all"), ("C5a", "full_grid.py --preset defenses"),
                           ("C5b", "full_grid.py --preset defenses"), ("C5c", "full_grid.py --preset defenses"),
                           ("C6", "unknown_pruning.py --preset defenses"), ("C7", "full_grid.py --preset defenses"),
                           ("C8", "full_grid.py --preset defenses")):
        line = table[table["claim"] == claim]
        assert list(line["verdict"]) == ["not run"] and command in line["command"].item(), claim
    one_seed = rows
    one_seed.rows = rows.rows[rows.rows["seed"] == 0]
    single = claims_table(one_seed)
    tested = single[single["claim"].isin(["C1", "C2"])]
    # One seed: an effect but no interval, so nothing is decided (C2 needs two seeds' slopes too).
    assert len(tested) and set(tested["verdict"]) == {"inconclusive"} and tested["ci_low"].isna().all()


def _rows(table: pd.DataFrame, claim: str, method: str, setting: str) -> pd.DataFrame:
    return table[(table["claim"] == claim) & (table["method"] == method) & (table["setting"] == setting)]


DP1 = "dp noise_multiplier=1"  # as the sweeps label a setting (miaray.vocabulary.defense_label)
ADV = "adv alpha=4"


def test_defense_claims_planted_effects_nulls_and_reversals(tmp_path: Path) -> None:
    write_defenses(tmp_path / "exp")
    table = claims_table(load_experiments([tmp_path / "exp"]))
    assert list(table.columns) == COLUMNS
    assert list(dict.fromkeys(table["claim"])) == ["C1", "C2", "C3", "C4", "C5a", "C5b", "C5c", "C6", "C7", "C8",
                                                    "C9", "C10"]
    planted = {"ppb lambda=4": "holds", "ppb lambda=2": "inconclusive", "ppb lambda=1": "contradicted"}
    for method in DEFENSE_METHODS:
        for setting, verdict in planted.items():
            # C5a in each view (at the threshold, AUC, TPR at 1% FPR where measurable) and C5c.
            for view in ("", "; AUC", "; TPR at 1% FPR"):
                rows = _rows(table, "C5a", method, setting + view)
                assert _verdicts(rows, "C5a") == [verdict], (method, setting, view)
            assert _verdicts(_rows(table, "C5c", method, setting), "C5c") == [verdict], (method, setting)
            assert _verdicts(_rows(table, "C5b", method, setting), "C5b") == ["holds"]
    c5a = table[table["claim"] == "C5a"]
    # Settings in the order of lambda, each with its three views, then the adaptive units of L1 unstructured.
    assert list(c5a.loc[c5a["method"] == "l1_unstructured", "setting"])[:4] == [
        "ppb lambda=1", "ppb lambda=1; AUC", "ppb lambda=1; TPR at 1% FPR", "ppb lambda=2"]
    assert _verdicts(c5a, "C5a", setting="ppb lambda=4, adaptive; AUC") == ["holds"]
    line = _rows(table, "C5a", "l1_structured", "ppb lambda=4; TPR at 1% FPR").iloc[0]
    assert line["effect"] == pytest.approx(0.5 * 0.13) and line["n"] == 5 and line["attack"] == "best"
    line = _rows(table, "C5a", "l1_structured", "ppb lambda=4; AUC").iloc[0]
    assert line["effect"] == pytest.approx(0.13) and "AUC" in line["statistic"]
    # C7: each PPB setting against the DP setting that leaks about as much.
    for method in DEFENSE_METHODS:
        c7 = table[(table["claim"] == "C7") & (table["method"] == method)]
        assert list(c7["setting"]) == ["ppb lambda=1 vs dp noise_multiplier=0.5", f"ppb lambda=2 vs {DP1}",
                                       "ppb lambda=4 vs dp noise_multiplier=2"]
        assert list(c7["verdict"]) == ["contradicted", "inconclusive", "holds"]
        assert c7["effect"].iloc[2] == pytest.approx(0.19)
    assert not (table.loc[table["claim"] == "C7", "setting"].str.contains("adaptive")).any()  # no adaptive DP
    # C8: each defense at its best setting within 0.05 of Basic's accuracy: PPB lambda=4, DP noise 1, ADV.
    for view in ("", "; AUC"):
        expected = {("l1_unstructured", f"ppb lambda=4 vs {DP1}"): "holds",
                    ("l1_unstructured", f"{ADV} vs {DP1}"): "holds",
                    ("l1_structured", f"ppb lambda=4 vs {ADV}"): "inconclusive",
                    ("l1_structured", f"ppb lambda=4 vs {DP1}"): "holds",
                    ("l2_structured", f"ppb lambda=4 vs {ADV}"): "contradicted",
                    ("l2_structured", f"ppb lambda=4 vs {DP1}"): "holds"}
        for (method, setting), verdict in expected.items():
            assert _verdicts(_rows(table, "C8", method, setting + view), "C8") == [verdict], (method, setting, view)
    c8 = table[table["claim"] == "C8"]
    assert len(c8) == 12
    assert set(c8.loc[c8["method"] == "l1_unstructured", "statement"]) == {
        "PPB and ADV are the two best defenses (L1 unstructured, slimming)"}
    assert set(c8.loc[c8["method"] == "l2_structured", "statement"]) == {"PPB is the best defense (L1, L2 structured)"}
    line = _rows(table, "C8", "l2_structured", f"ppb lambda=4 vs {ADV}").iloc[0]
    assert line["effect"] == pytest.approx(-0.015) and line["n"] == 5
    assert "not run" not in set(table.loc[table["claim"].isin(["C5a", "C5b", "C5c", "C7", "C8"]), "verdict"])


def test_defense_claims_at_a_tighter_cost_and_without_measurable_tpr(tmp_path: Path) -> None:
    write_defenses(tmp_path / "exp", offline_tpr=False)
    table = claims_table(load_experiments([tmp_path / "exp"]), max_accuracy_cost=0.005)
    # Offline attacks ran, but their TPR at 1% FPR was not measurable: C5c is not run, with a command.
    c5c = table[table["claim"] == "C5c"]
    assert list(c5c["verdict"]) == ["not run"] and "mnist5k" in c5c["command"].item()
    # C5a's TPR view still reads conf's measurable TPR.
    assert _verdicts(_rows(table, "C5a", "l1_structured", "ppb lambda=4; TPR at 1% FPR"), "C5a") == ["holds"]
    # Within 0.005 of Basic's accuracy PPB's best setting is lambda 2, and ADV (cost 0.02) has none: its
    # comparisons have no effect and say why.
    no_adv = "adv (no setting within the accuracy cost)"
    assert _verdicts(_rows(table, "C8", "l1_unstructured", f"{no_adv} vs {DP1}"), "C8") == ["inconclusive"]
    assert _verdicts(_rows(table, "C8", "l1_unstructured", f"ppb lambda=2 vs {DP1}"), "C8") == ["inconclusive"]
    line = _rows(table, "C8", "l1_structured", f"ppb lambda=2 vs {no_adv}").iloc[0]
    assert line["verdict"] == "inconclusive" and math.isnan(line["effect"]) and line["n"] == 0
    assert _rows(table, "C8", "l1_structured", f"ppb lambda=2 vs {no_adv}; AUC").empty
