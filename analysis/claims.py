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
- C5 "PPB brings the best attack toward 50% at a small accuracy cost": per PPB setting (lambda,
  adaptive or not) against the Basic unit of the same cell and seed, paired by seed. (a) the best
  attack's distance to 50% under Basic minus under PPB (holds if > 0); (b) Basic's test accuracy
  minus PPB's (holds if the whole interval is below --max-accuracy-cost, 0.05 by default;
  contradicted if above it).
- C6 "Attacks lose little without knowing the pruning": the headline attack's accuracy loss
  (acc_known - acc_unknown) / acc_known of `miaray.unknown_pruning.matched_losses`, a seed's pairs
  averaged first, then the interval over seeds, per study. Holds if the interval lies below
  --max-loss (0.05 by default), contradicted if above.

Verdict: `holds` when the interval lies entirely on the claim's side of its threshold,
`contradicted` when entirely on the other side, `inconclusive` otherwise, and also when there is
no interval (one seed). A claim the results cannot test gets one `not run` row with the command that
would produce its input. Only successful rows of the paper's 45/45/10 split count.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make the repository root (and `analysis`) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.data import (MODEL, Experiment, headline_attack, load_for_command, main_grid, ok, original,  # noqa: E402
                           paper_split, pruned)
from miaray.cli import HelpFormatter, add_debug_option, check_output_file, entry_point  # noqa: E402
from miaray.config import ALL_ATTACKS, check_number  # noqa: E402
from miaray.stats import paired_effect, pearson_interval, t_interval  # noqa: E402
from miaray.unknown_pruning import known_pruning, matched_losses  # noqa: E402

HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "holds", "contradicted", "inconclusive", "not run"
BEST = "best"
ALL = "all"
CELL = [*MODEL, "method", "sparsity"]
GAPS = ("confidence_gap", "sensitivity_gap", "generalization_gap")
HIGH_SPARSITY = 0.7
MAX_ACCURACY_COST = 0.05
MAX_LOSS = 0.05
# What runs the inputs of a claim on embedded data, with the five seeds that give intervals.
SEEDS = "--seeds 0,1,2,3,4"
GRID = "python sweeps/full_grid.py --preset claims"
COLUMNS = ["claim", "statement", "dataset", "arch", "width", "method", "sparsity", "attack", "setting",
           "statistic", "effect", "ci_low", "ci_high", "n", "threshold", "verdict", "command"]


@dataclass(frozen=True)
class Claim:
    """A claim: its statement, which side of `threshold` the effect must lie on, and the statistic."""

    name: str
    statement: str
    side: str            # ">": holds when the effect exceeds the threshold; "<": when below it
    threshold: float
    statistic: str

    def verdict(self, low: float, high: float) -> str:
        """Where the interval [low, high] lies: holds / contradicted / inconclusive."""
        if math.isnan(low) or math.isnan(high):
            return INCONCLUSIVE
        above, below = low > self.threshold, high < self.threshold
        if self.side == ">":
            return HOLDS if above else CONTRADICTED if below else INCONCLUSIVE
        return HOLDS if below else CONTRADICTED if above else INCONCLUSIVE

    def row(self, scope: dict, effect: float, low: float, high: float, n: int) -> dict:
        return {"claim": self.name, "statement": self.statement, **_scope(scope), "statistic": self.statistic,
                "effect": effect, "ci_low": low, "ci_high": high, "n": int(n), "threshold": self.threshold,
                "verdict": self.verdict(low, high), "command": ""}

    def not_run(self, reason: str, command: str) -> dict:
        return {"claim": self.name, "statement": self.statement, **_scope({}), "statistic": reason,
                "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "threshold": self.threshold,
                "verdict": NOT_RUN, "command": command}


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def _scope(scope: dict) -> dict:
    """The scope columns as text ('all' where a claim pools over a column, '' where it does not apply)."""
    return {c: _text(scope.get(c, "")) for c in ("dataset", "arch", "width", "method", "sparsity", "attack",
                                                 "setting")}


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
    return [a for a in (*ALL_ATTACKS, BEST) if a in present]


def _effect_rows(claim: Claim, effects: pd.DataFrame, scope_columns: list[str]) -> list[dict]:
    """A row per line of an effects table (effect, ci_low, ci_high, n_seeds), scoped by its columns."""
    return [claim.row({c: line[c] for c in scope_columns}, line["effect"], line["ci_low"], line["ci_high"],
                      line["n_seeds"]) for _, line in effects.iterrows()]


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
    return _effect_rows(C1, effects, [*CELL, "attack"])


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
    return _effect_rows(C2, effects, [*scope, "sparsity", "attack"])


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


