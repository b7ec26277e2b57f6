"""The confirmation of the front: its points (at most `--confirm-top`, spread along it) run again on
held-out seeds with the searched and the held-out attacks, and their confirmed values, each with a 95%
Student-t interval over those seeds, flagged where an interval excludes the search-time value."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
import ray
from optuna.trial import FrozenTrial, TrialState

from miaray.config import ConfigError, UnitConfig
from miaray.pareto import pareto_front
from miaray.search.outcome import collapsed
from miaray.search.space import ADVANTAGE, DEFAULT_PRIVACY_METRIC, PRIVACY_METRICS, TPR_METRIC, _fmt, baseline_unit
from miaray.search.spec import Search, trial_setting
from miaray.search.study import counted_trials
from miaray.search.tasks import _collect, _extra, _start
from miaray.stats import t_interval


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The counted complete trials on the front (`miaray.pareto.pareto_front`), best accuracy first."""
    complete = [t for t in counted_trials(study) if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    frame = pd.DataFrame({"trial": [t.number for t in complete], "acc": [t.values[0] for t in complete],
                          "privacy": [t.values[1] for t in complete]})
    front = pareto_front(frame, objectives={"acc": "max", "privacy": "min"})
    front = front.sort_values(["acc", "trial"], ascending=[False, True], kind="stable")
    by_number = {t.number: t for t in complete}
    return [by_number[n] for n in front["trial"]]


def spread(n: int, k: int) -> list[int]:
    """At most `k` of the positions 0..n-1, evenly spread with both ends kept (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({int(round(i * (n - 1) / (k - 1))) for i in range(k)})


def confirmation_plan(search: Search, study: optuna.Study) -> dict[int | None, dict[int, UnitConfig]]:
    """trial number -> held-out seed -> confirmation unit, for the front points confirmed (None: the
    undefended unit on the held-out seeds, the plot's reference); {} without a confirmation."""
    if not search.confirm_top:
        return {}
    front = front_trials(study)
    plan: dict[int | None, dict[int, UnitConfig]] = {}
    for position in spread(len(front), search.confirm_top):
        trial = front[position]
        defense, params = trial_setting(trial, search)
        plan[trial.number] = {s: search.unit(defense, params, seed=s, attacks=search.confirm_attack_list)
                              for s in search.held_out_seeds}
    if plan:
        plan[None] = {s: baseline_unit(search.cell, seed=s, attacks=search.confirm_attack_list)
                      for s in search.held_out_seeds}
    return plan


def run_confirmation(search: Search, study: optuna.Study, *, log: Callable[[str], None] = print
                     ) -> dict[int | None, dict[int, UnitConfig]]:
    """Run the confirmation units the experiment lacks (rows on disk are kept); returns the plan."""
    plan = confirmation_plan(search, study)
    if not plan:
        return plan
    overlap = {u.seed for units in plan.values() for u in units.values()} & set(search.search_seeds)
    if overlap:  # validate() refuses this; a confirmation on search seeds would confirm nothing
        raise ConfigError(f"confirmation seeds {sorted(overlap)} are search seeds")
    points = [n for n in plan if n is not None]
    front = len(front_trials(study))
    pending: dict[ray.ObjectRef, tuple[UnitConfig, dict[str, Any]]] = {}
    stored = 0
    for number, units in plan.items():
        extra = _extra(search, trial=number, origin="confirm" if number is not None else "baseline", phase="confirm")
        for unit in units.values():
            started = _start(unit, search, extra=extra)
            if isinstance(started, ray.ObjectRef):
                pending[started] = (unit, extra)
            else:
                stored += 1
    total = sum(len(units) for units in plan.values())
    log(f"confirmation: {len(points)} of {front} front points (trials {', '.join(map(str, points))}) and the "
        f"undefended unit x held-out seeds {', '.join(map(str, search.held_out_seeds))}, attacks "
        f"{', '.join(search.confirm_attack_list)}: {total} units, {stored} from stored rows")
    start = time.perf_counter()
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        unit, extra = pending.pop(ref)
        rows = _collect(ref, unit, settings=search.settings, extra=extra)
        status = "ok" if all(r.get("status") == "ok" for r in rows) else "FAILED"
        log(f"[{time.perf_counter() - start:7.1f}s] confirmation {unit.defense} {_fmt(dict(unit.defense_params))} "
            f"seed {unit.seed}: {status}; {total - stored - len(pending)}/{total - stored} done")
    return plan


def seed_measures(rows: Sequence[Mapping[str, Any]], *, search_attacks: Sequence[str],
                  metric: str = DEFAULT_PRIVACY_METRIC) -> dict[str, Any] | None:
    """What one held-out seed of a confirmed point measured (None when its unit failed): test accuracy,
    the privacy objective over the searched attacks (`privacy`) and over every confirming attack, the
    held-out ones included (`privacy_all`, reached by `strongest`), each attack's TPR at 1% FPR (`tpr`),
    and the collapsed attacks, left out of all of them."""
    column = PRIVACY_METRICS[metric]
    pruned = [r for r in rows if r.get("target_model") == "pruned"]
    if not pruned or any(r.get("status") != "ok" for r in pruned):
        return None
    valid = [r for r in pruned if not collapsed(r) and math.isfinite(float(r[column]))]
    searched = [r for r in valid if r["attack"] in search_attacks]
    strongest = max(valid, key=lambda r: float(r[column])) if valid else None
    return {"target_test_acc": float(pruned[0]["target_test_acc"]),
            "privacy": max((float(r[column]) for r in searched), default=math.nan),
            "privacy_all": float(strongest[column]) if strongest else math.nan,
            "strongest": str(strongest["attack"]) if strongest else "",
            "tpr": {str(r["attack"]): float(r[TPR_METRIC]) for r in valid if not collapsed(r)},
            "collapsed": sorted(str(r["attack"]) for r in pruned if collapsed(r))}


def _excludes(value: float, interval: tuple[float, float, float, int]) -> bool:
    _, low, high, n = interval
    return bool(n >= 2 and math.isfinite(value) and math.isfinite(low) and math.isfinite(high)
                and not low <= value <= high)


def confirm_point(search_acc: float, search_privacy: float, seeds: Sequence[Mapping[str, Any]], *,
                  column: str = ADVANTAGE) -> dict[str, Any]:
    """The confirmed values of one front point from its held-out seeds (`seed_measures`, failed seeds
    left out), each the mean with a 95% Student-t interval over the seeds, and the flags: where the
    confirmed interval of test accuracy, of the privacy objective over the searched attacks (the
    winner's curse) or over every confirming attack (a held-out attack leaks otherwise) excludes the
    search-time value."""
    seeds = [s for s in seeds if s is not None]
    acc = t_interval([s["target_test_acc"] for s in seeds])
    privacy = t_interval([s["privacy"] for s in seeds])
    every = t_interval([s["privacy_all"] for s in seeds])
    attacks = list(dict.fromkeys(a for s in seeds for a in s["tpr"]))
    tpr_means = {a: float(np.nanmean([s["tpr"].get(a, math.nan) for s in seeds])) if any(
        math.isfinite(s["tpr"].get(a, math.nan)) for s in seeds) else math.nan for a in attacks}
    finite = {a: v for a, v in tpr_means.items() if math.isfinite(v)}
    tpr_attack = max(finite, key=finite.get) if finite else ""
    tpr = t_interval([s["tpr"].get(tpr_attack, math.nan) for s in seeds]) if tpr_attack else (math.nan,) * 3 + (0,)
    strongest = Counter(s["strongest"] for s in seeds if s["strongest"]).most_common(1)
    flags = {"target_test_acc_excluded": _excludes(search_acc, acc),
             f"{column}_excluded": _excludes(search_privacy, privacy),
             "all_attacks_excluded": _excludes(search_privacy, every)}
    reasons = {"target_test_acc_excluded": "test accuracy", f"{column}_excluded": "privacy (searched attacks)",
               "all_attacks_excluded": "privacy (held-out attacks included)"}

    def interval(name: str, values: tuple[float, float, float, int]) -> dict[str, float]:
        return {name: values[0], f"{name}_ci_low": values[1], f"{name}_ci_high": values[2]}

    return {"confirmed": bool(seeds), "confirmed_n_seeds": len(seeds),
            **interval("confirmed_target_test_acc", acc), **interval(f"confirmed_{column}", privacy),
            **interval(f"confirmed_all_{column}", every),
            "confirmed_strongest_attack": strongest[0][0] if strongest else "",
            "confirmed_best_tpr_attack": tpr_attack, **interval(f"confirmed_best_{TPR_METRIC}", tpr),
            "confirmed_collapsed": ",".join(sorted({a for s in seeds for a in s["collapsed"]})),
            **flags, "flagged": any(flags.values()),
            "flag_reason": ", ".join(reasons[k] for k, v in flags.items() if v)}


def confirmation_table(front: pd.DataFrame, *, plan: Mapping[int | None, Mapping[int, UnitConfig]],
                       rows: pd.DataFrame, search: Search) -> pd.DataFrame:
    """`front` (search-time values) with the confirmed values and flags of each point (`confirm_point`);
    points left unconfirmed (beyond --confirm-top, or none asked) have `confirmed` False and NaN values."""
    by_unit = {u: part.to_dict("records") for u, part in rows.groupby("unit_id")} if len(rows) else {}
    lines = []
    for _, point in front.iterrows():
        units = plan.get(int(point["trial"]), {})
        seeds = [seed_measures(by_unit.get(u.unit_id(), []), search_attacks=search.cell.attacks,
                               metric=search.privacy_metric) for u in units.values()]
        confirmed = confirm_point(point["target_test_acc"], point[search.column], seeds, column=search.column)
        lines.append({**confirmed, "confirm_seeds": ",".join(str(u.seed) for u in units.values())})
    extra = pd.DataFrame(lines, index=front.index)
    return pd.concat([front, extra], axis=1) if len(front) else front
