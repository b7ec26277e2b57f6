"""Defense hyperparameter search: an Optuna multi-objective study whose trials are units on Ray.

For one cell (dataset, arch, pruning method, sparsity) and one defense (ppb, dp, adv), each trial
fine-tunes the pruned target *and* its shadows with the trial's hyperparameters (the adaptive
attack, REFERENCE section 5) and is scored on two objectives: maximise the pruned target's test
accuracy, minimise `best_attack_advantage`, the largest `advantage` (TPR - FPR at the attack's own
decision, fitted on shadows only: what an attacker reaches) among the requested attacks. Not the rows'
`max_advantage`, the oracle bound over the target's ROC, which no attacker can choose.

Why Optuna ask/tell in the driver with Ray tasks, not `OptunaSearch` inside Tune: OptunaSearch leaves
a trial whose objective is NaN or missing RUNNING for ever (REFERENCE section 8), and a diverged DP
unit is exactly that case. Here the driver alone owns the study: it asks, submits one Ray task per
trial, and tells every outcome itself, a failure as `TrialState.FAIL`. The study lives in
`<experiment>/study.db` (SQLite, written by this one process only, as SQLite requires), so the same
command resumes a killed search: finished trials are kept, numbering continues, and a trial the dead
driver left RUNNING is marked FAIL and its parameters run next (the new trial carries the user
attribute `reasked_from`); interrupted trials, listed in the study's user attribute `interrupted`, do
not count against the budget.

The paper's grid for the defense is enqueued before any free search, so the budget `trials` spends
its first trials on the grid and the Pareto set found can never be worse than the grid's.

Outputs beside the grid's: `<experiment>/rows/<unit_id>.parquet` per trial (read by
`miaray.results.load`, with the columns `search_trial`, `search_origin`, `search_study` added),
`pareto.parquet` (the front with hyperparameters and every attack's metrics), `trials.parquet`
(every finished trial) and `pareto.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
import pandas as pd
import ray
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from miaray import results
from miaray.cli import entry_point
from miaray.config import (ALL_ATTACKS, DEFENSE_PARAMS, MAX_SEED, ConfigError, UnitConfig, check_number,
                           parse_name_values)
from miaray.pareto import pareto_front
from miaray.sweep import (GridSpec, RunSettings, build_originals, build_parser, connect, int_at_least, parse_args,
                          settings_from_args, worker_context)

# Log-uniform ranges, each wider than the paper's grid on both sides so the search can leave it.
SEARCH_SPACES: dict[str, dict[str, tuple[float, float]]] = {
    "ppb": {"lambda": (0.25, 64.0)},
    "dp": {"noise_multiplier": (0.01, 100.0), "max_grad_norm": (0.1, 10.0)},
    "adv": {"alpha": (0.25, 64.0)},
}
# The paper's grid (REFERENCE section 5); parameters it does not vary keep their DEFENSE_PARAMS default.
PAPER_GRIDS: dict[str, tuple[dict[str, float], ...]] = {
    "ppb": tuple({"lambda": v} for v in (1.0, 2.0, 4.0, 8.0, 16.0)),
    "dp": tuple({"noise_multiplier": v} for v in (0.01, 0.1, 1.0, 10.0, 100.0)),
    "adv": tuple({"alpha": v} for v in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)),
}
SEARCHABLE = tuple(SEARCH_SPACES)
ADVANTAGE = "best_attack_advantage"  # the objective's column in trials.parquet and pareto.parquet
OBJECTIVES = {"target_test_acc": "max", ADVANTAGE: "min"}
STUDY_FILE = "study.db"
SEARCH_PRESETS: dict[str, GridSpec] = {
    # Embedded data and the (256, 128) fc net, whose original reaches about 0.6 test accuracy on the 100
    # classes (narrower ones barely learn them, and a front then trades nothing: tests/test_presets.py);
    # the trained attacks (NN, SAMIA) run a fifth of their reference schedules, as in the grid's quick
    # preset; `--attacks conf,mentr,top1_conf` leaves out the trained attacks, which dominate a trial's
    # time on a CPU (SAMIA: benchmarks/README.md, bench_unit.py).
    "quick": GridSpec(datasets=("synthetic_tabular",), archs=("fc",), methods=("l1_unstructured",),
                      sparsities=(0.7,), widths=(1.0,), attacks=("conf", "mentr", "nn", "samia"), num_shadows=2,
                      adaptive=(True,), attack_epochs=20),
    # The paper's defense setting (section 6): CIFAR10 ResNet18, L1 unstructured at sparsity 0.7.
    "paper": GridSpec(datasets=("cifar10",), archs=("resnet18",), methods=("l1_unstructured",),
                      sparsities=(0.7,), adaptive=(True,)),
}


# ---- the search space --------------------------------------------------------------------------
def search_space(defense: str, *, fixed: Mapping[str, float] = ()) -> dict[str, FloatDistribution]:
    """Optuna distributions of `defense`'s searched hyperparameters, minus those held `fixed`."""
    if defense not in SEARCH_SPACES:
        raise ConfigError(f"defense={defense!r} has no search space; choose one of: {', '.join(SEARCHABLE)}")
    return {name: FloatDistribution(low, high, log=True)
            for name, (low, high) in SEARCH_SPACES[defense].items() if name not in dict(fixed)}


