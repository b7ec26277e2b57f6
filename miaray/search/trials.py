"""The search loop: the driver alone asks the study for trials, runs each on every search seed as Ray
tasks and tells the study every outcome itself, the seed means or a failure (why not `OptunaSearch`:
the package's docstring)."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import optuna
import ray
from optuna.trial import TrialState

from miaray.config import UnitConfig
from miaray.search.outcome import CollapsedAttackWarning, UnitOutcome, collapsed, unit_outcome
from miaray.search.space import _label, baseline_unit
from miaray.search.spec import Search, enqueue_next_start, starting_points, suggest
from miaray.search.study import budget_used, open_study
from miaray.search.tasks import _collect, _extra, _start, build_originals


@dataclass
class _Running:
    """A trial in flight: its units (one per search seed) and the rows back so far."""

    trial: optuna.Trial
    defense: str
    params: dict[str, float]
    units: dict[int, UnitConfig]
    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def run_search(search: Search, *, log: Callable[[str], None] = print) -> optuna.Study:
    """Run (or resume) the search until `search.trials` trials have finished; returns the study."""
    search.validate()
    study = open_study(search, log=log)
    settings, seeds = search.settings, search.search_seeds
    start = time.perf_counter()
    confirm_cells = ([baseline_unit(search.cell, seed=s, attacks=search.confirm_attack_list)
                      for s in search.held_out_seeds] if search.confirm_top else [])
    build_originals([baseline_unit(search.cell, seed=s) for s in seeds] + confirm_cells, settings=settings,
                    retries=search.retries, log=log)
    baselines: dict[ray.ObjectRef, UnitConfig] = {}
    for seed in seeds:
        unit = baseline_unit(search.cell, seed=seed)
        started = _start(unit, search, extra=_extra(search, trial=None, origin="baseline", phase="search"))
        if isinstance(started, ray.ObjectRef):
            baselines[started] = unit
    starts = starting_points(search)
    running: dict[int, _Running] = {}
    refs: dict[ray.ObjectRef, tuple[int, int]] = {}
    while True:
        while len(running) < search.concurrency and budget_used(study) + len(running) < search.trials:
            enqueue_next_start(study, starts=starts)
            trial = study.ask()
            defense, params = suggest(trial, search)
            origin = trial.user_attrs.get("origin", "search")
            job = _Running(trial, defense, params, {s: search.unit(defense, params, seed=s) for s in seeds})
            trial.set_user_attr("origin", origin)
            trial.set_user_attr("defense", defense)
            trial.set_user_attr("seeds", list(seeds))
            trial.set_user_attr("unit_ids", [u.unit_id() for u in job.units.values()])
            trial.set_user_attr("unit_id", job.units[seeds[0]].unit_id())
            trial.set_user_attr("defense_params", job.units[seeds[0]].resolved_defense_params)
            running[trial.number] = job
            for seed, unit in job.units.items():
                started = _start(unit, search, extra=_extra(search, trial=trial.number, origin=origin, phase="search"))
                if isinstance(started, ray.ObjectRef):
                    refs[started] = (trial.number, seed)
                else:
                    job.rows[seed] = started
            log(f"trial {trial.number} ({origin}) started: {_label(trial.params)}"
                + (f" on seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else "")
                + (f" ({len(job.rows)} from stored rows)" if job.rows else ""))
            if len(job.rows) == len(seeds):
                _finish(study, running.pop(trial.number), search, log=log, start=start, running=len(running))
        if not refs:
            break
        (ref,), _ = ray.wait(list(refs), num_returns=1)
        number, seed = refs.pop(ref)
        job = running[number]
        job.rows[seed] = _collect(ref, job.units[seed], settings=settings,
                                  extra=_extra(search, trial=number, origin=job.trial.user_attrs["origin"],
                                               phase="search"))
        if len(job.rows) == len(seeds):
            _finish(study, running.pop(number), search, log=log, start=start, running=len(running))
    for ref, unit in baselines.items():
        _collect(ref, unit, settings=settings, extra=_extra(search, trial=None, origin="baseline", phase="search"))
    return study


def _finish(study: optuna.Study, job: _Running, search: Search, *, log: Callable[[str], None], start: float,
            running: int) -> None:
    """Tell the study a trial's outcome: the seed means, or FAIL with the reason."""
    trial, seeds = job.trial, search.search_seeds
    outcomes = {s: unit_outcome(job.rows[s], metric=search.privacy_metric) for s in seeds}
    gone = [(s, str(r["attack"]), str(r.get("attack_note") or "collapsed")) for s in seeds for r in job.rows[s]
            if r.get("target_model") == "pruned" and r.get("status") == "ok" and collapsed(r)]
    for seed, attack, why in gone:
        warnings.warn(f"trial {trial.number}, seed {seed}: attack {attack} collapsed ({why}); left out of the best "
                      "attack and of the objective", CollapsedAttackWarning, stacklevel=2)
    if gone:
        trial.set_user_attr("collapsed", [f"{a}@seed{s}: {why}" for s, a, why in gone])
    epsilons = [float(rows[0].get("epsilon", math.nan)) for rows in job.rows.values() if rows]
    epsilons = [e for e in epsilons if math.isfinite(e)]
    if epsilons:  # DP only
        trial.set_user_attr("epsilon", float(np.mean(epsilons)))
    errors = {s: o for s, o in outcomes.items() if isinstance(o, str)}
    if errors:
        error = (next(iter(errors.values())) if len(seeds) == 1
                 else "; ".join(f"seed {s}: {why}" for s, why in errors.items()))
        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.FAIL)
        verdict = f"FAILED: {error}"
    else:
        done: dict[int, UnitOutcome] = {s: o for s, o in outcomes.items() if not isinstance(o, str)}
        acc = float(np.mean([o.target_test_acc for o in done.values()]))
        privacy = float(np.mean([o.privacy for o in done.values()]))
        trial.set_user_attr("seed_values", {str(s): {"target_test_acc": o.target_test_acc, search.column: o.privacy,
                                                     "strongest_attack": o.attack} for s, o in done.items()})
        trial.set_user_attr("strongest_attack", ",".join(dict.fromkeys(o.attack for o in done.values())))
        study.tell(trial, [acc, privacy])
        verdict = (f"test acc {acc:.4f}, {search.column} {privacy:.4f} "
                   f"({trial.user_attrs['strongest_attack']}{', means over seeds' if len(seeds) > 1 else ''})")
    log(f"[{time.perf_counter() - start:7.1f}s] trial {trial.number} {_label(trial.params)}: {verdict}; "
        f"{budget_used(study)}/{search.trials} done, {running} running")
