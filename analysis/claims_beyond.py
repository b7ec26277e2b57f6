"""Claims beyond the paper, in the verdict table of `analysis.claims`: the attacker who holds both models
(C9) and where the change in leakage comes from, pruning or the fine-tuning after it (C10).

- C9 "Holding both models leaks more than holding the pruned one": per cell, the best two-model attack
  (`pair_diff`, `pair_lr`: rows with target_model 'both') minus the best single-model attack on the
  pruned target, paired by seed; at the attacks' thresholds (attack accuracy), threshold-free ("; AUC")
  and at 1% FPR ("; TPR at 1% FPR", where measured). Holds if > 0.
- C10 "The increase comes from fine-tuning": per cell, the best attack on the pruned target fine-tuned
  minus that on the pruned target not fine-tuned (`--finetune no,yes`: the same pruned weights, masks
  applied, nothing trained), paired by seed. Beside it, each arm minus the original (C10a without
  fine-tuning, C10b with it; the originals are shared, so C10 = C10b - C10a), each with the arms' mean
  test accuracies in `setting`, so a reader sees what fine-tuning buys. Best attack: the maximum
  accuracy over the attacks that ran on all three targets of a seed. Holds if > 0.

Both read successful known-pruning Basic rows of the paper's split. C10 compares units that differ in
the `finetune` setting, so it is made across that setting (and kept apart by every other one).
"""

from __future__ import annotations

import pandas as pd

from analysis.data import original, pruned, settings_groups, settings_label
from miaray.config import PAIR_ATTACKS
from miaray.stats import paired_effect

PAIR_GRID = "python sweeps/full_grid.py --preset beyond"
CELL = ["dataset", "arch", "width", "method", "sparsity"]
TPR = "tpr_at_fpr_0.01"
# C9's views of the best attack, and what `setting` says for each.
VIEWS = (("", "attack_acc"), ("; AUC", "attack_auc"), ("; TPR at 1% FPR", TPR))


def _best_per_unit(rows: pd.DataFrame, metric: str, condition: str) -> pd.DataFrame:
    """Per unit: its cell, seed and the maximum of `metric` over `rows` (NaN left out), as `condition`."""
    measured = rows.dropna(subset=[metric])
    best = measured.groupby("unit_id").agg(**{c: (c, "first") for c in [*CELL, "seed"]}, **{metric: (metric, "max")})
    return best.reset_index().assign(condition=condition)


def claim_c9(claim_type, grid: pd.DataFrame) -> list[dict]:
    """C9 on the rows of one setting (`grid`: successful known-pruning Basic rows)."""
    c9 = claim_type("C9", "holding both models leaks more than holding the pruned one", ">", 0.0,
                    "best two-model attack - best single-model attack on the pruned target, paired by seed "
                    "(n = seeds)")
    both = grid[grid["target_model"] == "both"]
    if both.empty:
        return [c9.not_run(f"no two-model attack ({', '.join(PAIR_ATTACKS)}) ran", PAIR_GRID)]
    lines = []
    for view, metric in VIEWS:
        units = pd.concat([_best_per_unit(both, metric, "both"), _best_per_unit(pruned(grid), metric, "pruned")])
        effects = paired_effect(units, by=CELL, metric=metric, condition="condition", treated="both",
                                control="pruned")
        lines += [c9.row({**{c: line[c] for c in CELL}, "attack": "best", "setting": f"two models{view}"},
                         line["effect"], line["ci_low"], line["ci_high"], line["n_seeds"])
                  for _, line in effects[effects["n_seeds"] > 0].iterrows()]
    return lines


def _c10_claims(claim_type) -> dict[str, object]:
    statistic = "{} - {}: best attack accuracy, paired by seed (n = seeds); setting: mean test accuracies"
    return {"c10a": claim_type("C10a", "pruning without fine-tuning raises the best attack over the original", ">",
                               0.0, statistic.format("not fine-tuned", "original")),
            "c10b": claim_type("C10b", "pruning with fine-tuning raises the best attack over the original", ">", 0.0,
                               statistic.format("fine-tuned", "original")),
            "c10": claim_type("C10", "the increase comes from fine-tuning", ">", 0.0,
                              statistic.format("fine-tuned", "not fine-tuned"))}


def _c10_setting(rows: pd.DataFrame) -> list[dict]:
    """C10's rows for units that differ in `finetune` only."""
    claims = _c10_claims(type(None))  # placeholder, replaced by the caller's claim type
    raise NotImplementedError(claims)