def full_point(defense: str, point: Mapping[str, float], *, space: Mapping[str, FloatDistribution]
               ) -> dict[str, float]:
    """`point` over every parameter of `space`, the ones it leaves out at their DEFENSE_PARAMS default
    (left to the sampler, they would be drawn at random)."""
    return {name: float(point.get(name, DEFENSE_PARAMS[defense][name])) for name in space}


def paper_points(defense: str, *, space: Mapping[str, FloatDistribution]) -> list[dict[str, float]]:
    """The paper's grid as full points of `space`."""
    points = []
    for grid_point in PAPER_GRIDS[defense]:
        point = full_point(defense, grid_point, space=space)
        if point not in points:  # holding the varied parameter fixed collapses the grid to one point
            points.append(point)
    return points


def trial_unit(cell: UnitConfig, *, params: Mapping[str, float]) -> UnitConfig:
    """The cell with the trial's hyperparameters on top of its fixed ones, attacked adaptively."""
    merged = {**dict(cell.defense_params), **{name: float(value) for name, value in params.items()}}
    return dataclasses.replace(cell, defense_params=tuple(sorted(merged.items())), adaptive=True).validate()


def baseline_unit(cell: UnitConfig) -> UnitConfig:
    """The undefended cell (Basic), the reference point of the plot; the same unit as the grid's."""
    return dataclasses.replace(cell, defense="basic", defense_params=(), adaptive=False).validate()


# ---- objectives from a unit's rows ---------------------------------------------------------------
def objectives(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float, str] | str:
    """(test accuracy, best attack advantage, strongest attack) of a unit, or the reason it has none: the
    strongest attack is the one with the largest `advantage` at its own decision."""
    pruned = [r for r in rows if r.get("target_model") == "pruned"]
    failed = [r for r in pruned if r.get("status") != "ok"]
    if failed or not pruned:
        return str(failed[0].get("error") or "failed") if failed else "the unit returned no rows"
    strongest = max(pruned, key=lambda r: r["advantage"])
    values = (float(pruned[0]["target_test_acc"]), float(strongest["advantage"]))
    non_finite = [r["attack"] for r in pruned if not math.isfinite(r["advantage"])]
    if non_finite or not math.isfinite(values[0]):
        return f"non-finite objective (test accuracy {values[0]}, advantage of {non_finite})"
    return (*values, str(strongest["attack"]))