def claim_c5(rows: pd.DataFrame, *, max_cost: float) -> list[dict]:
    distance, cost = c5_claims(max_cost)
    points = known_pruning(pruned(ok(paper_split(rows))))
    ppb = points[points["defense"] == "ppb"]
    command = f"{GRID} --defense ppb --defense-param lambda=4 (beside the Basic grid of the same seeds)"
    if ppb.empty:
        return [claim.not_run("no PPB rows", command) for claim in (distance, cost)]
    basic = points[points["defense"] == "basic"]
    # Per unit the best attack among those the PPB unit ran (a search may run fewer than the grid).
    attacks = set(ppb["attack"])
    best = lambda frame: frame[frame["attack"].isin(attacks)].groupby("unit_id").agg(  # noqa: E731
        **{**{c: (c, "first") for c in [*CELL, "seed", "adaptive", "defense_lambda"]},
           "best": ("attack_acc", "max"), "test_acc": ("target_test_acc", "first")})
    basic_best = best(basic)
    if basic_best.empty:
        return [claim.not_run("no Basic rows of the PPB cells", GRID) for claim in (distance, cost)]
    paired = best(ppb).merge(basic_best.drop(columns=["adaptive", "defense_lambda"]), on=[*CELL, "seed"],
                             suffixes=("", "_basic"))
    if paired.empty:
        return [claim.not_run("no Basic unit of the same cell and seed as a PPB unit", GRID)
                for claim in (distance, cost)]
    paired["toward_half"] = (paired["best_basic"] - 0.5).abs() - (paired["best"] - 0.5).abs()
    paired["cost"] = paired["test_acc_basic"] - paired["test_acc"]
    lines = []
    for key, part in paired.groupby([*CELL, "defense_lambda", "adaptive"], dropna=False):
        scope = {**dict(zip(CELL, key[:len(CELL)])), "attack": BEST,
                 "setting": f"ppb lambda={key[-2]:g}" + (", adaptive" if key[-1] else "")}
        for claim, column in ((distance, "toward_half"), (cost, "cost")):
            effect, low, high, n = t_interval(part.groupby("seed")[column].mean())
            lines.append(claim.row(scope, effect, low, high, n))
    return lines


def claim_c6(exp: Experiment, *, max_loss: float) -> list[dict]:
    claim = c6_claim(max_loss)
    matched = matched_losses(paper_split(exp.rows), pairs=exp.pairs)
    if matched.empty:
        return [claim.not_run("no unknown-pruning rows with their known-pruning unit",
                              f"python sweeps/unknown_pruning.py --preset quick {SEEDS} (beside the grid's results)")]
    attack = headline_attack(matched.assign(target_model="pruned", attack_acc=matched["attack_acc_unknown"]))
    matched = matched[matched["attack"] == attack]
    lines = []
    for key, part in matched.groupby([*MODEL, "study"], dropna=False):
        effect, low, high, n = t_interval(part.groupby("seed")["loss"].mean())
        lines.append(claim.row({**dict(zip(MODEL, key[:-1])), "method": ALL, "sparsity": ALL, "attack": attack,
                                "setting": f"study: {key[-1]}"}, effect, low, high, n))
    return lines


def claims_table(exp: Experiment, *, max_accuracy_cost: float = MAX_ACCURACY_COST,
                 max_loss: float = MAX_LOSS) -> pd.DataFrame:
    """Every claim's rows (COLUMNS), C1 to C6 in order."""
    grid = main_grid(exp.rows) if len(exp.rows) else exp.rows
    makers: list[Callable[[], list[dict]]] = [
        lambda: claim_c1(grid), lambda: claim_c2(grid), lambda: claim_c3(grid), lambda: claim_c4(grid),
        lambda: claim_c5(exp.rows, max_cost=max_accuracy_cost), lambda: claim_c6(exp, max_loss=max_loss)]
    empty = [C1, C2, C3, C4, *c5_claims(max_accuracy_cost), c6_claim(max_loss)]
    if grid.empty:
        return pd.DataFrame([c.not_run("no successful known-pruning Basic rows of the 45/45/10 split", GRID)
                             for c in empty], columns=COLUMNS)
    return pd.DataFrame([row for make in makers for row in make()], columns=COLUMNS)


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
                   help="C5b: the largest test-accuracy loss that counts as small, a fraction in [0, 1]")
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
    for _, row in table[table["verdict"] == NOT_RUN].iterrows():
        print(f"{row['claim']} not run ({row['statistic']}): {row['command']}")
    print(verdict_counts(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
