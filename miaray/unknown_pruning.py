"""The unknown-pruning study's tables: paper Table 1 and Fig. 12/13.

Pure pandas on result rows (one per unit and attack, as `miaray.results.load` returns them), shared
by the sweep's printout (`miaray.sweep.unknown_pruning_main`) and the analysis scripts, so both say
the same thing about the same rows:

- `known_pruning` / `differently_pruned`: rows whose shadows were pruned like the target, or not;
- `headline_attack`: the one attack the sparsity matrix (and the analysis figures) report;
- `sparsity_matrix_table`: attack accuracy by target sparsity x shadow sparsity (Fig. 12/13);
- `accuracy_loss_table`: the attack accuracy loss when the shadows are pruned differently (Table 1),
  over the drawn pairs (`PAIRS_FILE`, written by the sweep) and per study; `matched_losses`, the
  per-unit losses it averages (for intervals over seeds and the claims).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from miaray.stats import successful

HEADLINE_ATTACK = "samia"  # the paper's attack for the pruning studies
# Everything that makes two units the same experiment apart from how the shadows were pruned; the
# `defense_*` hyperparameter columns are added to it, and a column the rows lack (older results carry
# no `split_ratio`) is left out.
SAME_TARGET = ["dataset", "arch", "method", "sparsity", "seed", "width", "split_ratio", "defense", "adaptive",
               "attack"]
MATRIX_CELL = ["dataset", "arch", "method"]
# The drawn (known, unknown) unit pairs of the method study, as `sweeps/unknown_pruning.py` records them
# beside the rows (PAIRS_FILE): only the draws themselves give the paper's Table 1 mean.
PAIRS_COLUMNS = ["unit_id_known", "unit_id_unknown"]
PAIRS_FILE = "unknown_pairs.parquet"
RANDOM_PAIRS = "random pairs"
# NaN (a hyperparameter the defense does not take) in a join key: filled with a sentinel, so that the
# join does not depend on how pandas treats NaN keys.
NOT_APPLICABLE = -1.0


def _successful_pruned(rows: pd.DataFrame) -> pd.DataFrame:
    """The results (`miaray.stats.successful`) on pruned targets."""
    rows = successful(rows)
    return rows[rows["target_model"] == "pruned"]


def _pruned_like_target(rows: pd.DataFrame) -> pd.Series:
    return (rows["shadow_method"] == rows["method"]) & (rows["shadow_sparsity"] == rows["sparsity"])


def known_pruning(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose shadows were pruned like the target (the paper's main setting)."""
    return rows[_pruned_like_target(rows)]


def differently_pruned(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose shadows were pruned by another method or at another sparsity than the target."""
    return rows[~_pruned_like_target(rows)]


def headline_attack(rows: pd.DataFrame) -> str | None:
    """SAMIA (the paper's attack) when it succeeded on a pruned target, else the attack with the
    highest mean attack accuracy there; None when no attack on a pruned target succeeded."""
    rows = _successful_pruned(rows)
    if rows.empty:  # failed rows alone may lack the attack_acc column
        return None
    means = rows.groupby("attack")["attack_acc"].mean()
    return HEADLINE_ATTACK if HEADLINE_ATTACK in means.index else str(means.idxmax())


def sparsity_matrix_rows(rows: pd.DataFrame, *, attack: str) -> pd.DataFrame:
    """The rows of Fig. 12/13: successful `attack` rows on pruned targets whose shadows used the
    target's method, of the (dataset, arch, method) that have a row at another shadow sparsity.
    Empty when there is none."""
    rows = _successful_pruned(rows)
    if rows.empty:
        return pd.DataFrame()
    rows = rows[(rows["shadow_method"] == rows["method"]) & (rows["attack"] == attack)]
    # The diagonal alone (a known-pruning cell) is not a matrix.
    return rows.merge(differently_pruned(rows)[MATRIX_CELL].drop_duplicates(), on=MATRIX_CELL)


def sparsity_matrix_table(rows: pd.DataFrame, *, attack: str) -> pd.DataFrame:
    """Fig. 12/13: the mean accuracy of `attack` per (dataset, arch, method, target sparsity), one
    column per shadow sparsity, over `sparsity_matrix_rows`. Rows of one defense and split ratio are
    expected (the mean runs over everything else, e.g. seeds). Empty when there is no such row."""
    rows = sparsity_matrix_rows(rows, attack=attack)
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(index=[*MATRIX_CELL, "sparsity"], columns="shadow_sparsity", values="attack_acc",
                             aggfunc="mean")
    return table.reset_index()


def matched_losses(rows: pd.DataFrame, *, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (differently pruned unit, attack) matched to the known-pruning row of the same
    target (SAME_TARGET and the defense hyperparameters), with `study` and `loss` = (acc_known -
    acc_unknown) / acc_known; the unknown unit's columns keep their names, the known unit's id and
    accuracy end in `_known` (the unknown's in `_unknown`). Studies, as in `accuracy_loss_table`:
    'random pairs' (the drawn `pairs`, whatever their methods; a drawn unit appears again under its
    own study), 'method' and 'sparsity'. Empty when no row matches."""
    rows = _successful_pruned(rows)
    unknown = differently_pruned(rows)
    if unknown.empty:
        return pd.DataFrame()
    key = [c for c in SAME_TARGET if c in rows] + sorted(c for c in rows if c.startswith("defense_"))
    fill = {c: NOT_APPLICABLE for c in key if c.startswith("defense_")}
    known = known_pruning(rows)[key + ["unit_id", "attack_acc"]].fillna(fill)
    matched = unknown.fillna(fill).merge(known, on=key, suffixes=("_unknown", "_known"))
    if matched.empty:
        return pd.DataFrame()
    matched["study"] = np.where(matched["shadow_method"] != matched["method"], "method", "sparsity")
    matched["loss"] = (matched["attack_acc_known"] - matched["attack_acc_unknown"]) / matched["attack_acc_known"]
    if pairs is not None and not pairs.empty:
        drawn = matched.merge(pairs[PAIRS_COLUMNS].drop_duplicates(), on=PAIRS_COLUMNS)
        matched = pd.concat([drawn.assign(study=RANDOM_PAIRS), matched], ignore_index=True)
    return matched


def accuracy_loss_table(rows: pd.DataFrame, *, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1: mean (acc_known - acc_unknown) / acc_known per (dataset, arch, study), one column per
    attack, plus `pairs`, the number of differently pruned units averaged. Each successful pruned row
    whose shadows were pruned differently is matched to the known-pruning row of the same target
    (`matched_losses`). Studies:

    - 'random pairs' (only with `pairs`, the `PAIRS_COLUMNS` frame `unknown_pruning.py` records): the
      drawn (known, unknown) units themselves, whatever their methods: the paper's Table 1 statistic;
    - 'method': every unit whose shadows used another method than the target;
    - 'sparsity': same method, another sparsity (Fig. 12/13's off-diagonal).

    Empty when no row matches."""
    matched = matched_losses(rows, pairs=pairs)
    if matched.empty:
        return matched
    group = ["dataset", "arch", "study"]
    table = matched.pivot_table(index=group, columns="attack", values="loss", aggfunc="mean")
    table.columns.name = None
    table["pairs"] = matched.groupby(group)["unit_id_unknown"].nunique()
    return table.reset_index()