# ---- the study ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Search:
    """One search: a cell, its defense, the budget and how trials are run."""

    cell: UnitConfig                 # dataset, arch, method, sparsity, attacks, ...; defense set
    trials: int                      # total budget, paper-grid points included
    settings: RunSettings
    concurrency: int = 1             # trials running at once
    points: tuple[tuple[tuple[str, float], ...], ...] = ()  # user points, evaluated before the grid
    sampler_seed: int = 0
    retries: int = 0

    @property
    def space(self) -> dict[str, FloatDistribution]:
        return search_space(self.cell.defense, fixed=dict(self.cell.defense_params))

    @property
    def study_name(self) -> str:
        return f"{self.cell.defense}-{self.cell.unit_id()}"

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{Path(self.settings.experiment) / STUDY_FILE}"

    def describe(self) -> str:
        """The search in a few lines, for people (printed before it starts and by --dry-run)."""
        c, starts = self.cell, starting_points(self)
        space = ", ".join(f"{n} in [{d.low:g}, {d.high:g}] (log)" for n, d in self.space.items())
        lines = [f"search: {c.defense} (adaptive) on {c.dataset}/{c.arch} {c.method}@{c.sparsity:g}, seed "
                 f"{c.seed}, width {c.width:g}, {c.num_shadows} shadows, attacks {', '.join(c.attacks)}",
                 f"space: {space}; fixed: "
                 + _fmt({k: v for k, v in c.resolved_defense_params.items() if k not in self.space}),
                 f"starting points: {'; '.join(f'{_fmt(p)} ({origin})' for origin, p in starts)}",
                 f"budget: {self.trials} trials, {self.concurrency} at once, {self.settings.cpus_per_trial:g} "
                 f"CPU + {self.settings.gpus_per_trial:g} GPU each; study {self.storage_url}"]
        if self.trials < len(starts):
            lines.append(f"note: the budget is below the {len(starts)} starting points: no free search")
        return "\n".join(lines)

    def validate(self) -> "Search":
        self.cell.validate()
        if not self.space:
            raise ConfigError(f"every hyperparameter of {self.cell.defense} is held fixed by defense_params: "
                              f"nothing to search (searched: {', '.join(SEARCH_SPACES[self.cell.defense])})")
        if self.trials < 1 or self.concurrency < 1:
            raise ConfigError(f"trials={self.trials} and concurrency={self.concurrency} must be at least 1")
        if "://" in self.settings.experiment:
            raise ConfigError(f"the study is a SQLite file, so --storage must be a local folder, not "
                              f"{self.settings.experiment!r}")
        check_number("sampler_seed", self.sampler_seed, low=0, high=MAX_SEED, integer=True)
        for point in self.points:
            unknown = set(dict(point)) - set(self.space)
            if unknown:
                raise ConfigError(f"point {dict(point)}: {sorted(unknown)} not searched; searched: "
                                  f"{', '.join(self.space)}")
            for name, value in point:  # outside the space Optuna warns but runs it; <= 0 breaks its log scale
                space = self.space[name]
                check_number(f"point {name}", value, low=0.0, low_inclusive=False,
                             why=f"the search space is log-scaled, {space.low:g} to {space.high:g}")
        return self


