"""What a search writes beside its rows: `trials.parquet` (every counted trial, per-seed values and each
attack's metrics included), `pareto.parquet` (the front, search-time and confirmed) and `pareto.png`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from miaray import results
from miaray.pareto import pareto_front
from miaray.search.confirm import confirmation_plan, confirmation_table
from miaray.search.outcome import unit_outcome
from miaray.search.space import DEFAULT_PRIVACY_METRIC, DEFENSE_PARAM, PRIVACY_METRICS, baseline_unit, privacy_column
from miaray.search.spec import Search
from miaray.search.study import counted_trials
from miaray.vocabulary import PRIMARY_DEFENSE_PARAM, attack_names


def setting(params: Mapping[str, float]) -> str:
    """A defense setting as the grid's defense front writes it (`miaray.pareto.defense_front`): its
    hyperparameters by name, e.g. 'delta=1e-05, max_grad_norm=1, noise_multiplier=0.1'."""
    return ", ".join(f"{name}={float(value):g}" for name, value in sorted(params.items()))


def _unit_ids(trial: FrozenTrial) -> list[str]:
    return list(trial.user_attrs.get("unit_ids") or ([trial.user_attrs["unit_id"]] if "unit_id" in trial.user_attrs
                                                      else []))


def trials_table(study: optuna.Study, *, rows: pd.DataFrame, metric: str = DEFAULT_PRIVACY_METRIC) -> pd.DataFrame:
    """One line per counted trial: defense, setting and hyperparameters, state, the objectives (seed
    means), each seed's values (`<objective>_seed<s>`, `strongest_attack_seed<s>`), epsilon, the
    collapsed attacks, each attack's metrics (`<attack>_<metric>` columns, means over the trial's
    seeds, from the unit rows) and `on_front` (Optuna's `best_trials`)."""
    column = privacy_column(metric)
    front = {t.number for t in study.best_trials}
    lines = []
    for trial in counted_trials(study):
        done = trial.state == TrialState.COMPLETE
        # The whole setting, the fixed hyperparameters included (studies from before: the searched ones).
        params = trial.user_attrs.get("defense_params") or {k: v for k, v in trial.params.items() if k != DEFENSE_PARAM}
        defense = trial.params.get(DEFENSE_PARAM, trial.user_attrs.get("defense"))
        per_seed = {}
        for seed, values in trial.user_attrs.get("seed_values", {}).items():
            per_seed.update({f"target_test_acc_seed{seed}": values["target_test_acc"],
                             f"{column}_seed{seed}": values[column],
                             f"strongest_attack_seed{seed}": values["strongest_attack"]})
        lines.append({"trial": trial.number, "state": trial.state.name, "origin": trial.user_attrs.get("origin"),
                      "defense": defense, "setting": setting(params),
                      **{f"defense_{name}": value for name, value in params.items()},
                      "target_test_acc": trial.values[0] if done else math.nan,
                      column: trial.values[1] if done else math.nan,
                      "strongest_attack": trial.user_attrs.get("strongest_attack"),
                      "epsilon": trial.user_attrs.get("epsilon", math.nan),
                      "seeds": ",".join(map(str, trial.user_attrs.get("seeds", []))), **per_seed,
                      "collapsed_attacks": "; ".join(trial.user_attrs.get("collapsed", [])),
                      "error": trial.user_attrs.get("error", ""), "unit_id": trial.user_attrs.get("unit_id"),
                      "on_front": trial.number in front})
    table = pd.DataFrame(lines)
    ok = rows[(rows["status"] == "ok") & (rows["target_model"] == "pruned")] if len(rows) else rows
    if table.empty or ok.empty:  # no trial succeeded: no attack metrics to add
        return table
    from miaray.attacks.metrics import METRICS  # the metric names' one home (a lazy import, as in miaray.sweep)

    links = pd.DataFrame([(t.number, u) for t in counted_trials(study) for u in _unit_ids(t)],
                         columns=["trial", "unit_id"])
    merged = links.merge(ok[["unit_id", "attack", *METRICS]], on="unit_id")
    if merged.empty:
        return table
    wide = merged.groupby(["trial", "attack"])[list(METRICS)].mean().unstack("attack")
    order = sorted(wide.columns, key=lambda c: (attack_names().index(c[1]), METRICS.index(c[0])))
    wide = wide[order]
    wide.columns = [f"{attack}_{name}" for name, attack in order]
    return table.merge(wide, left_on="trial", right_index=True, how="left")


def pareto_table(table: pd.DataFrame, *, metric: str = DEFAULT_PRIVACY_METRIC) -> pd.DataFrame:
    """The front of a trials table, after checking Optuna's `best_trials` against `pareto_front`."""
    complete = table[table["state"] == TrialState.COMPLETE.name] if len(table) else table
    if complete.empty:
        return complete
    ours = set(pareto_front(complete, objectives={"target_test_acc": "max", privacy_column(metric): "min"})["trial"])
    optunas = set(complete.loc[complete["on_front"], "trial"])
    if ours != optunas:  # both are exact, so a difference is a bug in one of them: never hide it
        raise RuntimeError(f"Pareto fronts disagree: Optuna {sorted(optunas)}, miaray.pareto {sorted(ours)}")
    # Best accuracy first; equal accuracies by trial number, so the printout never depends on finishing order.
    return complete[complete["on_front"]].sort_values(["target_test_acc", "trial"], ascending=[False, True],
                                                      kind="stable", ignore_index=True)


COLOURS = {"ppb": "tab:blue", "dp": "tab:green", "adv": "tab:purple"}


def plot_pareto(table: pd.DataFrame, *, front: pd.DataFrame, baseline: pd.DataFrame, title: str,
                path: str | Path, metric: str = DEFAULT_PRIVACY_METRIC) -> None:
    """Test accuracy against the privacy objective: every trial (by defense), the paper-grid points
    (labelled), the front at its search-time values (hollow) and, where confirmed, at its held-out
    values (filled, with 95% whiskers; a diamond for every confirming attack, a red ring where an
    interval excludes the search value), and the undefended unit (star; filled: held-out seeds)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    column = privacy_column(metric)
    complete = table[table["state"] == TrialState.COMPLETE.name] if len(table) else table
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for defense, part in complete.groupby(complete["defense"].fillna(""), sort=False) if len(complete) else ():
        free = part[part["origin"] != "paper_grid"]
        ax.scatter(free[column], free["target_test_acc"], c=COLOURS.get(defense, "tab:blue"), alpha=0.35, s=18,
                   label=f"{defense or 'search'} trials")
    grid = complete[complete["origin"] == "paper_grid"] if len(complete) else complete
    if len(grid):
        ax.scatter(grid[column], grid["target_test_acc"], marker="s", facecolors="none", edgecolors="black", s=60,
                   label="paper grid")
        for _, row in grid.iterrows():
            name = PRIMARY_DEFENSE_PARAM.get(row.get("defense") or "", "")
            value = row.get(f"defense_{name}", math.nan)
            text = f"{row['defense'] + ' ' if complete['defense'].nunique() > 1 else ''}{value:g}" if name else ""
            ax.annotate(text, (row[column], row["target_test_acc"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    if len(front):
        line = front.sort_values(column)
        ax.step(line[column], line["target_test_acc"], where="post", c="tab:red", alpha=0.5)
        colours = [COLOURS.get(d, "tab:red") for d in front["defense"].fillna("")]
        ax.scatter(front[column], front["target_test_acc"], facecolors="none", edgecolors=colours, s=80,
                   linewidths=1.6, zorder=3, label="front, search seeds")
        done = front[front["confirmed"]] if "confirmed" in front else front.iloc[:0]
        for _, row in done.iterrows():
            colour = COLOURS.get(row["defense"] or "", "tab:red")
            x, y = row[f"confirmed_{column}"], row["confirmed_target_test_acc"]
            ax.plot([row[column], x], [row["target_test_acc"], y], ":", c="grey", lw=0.8)
            ax.errorbar([x], [y], fmt="o", c=colour, ms=7, capsize=3, zorder=4,
                        xerr=[[_half(x, row[f"confirmed_{column}_ci_low"])],
                              [_half(row[f"confirmed_{column}_ci_high"], x)]],
                        yerr=[[_half(y, row["confirmed_target_test_acc_ci_low"])],
                              [_half(row["confirmed_target_test_acc_ci_high"], y)]])
            x_all = row[f"confirmed_all_{column}"]
            ax.errorbar([x_all], [y], fmt="D", c=colour, ms=5, capsize=2, alpha=0.8, zorder=4,
                        xerr=[[_half(x_all, row[f"confirmed_all_{column}_ci_low"])],
                              [_half(row[f"confirmed_all_{column}_ci_high"], x_all)]])
            for excluded, at in ((row["target_test_acc_excluded"] or row[f"{column}_excluded"], x),
                                 (row["all_attacks_excluded"], x_all)):  # a ring on the value that moved
                if excluded:
                    ax.scatter([at], [y], s=220, facecolors="none", edgecolors="red", linewidths=1.5, zorder=5)
        if len(done):  # one legend entry each
            ax.errorbar([], [], fmt="o", c="black", capsize=3, label="confirmed, held-out seeds (95% CI)")
            ax.errorbar([], [], fmt="D", c="black", ms=5, capsize=2, label="confirmed, held-out attacks too")
            if done["flagged"].any():
                ax.scatter([], [], s=120, facecolors="none", edgecolors="red", label="interval excludes the search value")
    for _, row in baseline.iterrows():
        filled = row["phase"] == "confirm"
        ax.scatter([row[column]], [row["target_test_acc"]], marker="*", s=180, zorder=4, edgecolors="black",
                   facecolors="gold" if filled else "none",
                   label="no defense (basic), held-out seeds" if filled else "no defense (basic), search seeds")
    ax.set_xlabel(f"{column}: per seed the strongest attack's {PRIVACY_METRICS[metric]} (lower is more private)")
    ax.set_ylabel("pruned target test accuracy")
    ax.set_title(title, fontsize=8)
    if ax.get_legend_handles_labels()[0]:  # nothing drawn when every trial failed
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _half(high: float, low: float) -> float:
    """A whisker's length; 0 where the interval is unknown (one seed)."""
    value = high - low
    return float(value) if math.isfinite(value) else 0.0


def baseline_point(rows: pd.DataFrame, *, search: Search) -> pd.DataFrame:
    """The undefended unit's seed means of (test accuracy, privacy objective over the searched attacks),
    on the search seeds and, where it ran, on the held-out ones (`phase`)."""
    if rows.empty:
        return pd.DataFrame()
    by_unit = {u: part.to_dict("records") for u, part in rows.groupby("unit_id")}
    points = []
    held_out = search.held_out_seeds if search.confirm_top else ()
    for phase, seeds in (("search", search.search_seeds), ("confirm", held_out)):
        attacks = search.cell.attacks if phase == "search" else search.confirm_attack_list
        outcomes = [unit_outcome(by_unit.get(baseline_unit(search.cell, seed=s, attacks=attacks).unit_id(), []),
                                 metric=search.privacy_metric, attacks=search.cell.attacks) for s in seeds]
        outcomes = [o for o in outcomes if not isinstance(o, str)]
        if outcomes:
            points.append({"phase": phase, "target_test_acc": float(np.mean([o.target_test_acc for o in outcomes])),
                           search.column: float(np.mean([o.privacy for o in outcomes]))})
    return pd.DataFrame(points)


def write_outputs(search: Search, *, study: optuna.Study) -> pd.DataFrame:
    """`trials.parquet`, `pareto.parquet` (with the confirmation) and `pareto.png`; returns the front."""
    experiment = Path(search.settings.experiment)
    rows = results.load(experiment)
    table = trials_table(study, rows=rows, metric=search.privacy_metric)
    front = pareto_table(table, metric=search.privacy_metric)
    front = confirmation_table(front, plan=confirmation_plan(search, study), rows=rows, search=search)
    table.to_parquet(experiment / "trials.parquet", index=False)
    front.to_parquet(experiment / "pareto.parquet", index=False)
    cell = search.cell
    failed = int((table["state"] == TrialState.FAIL.name).sum()) if len(table) else 0
    flagged = int(front["flagged"].sum()) if "flagged" in front else 0
    confirmed = int(front["confirmed"].sum()) if "confirmed" in front else 0
    title = (f"{' + '.join(search.defenses)} (adaptive) on {cell.dataset}/{cell.arch} {cell.method}@{cell.sparsity:g}, "
             f"seeds {','.join(map(str, search.search_seeds))}\n{len(table)} trials, {failed} failed, {len(front)} on "
             f"the front, {confirmed} confirmed, {flagged} flagged")
    plot_pareto(table, front=front, baseline=baseline_point(rows, search=search), title=title,
                path=experiment / "pareto.png", metric=search.privacy_metric)
    return front
