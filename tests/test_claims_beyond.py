"""The claims beyond the paper (analysis/claims_beyond.py) in the verdict table: planted effects, nulls and
reversals of C9 (both models against the pruned one) and C10 (fine-tuning against none), per sparsity."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `analysis/` is a folder of scripts at the root, not an installed package

from analysis.claims import claims_table  # noqa: E402
from analysis.data import load_experiments  # noqa: E402
from miaray import results  # noqa: E402

SEEDS = range(5)
NOISE = np.array([0.002, -0.002, 0.004, -0.004, 0.0])  # mean 0 over the seeds
CELL = {"dataset": "digits", "arch": "resnet18", "width": 0.25, "method": "l1_unstructured", "status": "ok",
        "error": "", "split_ratio": "45/45/10", "defense": "basic", "adaptive": False,
        "shadow_method": "l1_unstructured"}
ORIGINAL = 0.6
# Per sparsity: the best two-model attack minus the best single-model one on the pruned target (C9), and the
# best attack's rise over the original on the pruned target fine-tuned and not fine-tuned (C10).
C9_PLANTED = {0.5: 0.05, 0.7: 0.0, 0.9: -0.05}
C10_PLANTED = {0.5: (0.05, 0.0), 0.7: (0.05, 0.05), 0.9: (0.0, 0.05)}  # (fine-tuned, not fine-tuned)


def _verdicts(table, claim: str, **scope) -> list[str]:
    rows = table[table["claim"] == claim]
    for column, value in scope.items():
        rows = rows[rows[column] == value]
    return rows["verdict"].tolist()


def _unit(exp: Path, unit_id: str, cell: dict, *, pruned: float, seed: int, finetune: bool,
          pair: float | None = None, test_acc: float = 0.8) -> None:
    base = {**CELL, **cell, "seed": seed, "unit_id": unit_id, "finetune": finetune, "original_test_acc": 0.85}
    rows = [{**base, "target_model": "pruned", "attack": "conf", "attack_acc": pruned, "attack_auc": pruned + 0.1,
             "tpr_at_fpr_0.01": np.nan, "target_test_acc": test_acc},
            {**base, "target_model": "pruned", "attack": "mentr", "attack_acc": pruned - 0.02,
             "attack_auc": pruned + 0.05, "tpr_at_fpr_0.01": np.nan, "target_test_acc": test_acc}]
    rows += [{**base, "target_model": "original", "attack": attack, "attack_acc": ORIGINAL + offset,
              "attack_auc": 0.7, "target_test_acc": 0.85} for attack, offset in (("conf", 0.0), ("mentr", -0.02))]
    if pair is not None:
        rows += [{**base, "target_model": "both", "attack": attack, "attack_acc": pair + offset,
                  "attack_auc": pair + 0.1 + offset, "tpr_at_fpr_0.01": np.nan, "target_test_acc": test_acc}
                 for attack, offset in (("pair_diff", 0.0), ("pair_lr", -0.01))]
    results.write_unit_rows(experiment=exp, unit_id=unit_id, rows=rows)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    exp = tmp_path_factory.mktemp("beyond") / "exp"
    for sparsity in C9_PLANTED:
        cell = {"sparsity": sparsity, "shadow_sparsity": sparsity}
        tuned, untuned = C10_PLANTED[sparsity]
        for seed in SEEDS:
            best = ORIGINAL + tuned + NOISE[seed]
            # The pair's noise mirrors the pruned target's: a planted null has an interval around 0.
            _unit(exp, f"tuned-{sparsity}-{seed}", cell, pruned=best, seed=seed, finetune=True,
                  pair=best + C9_PLANTED[sparsity] - 2 * NOISE[seed])
            _unit(exp, f"untuned-{sparsity}-{seed}", cell, pruned=ORIGINAL + untuned - NOISE[seed], seed=seed,
                  finetune=False, test_acc=0.3)
    return claims_table(load_experiments([exp]))


def test_c9_holds_is_null_and_reverses_where_planted_in_every_view(table):
    for view in ("", "; AUC"):
        assert _verdicts(table, "C9", sparsity="0.5", setting=f"two models{view}") == ["holds"]
        assert _verdicts(table, "C9", sparsity="0.7", setting=f"two models{view}") == ["inconclusive"]
        assert _verdicts(table, "C9", sparsity="0.9", setting=f"two models{view}") == ["contradicted"]
    c9 = table[(table["claim"] == "C9") & (table["sparsity"] == "0.5") & (table["setting"] == "two models")].iloc[0]
    assert c9["effect"] == pytest.approx(0.05) and c9["n"] == 5
    assert not (table["setting"] == "two models; TPR at 1% FPR").any()  # no TPR measured: no such row
    # The units without fine-tuning ran no two-model attack: their C9 is not run, with the command.
    untuned = table[(table["claim"] == "C9") & (table["finetune"] == 0.0)]
    assert untuned["verdict"].tolist() == ["not run"] and "--preset beyond" in untuned["command"].item()


def test_c10_says_where_the_increase_comes_from_with_the_accuracies_beside(table):
    assert _verdicts(table, "C10", sparsity="0.5") == ["holds"]          # fine-tuning carries it
    assert _verdicts(table, "C10", sparsity="0.7") == ["inconclusive"]   # pruning alone already does
    assert _verdicts(table, "C10", sparsity="0.9") == ["contradicted"]   # fine-tuning takes it back
    assert _verdicts(table, "C10a", sparsity="0.5") == ["inconclusive"]
    assert _verdicts(table, "C10a", sparsity="0.9") == ["holds"]
    assert _verdicts(table, "C10b", sparsity="0.5") == ["holds"]
    assert _verdicts(table, "C10b", sparsity="0.9") == ["inconclusive"]
    c10 = table[(table["claim"] == "C10") & (table["sparsity"] == "0.5")].iloc[0]
    assert c10["effect"] == pytest.approx(0.05) and c10["n"] == 5
    assert c10["setting"] == "test acc 0.800 vs 0.300"  # fine-tuned vs not: what fine-tuning buys
    c10a = table[(table["claim"] == "C10a") & (table["sparsity"] == "0.5")].iloc[0]
    assert c10a["setting"] == "test acc 0.300 vs 0.850"
    # C10 compares across the setting: its rows carry no finetune value; the claims within a setting do.
    assert table.loc[table["claim"].str.startswith("C10"), "finetune"].isna().all()
    assert set(table.loc[table["claim"] == "C1", "finetune"]) == {0.0, 1.0}