def _sampler(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    # Multi-objective TPE rather than the default NSGA-II: NSGA-II's first generation (50) is random,
    # longer than a whole 16-trial budget. The constant liar keeps concurrent asks apart.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=startup)


def open_study(search: Search, *, log: Callable[[str], None] = print) -> optuna.Study:
    """Create the study, or load it and recover from trials a killed driver left running."""
    Path(search.settings.experiment).mkdir(parents=True, exist_ok=True)
    others = [n for n in optuna.get_all_study_names(storage=search.storage_url) if n != search.study_name]
    if others:  # one experiment, one search: its rows, front and plot would otherwise mix two searches
        old = json.loads(optuna.load_study(study_name=others[0], storage=search.storage_url).user_attrs.get("cell", "{}"))
        cell = json.loads(json.dumps(search.cell.to_dict()))  # as stored: tuples become lists
        changed = {k: (old.get(k), v) for k, v in cell.items() if old.get(k) != v}
        raise ConfigError(f"{search.settings.experiment} holds another search (changed: {changed}); give this "
                          "one its own --name, or repeat the original options to resume it")
    study = optuna.create_study(study_name=search.study_name, storage=search.storage_url,
                                directions=["maximize", "minimize"], load_if_exists=True,
                                sampler=_sampler(search.sampler_seed, len(starting_points(search))))
    study.set_user_attr("cell", json.dumps(search.cell.to_dict(), sort_keys=True))
    trials = study.get_trials(deepcopy=False)
    reasked = {t.user_attrs["reasked_from"] for t in trials if "reasked_from" in t.user_attrs}
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        # Left running by a driver that died: nothing will ever tell it. Record it as interrupted (so
        # it leaves the budget), re-ask its work, then fail it: each step is safe to repeat if the
        # driver dies again in between, and none loses the work or queues it twice.
        study.set_user_attr("interrupted", sorted({*study.user_attrs.get("interrupted", []), trial.number}))
        # A trial popped from the queue may die before its parameters are written: take the queued ones.
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        if params and trial.number not in reasked:  # no params: free search not yet sampled, nothing lost
            study.enqueue_trial(params, user_attrs={**trial.user_attrs, "reasked_from": trial.number})
        study.tell(trial.number, state=TrialState.FAIL)
        log(f"trial {trial.number} was left running by a killed search: marked FAIL"
            + (f", {_fmt(params)} asked again" if params else ""))
    return study


def starting_points(search: Search) -> list[tuple[str, dict[str, float]]]:
    """(origin, point) to evaluate before free search: the user's points, then the paper's grid."""
    space = search.space
    return ([("user", full_point(search.cell.defense, dict(p), space=space)) for p in search.points]
            + [("paper_grid", p) for p in paper_points(search.cell.defense, space=space)])


def enqueue_next_start(study: optuna.Study, *, starts: Sequence[tuple[str, dict[str, float]]]) -> None:
    """Enqueue the first starting point no trial has tried yet, unless a trial is already waiting.

    One at a time, not all up front: Optuna asks waiting trials oldest first, so the work of an
    interrupted trial (re-enqueued on resume) then runs next instead of after the rest of the grid.
    A point counts as tried in any state, so a grid point that failed is not run again.
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return
    tried = [t.params for t in trials]
    for origin, point in starts:
        if point not in tried:
            study.enqueue_trial(point, user_attrs={"origin": origin})
            return


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that used the budget: finished, less those a killed driver interrupted."""
    interrupted = set(study.user_attrs.get("interrupted", []))
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in interrupted]


def budget_used(study: optuna.Study) -> int:
    return len(counted_trials(study))


# ---- the Ray task ---------------------------------------------------------------------------------
@ray.remote
def _run_trial_unit(config: dict, settings: RunSettings) -> list[dict[str, Any]]:
    from miaray.unit import run_unit  # the science stack loads in the worker only

    unit = UnitConfig.from_dict(config)
    # Like a sweep cell's: per-sample signals and ROC curves beside the rows, for analysis/figures.py.
    return run_unit(unit, artifacts_dir=settings.experiment,
                    **worker_context(settings, label=f"{unit.defense} {dict(unit.defense_params)}"))


# What a unit itself can cause: an exception, running out of memory, crashing its worker process.
TRIAL_FAILURES = (ray.exceptions.RayTaskError, ray.exceptions.OutOfMemoryError,
                  ray.exceptions.WorkerCrashedError)


def _submit(unit: UnitConfig, search: Search) -> ray.ObjectRef:
    task = _run_trial_unit.options(num_cpus=search.settings.cpus_per_trial,
                                   num_gpus=search.settings.gpus_per_trial,
                                   max_retries=search.retries, retry_exceptions=search.retries > 0)
    return task.remote(unit.to_dict(), search.settings)


def _collect(ref: ray.ObjectRef, unit: UnitConfig, *, extra: Mapping[str, Any],
             settings: RunSettings) -> list[dict[str, Any]]:
    """The unit's rows (failed rows when its task raised or its worker died), written to the experiment."""
    try:
        rows = ray.get(ref)
    except TRIAL_FAILURES as error:  # the unit's own failure: recorded, the search goes on
        from miaray.unit import failed_rows

        rows = failed_rows(unit, str(error).strip().splitlines()[-1])
    except ray.exceptions.RayError as error:
        # A lost node or raylet is the cluster's failure, not the trial's: failing the trial would spend
        # the budget on instant failures. Stop, leaving the trials RUNNING as a killed driver would.
        raise RuntimeError(f"Ray lost the trial's task ({type(error).__name__}); rerun the same command "
                           "to resume: the interrupted trials run again") from error
    rows = [{**row, **extra} for row in rows]
    results.write_unit_rows(experiment=settings.experiment, unit_id=unit.unit_id(), rows=rows)
    return rows


