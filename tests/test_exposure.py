"""analysis/exposure.py on a planted case: a known set of members whose LiRA score rises under pruning far
beyond what pruning does to non-members is found, the others are exposed at the null's 5% rate; the
attack is chosen by what the unit scored on both targets; the command writes its tables and figures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_ndtr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `analysis/` is a folder of scripts at the root, not an installed package

from analysis.data import load_experiments  # noqa: E402
from analysis.exposure import exposure, exposure_attack, main, summary_table, unbounded  # noqa: E402
from miaray import results  # noqa: E402

N = 400  # members, and as many non-members
PLANTED = 40  # members 0..39 of each unit: their score rises by 6 non-member standard deviations
CELL = {"dataset": "digits", "arch": "resnet18", "width": 0.5, "method": "l1_unstructured", "sparsity": 0.9,
        "status": "ok", "error": "", "split_ratio": "45/45/10", "defense": "basic", "adaptive": False,
        "shadow_method": "l1_unstructured", "shadow_sparsity": 0.9, "finetune": True}


def write_planted(exp: Path, seeds=(0, 1, 2)) -> dict[int, set[int]]:
    """Units of one cell; per seed the dataset indices of the planted members."""
    planted = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        unit_id = f"u{seed}"
        samples = rng.permutation(1797)[:2 * N]  # digits' indices; members first
        member = np.r_[np.ones(N, bool), np.zeros(N, bool)]
        original = rng.normal(0, 3, 2 * N)  # z: phi against the OUT models, in units of their spread
        original[:PLANTED] = rng.normal(4, 1, PLANTED)  # far above them already: log Phi(z) near its ceiling
        change = rng.normal(0, 1, 2 * N)
        change[:PLANTED] += 6.0
        planted[seed] = set(samples[:PLANTED].tolist())
        # The offline LiRA scores log Phi(z); conf's scores are anything.
        scores = pd.concat([pd.DataFrame({"target_model": model, "attack": attack, "sample": samples, "member": member,
                                          "score": score(values).astype(np.float32)})
                            for attack, score in (("lira_offline", log_ndtr), ("conf", lambda v: v + 0.5))
                            for model, values in (("original", original), ("pruned", original + change))])
        labels = rng.integers(0, 10, 2 * N)
        predicted_pruned = np.where(np.arange(2 * N) < PLANTED, (labels + 1) % 10, labels)  # the planted flip
        signals = pd.concat([pd.DataFrame({"target_model": model, "sample": samples, "member": member, "label": labels,
                                           "predicted": predicted})
                             for model, predicted in (("original", labels), ("pruned", predicted_pruned))])
        rows = [{**CELL, "seed": seed, "unit_id": unit_id, "target_model": model, "attack": attack, "attack_acc": 0.6,
                 "target_test_acc": 0.9} for model in ("pruned", "original") for attack in ("conf", "lira_offline")]
        results.write_unit_rows(experiment=exp, unit_id=unit_id, rows=rows)
        for kind, table in (("scores", scores), ("signals", signals)):
            (exp / kind).mkdir(parents=True, exist_ok=True)
            table.assign(unit_id=unit_id).to_parquet(exp / kind / f"{unit_id}.parquet")
    return planted


def test_the_planted_members_are_the_exposed_ones(tmp_path):
    planted = write_planted(tmp_path / "exp")
    per_unit, members = exposure(load_experiments([tmp_path / "exp"]))
    assert set(per_unit["attack"]) == {"lira_offline"}  # the likelihood ratio before the headline attack
    for seed, chosen in planted.items():
        mine = members[members["seed"] == seed]
        exposed = set(mine.loc[mine["exposed"], "sample"])
        assert chosen <= exposed  # every planted member is found
        others = len(exposed - chosen) / (N - PLANTED)
        assert others == pytest.approx(0.05, abs=0.035)  # the rest at about the null's rate
        # The strongest exposures are the planted ones, and so are the changed predictions.
        assert set(mine.nlargest(PLANTED, "strength")["sample"]) == chosen
        unit = per_unit[per_unit["seed"] == seed].iloc[0]
        assert unit["exposed_if_prediction_changed"] == 1.0 and unit["prediction_changed"] == PLANTED / N
        assert unit["excess"] == pytest.approx(unit["share_exposed"] - 0.05)
    table = summary_table(per_unit)
    assert len(table) == 1 and table.iloc[0]["n_seeds"] == 3
    assert table.iloc[0]["share_exposed_ci_low"] > 0.05 + 0.9 * PLANTED / N - 0.03


def test_the_offline_lira_score_is_read_back_as_z_without_its_ceiling():
    z = np.array([-11.0, -3.0, 0.0, 2.0, 6.0, 9.0, 11.5])
    back = unbounded("lira_offline", log_ndtr(z).astype(np.float32))  # stored as float32
    np.testing.assert_allclose(back, z, rtol=1e-5, atol=1e-5)
    far = unbounded("lira_offline", log_ndtr(np.array([-30.0, 30.0])).astype(np.float32))
    assert far.tolist() == [-12.0, 12.0]  # where float32 no longer tells them apart: cut
    np.testing.assert_array_equal(unbounded("conf", np.array([0.3, -2.0])), [0.3, -2.0])


def test_the_exposure_attack_is_a_likelihood_ratio_where_both_targets_have_one():
    scores = pd.DataFrame({"attack": ["lira_offline", "conf", "conf", "samia", "samia"],
                           "target_model": ["pruned", "pruned", "original", "pruned", "original"]})
    rows = pd.DataFrame({"attack": ["conf", "samia"], "target_model": "pruned", "attack_acc": [0.7, 0.6],
                         "status": "ok", "attack_status": "ok"})
    assert exposure_attack(scores, rows) == "samia"  # lira_offline only on the pruned target: the headline
    assert exposure_attack(scores[scores["attack"] == "conf"], rows) is None


def test_the_command_writes_its_tables_and_figures(tmp_path, capsys):
    write_planted(tmp_path / "exp", seeds=(0, 1))
    assert main([str(tmp_path / "exp"), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "lira_offline" in printed
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"exposure_summary.csv", "exposure_units.csv", "exposure_classes.csv", "exposure_samples.csv"} <= written
    assert any(n.startswith("exposure_hist_") for n in written) and any(n.startswith("exposure_grid_") for n in written)
    classes = pd.read_csv(tmp_path / "out" / "exposure_classes.csv")
    assert classes["members"].sum() == 2 * N and classes["label"].between(0, 9).all()


def test_results_without_scores_say_what_to_run(tmp_path, capsys):
    exp = tmp_path / "exp"
    results.write_unit_rows(experiment=exp, unit_id="u0", rows=[{**CELL, "seed": 0, "unit_id": "u0",
                                                                  "target_model": "pruned", "attack": "conf",
                                                                  "attack_acc": 0.6}])
    with pytest.raises(SystemExit) as stop:
        main([str(exp)])
    assert stop.value.code == 1 and "--preset beyond" in capsys.readouterr().err
    # Its --out passed the check, but nothing is written: no folder is left behind either.
    with pytest.raises(SystemExit) as stop:
        main([str(exp), "--out", str(tmp_path / "new" / "out")])
    assert stop.value.code == 1 and not (tmp_path / "new").exists()
