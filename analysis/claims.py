#!/usr/bin/env python
"""The paper's claims as a verdict table: one row per claim and scope, an effect, its 95% interval and
a verdict.

    python analysis/claims.py ~/miaray-results/full_grid-quick [MORE_RESULTS...] [--out claims.csv]

Each claim is turned into an effect whose sign (or size) says whether it holds, with an interval:

- C1 "Pruning raises attack accuracy over the original": pruned minus original attack accuracy,
  paired by seed (a seed's cells share one original; `miaray.results.paired_effect`), per (dataset,
  arch, width, method, sparsity) and per attack that ran on both targets (like with like), plus
  `best`: per unit the strongest of those attacks on each target. Holds if > 0.
- C2 "Attack accuracy rises with sparsity": per seed, the least-squares slope of attack accuracy
  on sparsity over that seed's pruned cells of a method (per unit of sparsity: 0.1 more sparsity
  moves accuracy by slope / 10), then the mean slope and its Student-t interval over seeds; per
  attack and `best`. Holds if > 0.
- C3 "The confidence, sensitivity and generalization gaps correlate with attack accuracy": Pearson r
  between each gap's magnitude |gap| and the headline attack's accuracy (SAMIA when it ran, else the most accurate)
  over the pruned units of a model, with the Fisher-z interval. The units of one seed share their
  originals, so they are not fully independent: read the interval as optimistic. Holds if r > 0.
  The magnitude, because the paper's claim is about the distance between members and non-members
  (its Fig. 1): the sensitivity gap is negative (members' predictions are the less sensitive), so a
  larger distance is a more negative signed gap.
- C4 "SAMIA is the strongest attack at sparsity >= 0.7": SAMIA minus the strongest other attack
  (the one with the highest mean accuracy over seeds in the scope, chosen once, so that picking the
  maximum per seed does not favour the competitor), paired by seed; per cell and pooled over the
  model's cells at sparsity >= 0.7. Holds if > 0.
- C5 "PPB brings the best attack toward 50% at a small accuracy cost": per cell, PPB setting (its
  hyperparameters, e.g. lambda=4) and adaptive or not, each PPB unit against the Basic unit of the same
  cell and seed, paired by seed. "Best attack" of a pair: the maximum of the metric over the attacks
  both units ran (and, for AUC and TPR, measured: not NaN). (a) the best attack's distance to 50%
  under Basic minus under PPB (holds if > 0), in three views, named in `setting`: at the attacks' own
  thresholds (attack accuracy, no suffix), threshold-free ("; AUC": |best AUC - 0.5| under Basic minus
  under PPB) and at low FPR ("; TPR at 1% FPR": Basic's best TPR at 1% FPR minus PPB's, where
  measurable). A defense can move the target's scores away from the undefended shadows' threshold, so
  that the accuracy reads 0.5 while AUC and TPR at low FPR still show the membership signal: read the
  views together. (b) Basic's test accuracy minus PPB's (holds if the whole interval is below
  --max-accuracy-cost, 0.05 by default; contradicted if above it). (c, beyond the paper) "PPB also
  lowers TPR at 1% FPR of the strongest offline attack": Basic minus PPB of the best TPR at 1% FPR
  over the offline likelihood-ratio attacks both units ran and measured (lira_offline, rmia_offline); holds
  if > 0.
- C6 "Attacks lose little without knowing the pruning": the headline attack's accuracy loss
  (acc_known - acc_unknown) / acc_known of `miaray.unknown_pruning.matched_losses`, a seed's pairs
  averaged first, then the interval over seeds, per study. Holds if the interval lies below
  --max-loss (0.05 by default), contradicted if above.
- C7 "DP can hardly balance utility and privacy": per cell, adaptive or not, and PPB setting: the DP
  setting of the cell whose mean best attack accuracy over seeds is closest to that PPB setting's
  (ties: the DP setting with the higher mean test accuracy), then PPB's test accuracy minus that DP
  setting's, paired by seed. Holds if > 0: at about the same leakage PPB keeps more utility. The best
  attack of a unit here: the maximum accuracy over the attacks both PPB and DP ran in the cell. No
  accuracy floor: a DP setting that costs most of the utility is the tradeoff the claim is about.
- C8 the paper's ranking of the defenses: for L1 unstructured and slimming, "PPB and ADV are the two
  best defenses" (rows "ppb vs dp", "adv vs dp": each of PPB and ADV against every other defense
  beyond Basic); for L1 and L2 structured, "PPB is the best defense" ("ppb vs adv", "ppb vs dp"). Each
  defense at its best setting within the accuracy cost of C5b: among its settings whose mean test
  accuracy cost against Basic (paired by seed, as C5b) is at most --max-accuracy-cost, the one with the
  lowest mean distance of the best attack to 50% (as C5a; ties: the lower cost). Effect: the other
  defense's best-attack distance to 50% minus this one's, paired by seed, the best attack over the
  attacks both units ran; at the attacks' thresholds and threshold-free ("; AUC"), with the settings
  chosen once. Holds if > 0. Per cell and adaptive or not; a comparison whose defenses did not both run
  in the cell is skipped, one whose defense has no setting within the cost gets an inconclusive row
  without an effect that says so.

The defense claims (C5, C7, C8) read the successful known-pruning rows of pruned targets; C5 and C8
need the Basic unit of the same cell and seed. Beyond the paper (`analysis.claims_beyond`): C9, the
attacker who holds both the original and the pruned model, and C10 (with C10a, C10b), whether the change
in leakage comes from pruning or from the fine-tuning after it. Rows come in claim order: C1, C2, C3, C4,
C5a, C5b, C5c, C6, C7, C8, C9, C10a, C10b, C10.

Verdict: `holds` when the interval lies entirely on the claim's side of its threshold,
`contradicted` when entirely on the other side, `inconclusive` otherwise, and also when there is
no interval (one seed). A claim the results cannot test gets one `not run` row with the command that
would produce its input. Only successful rows of the paper's 45/45/10 split count.

Units that differ in a setting beside the cell's axes (`analysis.data.SETTINGS`, e.g. two --max-epochs
runs under one --name) are never pooled: the claims are tested per setting, each row led by the
differing settings (`analysis.data.kept_apart`); C10 alone compares the two values of `finetune`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make the repository root (and `analysis`) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.claims_beyond import BEYOND_GRID, C10, C9, claim_c10, claim_c9  # noqa: E402
from analysis.data import (MODEL, SETTINGS, Experiment, headline_attack, kept_apart, load_for_command,  # noqa: E402
                           main_grid, ok, original, paper_split, pruned, settings_label)
from analysis.verdicts import COLUMNS, CONTRADICTED, HOLDS, INCONCLUSIVE, NOT_RUN, Claim, effect_rows  # noqa: E402
from miaray.cli import HelpFormatter, add_debug_option, check_output_file, entry_point  # noqa: E402
from miaray.config import check_number  # noqa: E402
from miaray.results import GAPS  # noqa: E402
from miaray.stats import paired_effect, pearson_interval, t_interval  # noqa: E402
from miaray.unknown_pruning import known_pruning, matched_losses  # noqa: E402
from miaray.vocabulary import (ATTACKS, DEFENSE_PARAMS, ONLINE_ATTACKS, RATIO_ATTACKS, attack_names,  # noqa: E402
                               defense_label)

BEST = "best"
ALL = "all"
CELL = [*MODEL, "method", "sparsity"]
HIGH_SPARSITY = 0.7
MAX_ACCURACY_COST = 0.05
MAX_LOSS = 0.05
# What runs the inputs of a claim on embedded data (C1-C4: the claims preset, five seeds for intervals).
GRID = "python sweeps/full_grid.py --preset claims"
# The defense claims' inputs: Basic, PPB, DP and ADV units of the same cells and seeds.
DEFENSE_GRID = "python sweeps/full_grid.py --preset defenses"
UNKNOWN_GRID = "python sweeps/unknown_pruning.py --preset defenses"
OFFLINE_ATTACKS = tuple(a for a in RATIO_ATTACKS if a not in ONLINE_ATTACKS)  # lira_offline, rmia_offline
TPR = "tpr_at_fpr_0.01"
# The views of a defense's effect on the best attack, and what `setting` appends for each.
ACCURACY_VIEW, AUC_VIEW, TPR_VIEW = "", "; AUC", "; TPR at 1% FPR"
# C8: per method, the defenses the paper ranks best (Section 6, Fig. 14-16); each is compared with every
# other defense beyond Basic that ran in the cell.
BEST_DEFENSES = {"l1_unstructured": ("ppb", "adv"), "slimming": ("ppb", "adv"),
                 "l1_structured": ("ppb",), "l2_structured": ("ppb",)}
# The defense hyperparameter columns in the order settings name them (noise_multiplier before delta).
DEFENSE_COLUMNS = [f"defense_{name}" for params in DEFENSE_PARAMS.values() for name in params]


C1 = Claim("C1", "pruning raises attack accuracy over the original", ">", 0.0,
           "pruned - original attack accuracy, paired by seed (n = seeds)")
C2 = Claim("C2", "attack accuracy rises with sparsity", ">", 0.0,
           "mean over seeds of the slope of attack accuracy on sparsity (n = seeds)")
C3 = Claim("C3", "the gaps correlate with attack accuracy", ">", 0.0,
           "Pearson r of |gap| and attack accuracy over pruned units, Fisher-z interval (n = units)")
C4 = Claim("C4", f"SAMIA is the strongest attack at sparsity >= {HIGH_SPARSITY:g}", ">", 0.0,
           "SAMIA - strongest other attack (by mean), paired by seed (n = seeds)")


def c5_claims(max_cost: float) -> tuple[Claim, Claim]:
    return (Claim("C5a", "PPB brings the best attack toward 50%", ">", 0.0,
                  "|best attack acc - 0.5| under Basic - under PPB, paired by seed (n = seeds)"),
            Claim("C5b", "PPB costs little test accuracy", "<", max_cost,
                  "Basic - PPB test accuracy, paired by seed (n = seeds)"))


def c5a_views() -> dict[str, tuple[Claim, str]]:
    """C5a's claim per view: at the attacks' thresholds, threshold-free (AUC) and at 1% FPR, with the
    metric each reads."""
    distance = c5_claims(MAX_ACCURACY_COST)[0]
    return {ACCURACY_VIEW: (distance, "attack_acc"),
            AUC_VIEW: (replace(distance, statistic="|best attack AUC - 0.5| under Basic - under PPB, paired by "
                                                   "seed (n = seeds)"), "attack_auc"),
            TPR_VIEW: (replace(distance, statistic="best TPR at 1% FPR under Basic - under PPB (measurable only), "
                                                   "paired by seed (n = seeds)"), TPR)}


C5C = Claim("C5c", "PPB also lowers TPR at 1% FPR of the strongest offline attack", ">", 0.0,
            f"best TPR at 1% FPR of {'/'.join(OFFLINE_ATTACKS)} under Basic - under PPB, paired by seed (n = seeds)")
C7 = Claim("C7", "DP can hardly balance utility and privacy", ">", 0.0,
           "PPB - DP test accuracy, DP at its setting whose mean best attack accuracy is closest to the PPB "
           "setting's, paired by seed (n = seeds)")
C8_STATEMENTS = {("ppb", "adv"): "PPB and ADV are the two best defenses (L1 unstructured, slimming)",
                 ("ppb",): "PPB is the best defense (L1, L2 structured)"}
C8_STATISTIC = ("other's - this defense's |best attack {} - 0.5|, each at its best setting within "
                "--max-accuracy-cost, paired by seed (n = seeds)")


def c8_claim(best: tuple[str, ...], view: str = ACCURACY_VIEW) -> Claim:
    return Claim("C8", C8_STATEMENTS[best], ">", 0.0, C8_STATISTIC.format("AUC" if view == AUC_VIEW else "acc"))


def c6_claim(max_loss: float) -> Claim:
    return Claim("C6", "attacks lose little without knowing the pruning", "<", max_loss,
                 "(acc_known - acc_unknown) / acc_known, pairs of a seed averaged, over seeds (n = seeds)")


# ---- helpers ---------------------------------------------------------------------------------------
def _on_both_targets(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the attacks that ran on both the pruned and the original target of their unit."""
    ran = rows.groupby(["unit_id", "attack"])["target_model"].nunique()
    common = ran[ran == 2].reset_index()[["unit_id", "attack"]]
    return rows.merge(common, on=["unit_id", "attack"])


