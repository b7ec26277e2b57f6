"""Claims beyond the paper, in the verdict table of `analysis.claims`: the attacker who holds both models
(C9) and where the change in leakage comes from, the pruning or the fine-tuning after it (C10).

- C9 "Holding both models leaks more than holding the pruned one": per cell, the best two-model attack
  (`pair_diff`, `pair_lr`: rows with target_model 'both') minus the best single-model attack on the
  pruned target, paired by seed; at the attacks' thresholds (attack accuracy), threshold-free ("; AUC")
  and at 1% FPR ("; TPR at 1% FPR", measured values only). Holds if > 0.
- C10 "The increase comes from fine-tuning": per cell, the best attack on the pruned target fine-tuned
  minus the best attack on the pruned target not fine-tuned (`--finetune yes,no`: the same pruned
  weights, masks applied, nothing trained), paired by seed. Beside it, each arm minus the original:
  C10a without fine-tuning, C10b with it (the two arms share their originals, so C10 = C10b - C10a);
  `setting` gives the mean test accuracies of the two sides, so a reader sees what fine-tuning buys.
  The best attack of a unit: the maximum accuracy over the single-model attacks that ran on both its
  targets. Holds if > 0.

Both read successful known-pruning Basic rows of the paper's split. C9 is made per setting like the
paper's claims; C10 compares units that differ in the `finetune` setting, so it is made across that one
setting (and per value of every other).
"""

from __future__ import annotations

import pandas as pd

from analysis.data import original, pruned, settings_groups
from analysis.verdicts import Claim, effect_rows
from miaray.stats import paired_effect
from miaray.vocabulary import PAIR_ATTACKS

BEYOND_GRID = "python sweeps/full_grid.py --preset beyond"
CELL = ["dataset", "arch", "width", "method", "sparsity"]
TPR = "tpr_at_fpr_0.01"
# C9's views of the best attack, and what `setting` says for each.
VIEWS = (("", "attack_acc"), ("; AUC", "attack_auc"), ("; TPR at 1% FPR", TPR))

C9 = Claim("C9", "holding both models leaks more than holding the pruned one", ">", 0.0,
           "best two-model attack - best single-model attack on the pruned target, paired by seed (n = seeds)")
_C10_STATISTIC = "{} - {}: best attack accuracy, paired by seed (n = seeds); setting: their mean test accuracies"
C10A = Claim("C10a", "pruning without fine-tuning raises the best attack over the original", ">", 0.0,
             _C10_STATISTIC.format("not fine-tuned", "original"))
C10B = Claim("C10b", "pruning with fine-tuning raises the best attack over the original", ">", 0.0,
             _C10_STATISTIC.format("fine-tuned", "original"))
C10 = Claim("C10", "the increase comes from fine-tuning", ">", 0.0, _C10_STATISTIC.format("fine-tuned", "not fine-tuned"))


def _best_per_unit(rows: pd.DataFrame, metric: str, condition: str, *, also: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per unit: its cell, seed, the maximum of `metric` over `rows` (unmeasured NaN left out) and the first
    value of each column in `also`, labelled `condition`."""
    measured = rows.dropna(subset=[metric])
    first = {c: (c, "first") for c in [*CELL, "seed", *also]}
    return measured.groupby("unit_id").agg(**first, **{metric: (metric, "max")}).reset_index().assign(
        condition=condition)


def claim_c9(grid: pd.DataFrame) -> list[dict]:
    """C9 on the successful known-pruning Basic rows of one setting."""
    both = grid[grid["target_model"] == "both"]
    if both.empty:
        return [C9.not_run(f"no two-model attack ({', '.join(PAIR_ATTACKS)}) ran", BEYOND_GRID)]
    lines = []
    for view, metric in VIEWS:
        units = pd.concat([_best_per_unit(both, metric, "both"), _best_per_unit(pruned(grid), metric, "pruned")])
        effects = paired_effect(units, by=CELL, metric=metric, condition="condition", treated="both",
                                control="pruned")
        measured = effects[effects["n_seeds"] > 0].assign(attack="best", setting=f"two models{view}")
        lines += effect_rows(C9, measured, [*CELL, "attack", "setting"])
    return lines


def _single_model_best(rows: pd.DataFrame, condition: str, accuracy: str) -> pd.DataFrame:
    """Per unit the best attack accuracy over the single-model attacks that ran on both its targets, with
    the test accuracy of the target this condition reads (`accuracy`: a row column)."""
    ran = rows.groupby(["unit_id", "attack"])["target_model"].transform(
        lambda m: {"pruned", "original"} <= set(m))
    side = original(rows[ran]) if condition == "original" else pruned(rows[ran])
    return _best_per_unit(side.assign(test_acc=side[accuracy]), "attack_acc", condition, also=("test_acc",))


def _c10_rows(rows: pd.DataFrame, setting: dict) -> list[dict]:
    """C10a, C10b and C10 for the units of one setting beside `finetune` (its values lead each row)."""
    tuned, untuned = rows[rows["finetune"] == 1.0], rows[rows["finetune"] == 0.0]
    units = pd.concat([_single_model_best(untuned, "untuned", "target_test_acc"),
                       _single_model_best(tuned, "tuned", "target_test_acc"),
                       _single_model_best(tuned, "original", "original_test_acc")])
    lines = []
    for claim, treated, control in ((C10A, "untuned", "original"), (C10B, "tuned", "original"),
                                    (C10, "tuned", "untuned")):
        effects = paired_effect(units, by=CELL, metric="attack_acc", condition="condition", treated=treated,
                                control=control)
        accuracy = paired_effect(units, by=CELL, metric="test_acc", condition="condition", treated=treated,
                                 control=control).set_index(CELL)
        accuracy = accuracy[["treated_mean", "control_mean"]].rename(columns=lambda c: c.replace("mean", "acc"))
        measured = effects[effects["n_seeds"] > 0].join(accuracy, on=CELL)
        measured = measured.assign(attack="best", setting=[
            f"test acc {treated:.3f} vs {control:.3f}"
            for treated, control in zip(measured["treated_acc"], measured["control_acc"])])
        lines += [{**setting, **row} for row in effect_rows(claim, measured, [*CELL, "attack", "setting"])]
    return lines


def claim_c10(grid: pd.DataFrame) -> list[dict]:
    """C10 on the successful known-pruning Basic rows of every setting: across `finetune`, per value of
    each other setting that varies (those values lead each row, as `analysis.data.kept_apart` does)."""
    lines = []
    for setting, part in settings_groups(grid.drop(columns="finetune")):
        part = part.join(grid["finetune"])
        made = _c10_rows(part, setting) if set(part["finetune"]) == {0.0, 1.0} else []
        lines += made or [{**setting, **C10.not_run("no seed ran a cell both with and without fine-tuning "
                                                    "(--finetune yes,no)", BEYOND_GRID)}]
    return lines