def run_search(search: Search, *, log: Callable[[str], None] = print) -> optuna.Study:
    """Run (or resume) the search until `search.trials` trials have finished; returns the study."""
    search.validate()
    study = open_study(search, log=log)
    space, settings = search.space, search.settings
    start = time.perf_counter()
    build_originals(search.cell, settings=settings, retries=search.retries)
    baseline = baseline_unit(search.cell)
    baseline_ref = None
    if baseline.unit_id() not in results.unit_files(settings.experiment):
        baseline_ref = _submit(baseline, search)
    starts = starting_points(search)
    pending: dict[ray.ObjectRef, tuple[optuna.Trial, UnitConfig]] = {}
    while True:
        while len(pending) < search.concurrency and budget_used(study) + len(pending) < search.trials:
            enqueue_next_start(study, starts=starts)
            trial = study.ask(space)
            unit = trial_unit(search.cell, params=trial.params)
            trial.set_user_attr("origin", trial.user_attrs.get("origin", "search"))
            trial.set_user_attr("unit_id", unit.unit_id())
            pending[_submit(unit, search)] = (trial, unit)
            log(f"trial {trial.number} ({trial.user_attrs['origin']}) started: {_fmt(trial.params)}")
        if not pending:
            break
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        trial, unit = pending.pop(ref)
        rows = _collect(ref, unit, settings=settings, extra={
            "search_study": search.study_name, "search_trial": trial.number,
            "search_origin": trial.user_attrs["origin"]})
        outcome = objectives(rows)
        epsilon = float(rows[0].get("epsilon", math.nan)) if rows else math.nan
        if math.isfinite(epsilon):  # DP only
            trial.set_user_attr("epsilon", epsilon)
        if isinstance(outcome, str):
            trial.set_user_attr("error", outcome)
            study.tell(trial, state=TrialState.FAIL)
            verdict = f"FAILED: {outcome}"
        else:
            acc, advantage, attack = outcome
            trial.set_user_attr("strongest_attack", attack)
            study.tell(trial, [acc, advantage])
            verdict = f"test acc {acc:.4f}, best attack advantage {advantage:.4f} ({attack})"
        log(f"[{time.perf_counter() - start:7.1f}s] trial {trial.number} {_fmt(trial.params)}: {verdict}; "
            f"{budget_used(study)}/{search.trials} done, {len(pending)} running")
    if baseline_ref is not None:
        _collect(baseline_ref, baseline, settings=settings,
                 extra={"search_study": search.study_name, "search_origin": "baseline"})
    return study


def _fmt(params: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in params.items())


# ---- results ------------------------------------------------------------------------------------
def trials_table(study: optuna.Study, *, rows: pd.DataFrame) -> pd.DataFrame:
    """One line per counted trial: hyperparameters, state, objectives, epsilon, each attack's metrics
    (`<attack>_<metric>` columns, from the unit rows) and `on_front` (Optuna's `best_trials`)."""
    front = {t.number for t in study.best_trials}
    lines = []
    for trial in counted_trials(study):
        done = trial.state == TrialState.COMPLETE
        lines.append({"trial": trial.number, "state": trial.state.name, "origin": trial.user_attrs.get("origin"),
                      **{f"defense_{name}": value for name, value in trial.params.items()},
                      "target_test_acc": trial.values[0] if done else math.nan,
                      ADVANTAGE: trial.values[1] if done else math.nan,
                      "strongest_attack": trial.user_attrs.get("strongest_attack"),
                      "epsilon": trial.user_attrs.get("epsilon", math.nan),
                      "error": trial.user_attrs.get("error", ""), "unit_id": trial.user_attrs.get("unit_id"),
                      "on_front": trial.number in front})
    table = pd.DataFrame(lines)
    ok = rows[(rows["status"] == "ok") & (rows["target_model"] == "pruned")] if len(rows) else rows
    if table.empty or ok.empty:  # no trial succeeded: no attack metrics to add
        return table
    from miaray.unit import METRICS  # the metric names' one home (a lazy import, as in miaray.sweep)

    wide = ok.set_index(["unit_id", "attack"])[list(METRICS)].groupby(level=[0, 1]).first().unstack("attack")
    order = sorted(wide.columns, key=lambda c: (ALL_ATTACKS.index(c[1]), METRICS.index(c[0])))
    wide = wide[order]
    wide.columns = [f"{attack}_{metric}" for metric, attack in order]
    return table.merge(wide, left_on="unit_id", right_index=True, how="left")