def _with_best(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` plus, per unit and target model, a `best` row: its strongest attack among `rows`."""
    if rows.empty:
        return rows
    best = rows.loc[rows.groupby(["unit_id", "target_model"])["attack_acc"].idxmax()].assign(attack=BEST)
    return pd.concat([rows, best], ignore_index=True)


def _attack_order(attacks: pd.Series) -> list[str]:
    present = set(attacks)
    return [a for a in (*attack_names(), BEST) if a in present]




# ---- the claims --------------------------------------------------------------------------------------
def claim_c1(grid: pd.DataFrame) -> list[dict]:
    org = original(grid)
    if org.empty:
        return [C1.not_run("no rows of the unpruned target", GRID)]
    both = _on_both_targets(grid)
    if both.empty:
        return [C1.not_run("no attack ran on both the pruned and the unpruned target of a seed",
                           f"{GRID} (the unit's default attacks the original like the pruned target)")]
    effects = paired_effect(_with_best(both), by=[*CELL, "attack"])
    effects = effects[effects["n_seeds"] > 0]
    order = _attack_order(effects["attack"])
    effects = effects.assign(_o=effects["attack"].map(order.index)).sort_values([*CELL, "_o"])
    return effect_rows(C1, effects, [*CELL, "attack"])


def _slope(part: pd.DataFrame) -> float:
    x, y = part["sparsity"].to_numpy(float), part["attack_acc"].to_numpy(float)
    return float(np.polyfit(x, y, 1)[0]) if len(np.unique(x)) >= 2 else math.nan


def claim_c2(grid: pd.DataFrame) -> list[dict]:
    target = pruned(grid)
    if target.empty or target.groupby([*MODEL, "method"])["sparsity"].nunique().max() < 2:
        return [C2.not_run("fewer than two sparsities per method", f"{GRID} --sparsities 0.5,0.7,0.9")]
    target = _with_best(target)
    lines = []
    scope = [*MODEL, "method"]
    for key, part in target.groupby([*scope, "attack"], dropna=False):
        per_seed = part.groupby(["seed", "sparsity"])["attack_acc"].mean().reset_index()
        slopes = per_seed.groupby("seed").apply(_slope, include_groups=False)
        effect, low, high, n = t_interval(slopes)
        if n:
            lines.append({**dict(zip([*scope, "attack"], key)), "sparsity": ALL, "effect": effect, "ci_low": low,
                          "ci_high": high, "n_seeds": n})
    if not lines:
        return [C2.not_run("no seed has two sparsities of a method", f"{GRID} --sparsities 0.5,0.7,0.9")]
    effects = pd.DataFrame(lines)
    order = _attack_order(effects["attack"])
    effects = effects.assign(_o=effects["attack"].map(order.index)).sort_values([*scope, "_o"])
    return effect_rows(C2, effects, [*scope, "sparsity", "attack"])


def claim_c3(grid: pd.DataFrame) -> list[dict]:
    target = pruned(grid)
    attack = headline_attack(target) if not target.empty else None
    if attack is None:
        return [C3.not_run("no successful pruned rows", GRID)]
    target = target[target["attack"] == attack]
    lines = []
    for key, part in target.groupby(MODEL, dropna=False):
        for gap in GAPS:
            r, low, high, n = pearson_interval(part[gap].abs(), part["attack_acc"])
            lines.append(C3.row({**dict(zip(MODEL, key)), "method": ALL, "sparsity": ALL, "attack": attack,
                                 "setting": f"|{gap.replace('_', ' ')}|"}, r, low, high, n))
    return lines


def claim_c4(grid: pd.DataFrame) -> list[dict]:
    target = pruned(grid)
    if "samia" not in set(target["attack"]):
        return [C4.not_run("SAMIA did not run", f"{GRID} --attacks all")]
    target = target[target["sparsity"] >= HIGH_SPARSITY - 1e-9]
    others = target[target["attack"] != "samia"]
    if target.empty or others.empty:
        return [C4.not_run(f"no SAMIA and other attack at sparsity >= {HIGH_SPARSITY:g}",
                           f"{GRID} --attacks all --sparsities 0.7,0.9")]
    # The competitor of each cell: the other attack with the highest mean accuracy over seeds.
    means = others.groupby([*CELL, "attack"], dropna=False)["attack_acc"].mean().reset_index()
    rival = means.loc[means.groupby(CELL, dropna=False)["attack_acc"].idxmax(), [*CELL, "attack"]]
    samia = target[target["attack"] == "samia"][[*CELL, "seed", "attack_acc"]]
    duel = (samia.merge(rival.rename(columns={"attack": "rival"}), on=CELL)
            .merge(others.rename(columns={"attack": "rival", "attack_acc": "rival_acc"})[
                   [*CELL, "seed", "rival", "rival_acc"]], on=[*CELL, "seed", "rival"]))
    duel["difference"] = duel["attack_acc"] - duel["rival_acc"]
    lines = []
    for key, part in duel.groupby(CELL, dropna=False):
        effect, low, high, n = t_interval(part.groupby("seed")["difference"].mean())
        lines.append(C4.row({**dict(zip(CELL, key)), "attack": f"samia vs {part['rival'].iloc[0]}"},
                            effect, low, high, n))
    for key, part in duel.groupby(MODEL, dropna=False):  # pooled: a seed's cells averaged first
        effect, low, high, n = t_interval(part.groupby("seed")["difference"].mean())
        lines.append(C4.row({**dict(zip(MODEL, key)), "method": ALL, "sparsity": f">={HIGH_SPARSITY:g}",
                             "attack": "samia vs strongest other"}, effect, low, high, n))
    return lines


# ---- the defense claims -------------------------------------------------------------------------------
def _defense_points(rows: pd.DataFrame) -> pd.DataFrame:
    """The successful known-pruning rows of pruned targets of the paper's split, with `setting` (the
    unit's defense and hyperparameters, e.g. 'ppb lambda=4'; 'basic') and `rank` (settings in the order
    of their values, for sorting)."""
    points = known_pruning(pruned(ok(paper_split(rows))))
    if points.empty:
        return points.assign(setting=pd.Series(dtype=str), rank=pd.Series(dtype=int))
    params = [c for c in dict.fromkeys([*DEFENSE_COLUMNS, *sorted(points.columns)])
              if c.startswith("defense_") and c in points.columns]
    units = points.drop_duplicates("unit_id").sort_values(["defense", *params], kind="stable")
    # As the sweeps print them: the hyperparameter the paper varies, the others where not at their default.
    names = {unit: defense_label(defense, {p.removeprefix("defense_"): v for p, v in zip(params, values)
                                           if not math.isnan(v)})
             for unit, defense, values in zip(units["unit_id"], units["defense"],
                                               units[params].to_numpy(dtype=float).tolist())}
    order = {name: rank for rank, name in enumerate(dict.fromkeys(names[u] for u in units["unit_id"]))}
    setting = points["unit_id"].map(names)
    return points.assign(setting=setting, rank=setting.map(order))


def _units(points: pd.DataFrame) -> pd.DataFrame:
    """One line per unit: its cell, seed, defense, adaptive, setting, rank and test accuracy."""
    return points.groupby("unit_id", sort=False).agg(
        **{c: (c, "first") for c in [*CELL, "seed", "defense", "adaptive", "setting", "rank"]},
        test_acc=("target_test_acc", "first")).reset_index()


def _best_pairs(rows: pd.DataFrame, other: pd.DataFrame, metric: str, *,
                attacks: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per unit of `rows`, against the unit of `other` of the same cell and seed (repeats averaged): the
    best (largest) `metric` of each over the attacks both ran and measured (not NaN), optionally only
    `attacks`. Columns: unit_id, best, best_other."""
    keys = [*CELL, "seed"]
    if attacks is not None:
        rows, other = rows[rows["attack"].isin(attacks)], other[other["attack"].isin(attacks)]
    other = other.groupby([*keys, "attack"], dropna=False)[metric].mean().rename("other").reset_index()
    both = rows[["unit_id", *keys, "attack", metric]].merge(other, on=[*keys, "attack"])
    both = both[both[metric].notna() & both["other"].notna()]
    return both.groupby("unit_id").agg(best=(metric, "max"), best_other=("other", "max")).reset_index()


def _with_basic_accuracy(units: pd.DataFrame, basic: pd.DataFrame) -> pd.DataFrame:
    """`units` that have a Basic unit of the same cell and seed, with `cost`: Basic's test accuracy minus
    theirs (Basic repeats averaged)."""
    keys = [*CELL, "seed"]
    reference = _units(basic).groupby(keys, dropna=False)["test_acc"].mean().rename("test_acc_basic").reset_index()
    units = units.merge(reference, on=keys)
    return units.assign(cost=units["test_acc_basic"] - units["test_acc"])


def _setting_text(setting: str, adaptive: bool, view: str = ACCURACY_VIEW) -> str:
    return f"{setting}{', adaptive' if adaptive else ''}{view}"


def _per_setting(claims: dict[str, Claim], values: pd.DataFrame) -> list[dict]:
    """A row per (cell, setting, adaptive, view) of `values` (one line per unit and view: the cell, seed,
    setting, rank, adaptive, `view` (a key of `claims`, the claim of its rows) and `value`): the mean over
    seeds and its interval (a seed's units averaged first). Cells, then settings, then views in order."""
    lines = []
    values = values.assign(_view=values["view"].map(list(claims).index))
    group = [*CELL, "rank", "setting", "adaptive", "_view"]
    for key, part in values.dropna(subset=["value"]).groupby(group, dropna=False):
        scope = dict(zip(group, key))
        view = list(claims)[scope["_view"]]
        effect, low, high, n = t_interval(part.groupby("seed")["value"].mean())
        lines.append(claims[view].row({**{c: scope[c] for c in CELL}, "attack": BEST,
                                       "setting": _setting_text(scope["setting"], scope["adaptive"], view)},
                                      effect, low, high, n))
    return lines


def claim_c5(rows: pd.DataFrame, *, max_cost: float) -> list[dict]:
    """C5a (each view), C5b and C5c, in that order."""
    distance, cost = c5_claims(max_cost)
    points = _defense_points(rows)
    ppb, basic = points[points["defense"] == "ppb"], points[points["defense"] == "basic"]
    missing = (("no PPB rows", DEFENSE_GRID) if ppb.empty else
               ("no Basic rows of the PPB cells", DEFENSE_GRID) if basic.empty else None)
    units = _with_basic_accuracy(_units(ppb), basic) if missing is None else pd.DataFrame()
    if missing is None and units.empty:
        missing = ("no Basic unit of the same cell and seed as a PPB unit", DEFENSE_GRID)
    if missing is not None:
        return [claim.not_run(*missing) for claim in (distance, cost, C5C)]
    views = []
    for view, (_, metric) in c5a_views().items():
        best = units.merge(_best_pairs(ppb, basic, metric), on="unit_id")
        if view == TPR_VIEW:  # the lower the TPR at low FPR, the less leakage (its chance level is the FPR)
            best["value"] = best["best_other"] - best["best"]
        else:
            best["value"] = (best["best_other"] - 0.5).abs() - (best["best"] - 0.5).abs()
        views.append(best.assign(view=view))
    lines = _per_setting({view: claim for view, (claim, _) in c5a_views().items()}, pd.concat(views))
    lines += _per_setting({ACCURACY_VIEW: cost}, units.assign(value=units["cost"], view=ACCURACY_VIEW))
    # C5c: the offline likelihood-ratio attacks' TPR at 1% FPR, where they ran on both units and it is measurable.
    if not set(ppb["attack"]) & set(OFFLINE_ATTACKS):
        return lines + [C5C.not_run(f"no offline likelihood-ratio attack ({', '.join(OFFLINE_ATTACKS)}) ran on PPB units",
                                    f"{DEFENSE_GRID} --attacks {','.join((*ATTACKS, *OFFLINE_ATTACKS))}")]
    offline = units.merge(_best_pairs(ppb, basic, TPR, attacks=OFFLINE_ATTACKS), on="unit_id")
    if offline.empty:
        attacks = f"--attacks {','.join((*ATTACKS, *OFFLINE_ATTACKS))}"
        measured = ppb[ppb["attack"].isin(OFFLINE_ATTACKS)][TPR].notna().any()
        return lines + [C5C.not_run("no Basic unit of a PPB unit's cell and seed measured an offline attack's TPR at "
                                    "1% FPR", f"{DEFENSE_GRID} {attacks}") if measured else
                        C5C.not_run("TPR at 1% FPR of the offline attacks not measurable on PPB units (it needs 100 "
                                    "non-members or more)", f"{DEFENSE_GRID} --datasets mnist5k {attacks}")]
    return lines + _per_setting({ACCURACY_VIEW: C5C},
                                offline.assign(value=offline["best_other"] - offline["best"], view=ACCURACY_VIEW))


def claim_c7(rows: pd.DataFrame) -> list[dict]:
    points = _defense_points(rows)
    ppb, dp = points[points["defense"] == "ppb"], points[points["defense"] == "dp"]
    if ppb.empty or dp.empty:
        return [C7.not_run(f"no {'PPB' if ppb.empty else 'DP'} rows", DEFENSE_GRID)]
    lines = []
    for key, part in pd.concat([ppb, dp]).groupby([*CELL, "adaptive"], dropna=False):
        scope = dict(zip([*CELL, "adaptive"], key))
        cell_ppb, cell_dp = part[part["defense"] == "ppb"], part[part["defense"] == "dp"]
        attacks = set(cell_ppb["attack"]) & set(cell_dp["attack"])
        if cell_ppb.empty or cell_dp.empty or not attacks:
            continue
        part = part[part["attack"].isin(attacks) & part["attack_acc"].notna()]
        units = _units(part).merge(part.groupby("unit_id")["attack_acc"].max().rename("best").reset_index(),
                                   on="unit_id")
        # Per setting: the mean over seeds (a seed's units averaged first) of the best attack and test accuracy.
        seeds = units.groupby(["defense", "rank", "setting", "seed"])[["best", "test_acc"]].mean()
        means = seeds.groupby(["defense", "rank", "setting"]).mean().reset_index()
        dp_means = means[means["defense"] == "dp"]
        for _, line in means[means["defense"] == "ppb"].sort_values("rank").iterrows():
            gap = (dp_means["best"] - line["best"]).abs()
            chosen = dp_means.assign(_gap=gap, _acc=-dp_means["test_acc"]).sort_values(["_gap", "_acc", "rank"]).iloc[0]
            this = seeds.loc[("ppb", line["rank"], line["setting"]), "test_acc"]
            that = seeds.loc[("dp", chosen["rank"], chosen["setting"]), "test_acc"]
            difference = (this - that).dropna()
            effect, low, high, n = t_interval(difference)
            lines.append(C7.row({**{c: scope[c] for c in CELL}, "attack": BEST,
                                 "setting": _setting_text(f"{line['setting']} vs {chosen['setting']}",
                                                          scope["adaptive"])}, effect, low, high, n))
    if not lines:
        return [C7.not_run("no cell ran both PPB and DP with a common attack", DEFENSE_GRID)]
    return lines


def _best_settings(points: pd.DataFrame, *, max_cost: float) -> pd.DataFrame:
    """Per cell, adaptive or not, and defense beyond Basic: its settings' mean test-accuracy cost against
    Basic and mean best-attack distance to 0.5 over seeds (C5a and C5b's pairing), and `chosen`: the
    setting of lowest distance among those of cost <= max_cost (ties: the lower cost)."""
    basic = points[points["defense"] == "basic"]
    defended = points[points["defense"] != "basic"]
    units = _with_basic_accuracy(_units(defended), basic)
    units = units.merge(_best_pairs(defended, basic, "attack_acc"), on="unit_id")
    units["distance"] = (units["best"] - 0.5).abs()
    group = [*CELL, "adaptive", "defense", "rank", "setting"]
    seeds = units.groupby([*group, "seed"], dropna=False)[["cost", "distance"]].mean()
    means = seeds.groupby(group, dropna=False).mean().reset_index()
    means["eligible"] = means["cost"] <= max_cost + 1e-12
    ranked = means.sort_values([*CELL, "adaptive", "defense", "eligible", "distance", "cost", "rank"],
                               ascending=[True] * (len(CELL) + 2) + [False, True, True, True])
    first = ~ranked.duplicated([*CELL, "adaptive", "defense"])
    return ranked.assign(chosen=first & ranked["eligible"])


def claim_c8(rows: pd.DataFrame, *, max_cost: float) -> list[dict]:
    points = _defense_points(rows)
    ran = set(points["defense"]) - {"basic"}
    if "basic" not in set(points["defense"]) or len(ran) < 2:
        return [c8_claim(("ppb", "adv")).not_run("fewer than two defenses beyond Basic, or no Basic units",
                                                 DEFENSE_GRID)]
    settings = _best_settings(points, max_cost=max_cost)
    lines = []
    for key, part in settings.groupby([*CELL, "adaptive"], dropna=False):
        scope = dict(zip([*CELL, "adaptive"], key))
        best_defenses = BEST_DEFENSES.get(scope["method"], ())
        present = list(dict.fromkeys(part["defense"]))
        chosen = part[part["chosen"]].set_index("defense")["setting"]
        cell = points.merge(part[[*CELL, "adaptive", "setting"]].drop_duplicates(),
                            on=[*CELL, "adaptive", "setting"])
        for this, other in ((t, o) for t in best_defenses if t in present
                            for o in present if o not in best_defenses):
            names = {d: chosen.get(d, f"{d} (no setting within the accuracy cost)") for d in (this, other)}
            for view, metric in ((ACCURACY_VIEW, "attack_acc"), (AUC_VIEW, "attack_auc")):
                claim = c8_claim(best_defenses, view)
                where = {**{c: scope[c] for c in CELL}, "attack": BEST,
                         "setting": _setting_text(f"{names[this]} vs {names[other]}", scope["adaptive"], view)}
                if this not in chosen.index or other not in chosen.index:
                    if view == ACCURACY_VIEW:  # no effect to measure, said once
                        lines.append(claim.row(where, math.nan, math.nan, math.nan, 0))
                    continue
                mine, theirs = (cell[cell["setting"] == chosen[d]] for d in (this, other))
                pairs = _best_pairs(mine, theirs, metric).merge(_units(mine)[["unit_id", "seed"]], on="unit_id")
                if pairs.empty:
                    continue
                pairs["value"] = (pairs["best_other"] - 0.5).abs() - (pairs["best"] - 0.5).abs()
                effect, low, high, n = t_interval(pairs.groupby("seed")["value"].mean())
                lines.append(claim.row(where, effect, low, high, n))
    if not lines:
        return [c8_claim(("ppb", "adv")).not_run("no cell ran PPB (or ADV) beside another defense beyond Basic",
                                                 DEFENSE_GRID)]
    return lines


def claim_c6(exp: Experiment, *, max_loss: float) -> list[dict]:
    claim = c6_claim(max_loss)
    matched = matched_losses(paper_split(exp.rows), pairs=exp.pairs)
    if matched.empty:
        return [claim.not_run("no unknown-pruning rows with their known-pruning unit",
                              UNKNOWN_GRID)]
    attack = headline_attack(matched.assign(target_model="pruned", attack_acc=matched["attack_acc_unknown"]))
    matched = matched[matched["attack"] == attack]
    lines = []
    for key, part in matched.groupby([*MODEL, "study"], dropna=False):
        effect, low, high, n = t_interval(part.groupby("seed")["loss"].mean())
        lines.append(claim.row({**dict(zip(MODEL, key[:-1])), "method": ALL, "sparsity": ALL, "attack": attack,
                                "setting": f"study: {key[-1]}"}, effect, low, high, n))
    return lines


NO_GRID = "no successful known-pruning Basic rows of the 45/45/10 split"


@kept_apart
def _claims_per_setting(exp: Experiment, *, max_accuracy_cost: float, max_loss: float) -> pd.DataFrame:
    """C1 to C9, each on the units of one setting."""
    grid = main_grid(exp.rows) if len(exp.rows) else exp.rows
    makers: list[Callable[[], list[dict]]] = [
        lambda: claim_c1(grid), lambda: claim_c2(grid), lambda: claim_c3(grid), lambda: claim_c4(grid),
        lambda: claim_c5(exp.rows, max_cost=max_accuracy_cost), lambda: claim_c6(exp, max_loss=max_loss),
        lambda: claim_c7(exp.rows), lambda: claim_c8(exp.rows, max_cost=max_accuracy_cost),
        lambda: claim_c9(grid)]
    if grid.empty:
        empty = [(C1, GRID), (C2, GRID), (C3, GRID), (C4, GRID),
                 *((claim, DEFENSE_GRID) for claim in c5_claims(max_accuracy_cost)), (C5C, DEFENSE_GRID),
                 (c6_claim(max_loss), UNKNOWN_GRID), (C7, DEFENSE_GRID), (c8_claim(("ppb", "adv")), DEFENSE_GRID),
                 (C9, BEYOND_GRID)]
        return pd.DataFrame([claim.not_run(NO_GRID, command) for claim, command in empty], columns=COLUMNS)
    return pd.DataFrame([row for make in makers for row in make()], columns=COLUMNS)


def claims_table(exp: Experiment, *, max_accuracy_cost: float = MAX_ACCURACY_COST,
                 max_loss: float = MAX_LOSS) -> pd.DataFrame:
    """Every claim's rows (COLUMNS) in order: C1, C2, C3, C4, C5a, C5b, C5c, C6, C7, C8, C9 (per setting: the
    settings that vary lead, as columns), then C10a, C10b, C10 (across `finetune`)."""
    per_setting = _claims_per_setting(exp, max_accuracy_cost=max_accuracy_cost, max_loss=max_loss)
    grid = main_grid(exp.rows) if len(exp.rows) else exp.rows
    c10 = pd.DataFrame(claim_c10(grid) if not grid.empty else [C10.not_run(NO_GRID, BEYOND_GRID)])
    return pd.concat([per_setting, c10], ignore_index=True)[list(per_setting.columns)]


def verdict_counts(table: pd.DataFrame) -> str:
    """One line: how many rows of each verdict."""
    counts = table["verdict"].value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in (HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_RUN))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="claims.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("results", nargs="+", help="experiment directories (<storage>/<name>, holding rows/)")
    p.add_argument("--out", type=Path, help="also write the table to this .csv file (default: print only)")
    p.add_argument("--max-accuracy-cost", type=float, default=MAX_ACCURACY_COST,
                   help="C5b: the largest test-accuracy loss that counts as small (C8: the most a defense's setting "
                        "may cost), a fraction in [0, 1]")
    p.add_argument("--max-loss", type=float, default=MAX_LOSS,
                   help="C6: the largest relative attack-accuracy loss that counts as little, a fraction in [0, 1]")
    return add_debug_option(p)


@entry_point(prog="claims.py")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    checks = [lambda option=option, value=value: check_number(option, value, low=0.0, high=1.0)
              for option, value in (("--max-accuracy-cost", args.max_accuracy_cost), ("--max-loss", args.max_loss))]
    if args.out:
        checks.append(lambda: check_output_file(args.out, option="--out"))
    exp = load_for_command(parser, args.results, checks=checks)
    table = claims_table(exp, max_accuracy_cost=args.max_accuracy_cost, max_loss=args.max_loss)
    for note in exp.notes:
        print(f"note: {note}")
    shown = table.drop(columns=["statement", "statistic", "command"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    settings = [c for c in SETTINGS if c in table.columns]  # units that differ in a setting: claims per setting
    for _, row in table[table["verdict"] == NOT_RUN].iterrows():
        where = f" [{settings_label({c: row[c] for c in settings})}]" if settings else ""
        print(f"{row['claim']}{where} not run ({row['statistic']}): {row['command']}")
    print(verdict_counts(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