def pareto_table(table: pd.DataFrame) -> pd.DataFrame:
    """The front of a trials table, after checking Optuna's `best_trials` against `pareto_front`."""
    complete = table[table["state"] == TrialState.COMPLETE.name] if len(table) else table
    if complete.empty:
        return complete
    ours = set(pareto_front(complete, objectives=OBJECTIVES)["trial"])
    optunas = set(complete.loc[complete["on_front"], "trial"])
    if ours != optunas:  # both are exact, so a difference is a bug in one of them: never hide it
        raise RuntimeError(f"Pareto fronts disagree: Optuna {sorted(optunas)}, miaray.pareto {sorted(ours)}")
    # Best accuracy first; equal accuracies by trial number, so the printout never depends on finishing order.
    return complete[complete["on_front"]].sort_values(["target_test_acc", "trial"], ascending=[False, True],
                                                      kind="stable", ignore_index=True)


def plot_pareto(table: pd.DataFrame, *, baseline: pd.DataFrame, title: str, path: str | Path) -> None:
    """Test accuracy against the best attack's advantage: every trial, the front as a line, grid points
    annotated."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    complete = table[table["state"] == TrialState.COMPLETE.name]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    free = complete[complete["origin"] != "paper_grid"]
    grid = complete[complete["origin"] == "paper_grid"]
    front = complete[complete["on_front"]].sort_values(ADVANTAGE)
    ax.scatter(free[ADVANTAGE], free["target_test_acc"], c="tab:blue", alpha=0.6, label="search trials")
    ax.scatter(grid[ADVANTAGE], grid["target_test_acc"], marker="s", facecolors="none",
               edgecolors="black", s=60, label="paper grid")
    varied = [c for c in grid.columns if c.startswith("defense_") and grid[c].nunique() > 1]
    for _, row in grid.iterrows():
        label = ", ".join(f"{row[c]:g}" for c in varied[:1])
        ax.annotate(label, (row[ADVANTAGE], row["target_test_acc"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.step(front[ADVANTAGE], front["target_test_acc"], where="post", c="tab:red", alpha=0.7)
    ax.scatter(front[ADVANTAGE], front["target_test_acc"], c="tab:red", s=40, zorder=3,
               label="Pareto front")
    if not baseline.empty:
        ax.scatter(baseline[ADVANTAGE], baseline["target_test_acc"], marker="*", c="gold",
                   edgecolors="black", s=160, zorder=4, label="no defense (basic)")
    ax.set_xlabel("best attack's advantage TPR - FPR at its own decision (lower is more private)")
    ax.set_ylabel("pruned target test accuracy")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def baseline_point(rows: pd.DataFrame, *, cell: UnitConfig) -> pd.DataFrame:
    """The undefended unit's (test accuracy, best attack advantage) over the search's attacks, if it ran."""
    if rows.empty:
        return pd.DataFrame()
    point = objectives(rows[rows["unit_id"] == baseline_unit(cell).unit_id()].to_dict("records"))
    if isinstance(point, str):  # it did not run, or failed
        return pd.DataFrame()
    return pd.DataFrame([{"target_test_acc": point[0], ADVANTAGE: point[1]}])


def write_outputs(search: Search, *, study: optuna.Study) -> pd.DataFrame:
    """`trials.parquet`, `pareto.parquet` and `pareto.png` in the experiment; returns the front."""
    experiment = Path(search.settings.experiment)
    rows = results.load(experiment)
    table = trials_table(study, rows=rows)
    front = pareto_table(table)
    table.to_parquet(experiment / "trials.parquet", index=False)
    front.to_parquet(experiment / "pareto.parquet", index=False)
    cell = search.cell
    failed = int((table["state"] == TrialState.FAIL.name).sum()) if len(table) else 0
    title = (f"{cell.defense} (adaptive) on {cell.dataset}/{cell.arch} {cell.method}@{cell.sparsity:g}: "
             f"{len(table)} trials, {failed} failed, {len(front)} on the front")
    plot_pareto(table, baseline=baseline_point(rows, cell=cell), title=title, path=experiment / "pareto.png")
    return front


# ---- command line -------------------------------------------------------------------------------
def _points(items: Sequence[str]) -> tuple[tuple[tuple[str, float], ...], ...]:
    return tuple(tuple(sorted(dict(parse_name_values(item.split(","), option="--point")).items()))
                 for item in items)


def build_search_parser() -> argparse.ArgumentParser:
    """The grid's options (one cell) and run options, plus the search's own."""
    p = build_parser(prog="defense_search.py", presets=SEARCH_PRESETS, description=(
        "Search one defense's hyperparameters for one cell with Optuna (maximise test accuracy, "
        "minimise the strongest attack's advantage), trials on Ray. The grid filters must leave one "
        "cell. The attack is always adaptive, and the same command resumes the study it finds in "
        "--storage/--name (--adaptive and --resume are implied)."))
    s = p.add_argument_group("search")
    s.add_argument("--trials", type=int_at_least(1), default=16, help="total budget in trials, >= 1, the paper-grid points included")
    s.add_argument("--concurrency", type=int_at_least(1), help="trials at once, >= 1 (default: as many as the cluster fits at the per-trial resources)")
    s.add_argument("--point", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                   help="a point to evaluate before the paper grid, repeatable, e.g. noise_multiplier=3,max_grad_norm=0.5 "
                        "(unnamed parameters at their defaults; may lie outside the search space)")
    s.add_argument("--sampler-seed", type=int, default=0, help="integer seed of the TPE sampler")
    return p


def _default_concurrency(settings: RunSettings) -> int:
    if not ray.is_initialized():  # a dry run: no cluster to measure
        return 1
    resources = ray.cluster_resources()
    fits = resources.get("CPU", 1) / max(settings.cpus_per_trial, 1e-9)
    if settings.gpus_per_trial > 0:
        fits = min(fits, resources.get("GPU", 0) / settings.gpus_per_trial)
    return max(1, int(fits))


@entry_point(prog="defense_search.py", resume="finished trials are kept; rerun the same command to resume")
def defense_search_main(argv: list[str] | None = None) -> int:
    """`sweeps/defense_search.py`: one search, then the Pareto table, files and plot."""
    parser = build_search_parser()
    args, spec = parse_args(argv, parser, SEARCH_PRESETS)
    cells = dataclasses.replace(spec, adaptive=(True,)).cells()
    if len(cells) != 1:
        parser.error(f"the grid filters leave {len(cells)} cells; a search takes exactly one (pass one "
                     "value each to --datasets, --archs, --methods, --sparsities, --seeds, --splits, --widths, and one "
                     "defense to --defense with at most one value per --defense-param)")
    cell = cells[0]
    try:
        points = _points(args.point)
    except ConfigError as error:
        parser.error(str(error))
    name = f"defense_search-{cell.dataset}-{cell.arch}-{cell.method}-{cell.sparsity:g}-{cell.defense}"
    if not args.dry_run:
        connect(address=args.address)  # first: the default --gpus-per-trial depends on the cluster
    try:
        settings = settings_from_args(args, name=name)  # checked against the cluster once connected
        search = Search(cell=cell, trials=args.trials, settings=settings, points=points,
                        concurrency=args.concurrency or _default_concurrency(settings),
                        sampler_seed=args.sampler_seed, retries=args.retries).validate()
    except ConfigError as error:
        parser.error(str(error))
    print(search.describe(), flush=True)
    if args.dry_run:
        return 0
    study = run_search(search, log=lambda m: print(m, flush=True))
    front = write_outputs(search, study=study)
    shown = ["trial", "origin", *[c for c in front.columns if c.startswith("defense_")], "target_test_acc",
             ADVANTAGE, "strongest_attack", "epsilon"]
    print(f"\nPareto front ({len(front)} of {budget_used(study)} trials) in {settings.experiment}/pareto.parquet:")
    print(front[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(front) else "(empty)")
    return 0 if len(front) else 1
