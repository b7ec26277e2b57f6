"""Defense hyperparameter search: an Optuna multi-objective study whose trials are units on Ray, and a
confirmation of its front on held-out seeds and attacks.

For one cell (dataset, arch, pruning method, sparsity) and one or several defenses (ppb, dp, adv), each
trial fine-tunes the pruned target *and* its shadows with the trial's hyperparameters (the adaptive
attack, docs/science.md, Defense definitions), on every search seed (`--seeds`), and is scored on two
objectives, the means over those seeds: maximise the pruned target's test accuracy, minimise the privacy
objective, per seed the strongest of the requested attacks by `--privacy-metric` (default `advantage`,
TPR - FPR at the attack's own decision, fitted on shadows only: what an attacker reaches; or `auc`, or
`tpr_at_fpr_0.01`). Not the rows' `max_advantage`, the oracle bound no attacker can choose. Each
seed's values stay in `trials.parquet`. A collapsed attack (constant or non-finite scores on the
target, marked by `miaray.unit.attack_rows`) is no result: it is left out of the objective, with a
warning naming it.

Several defenses (`--defense ppb,dp,adv`) are one study: the defense is a categorical parameter and
each defense's hyperparameters are conditional on it (Optuna's define-by-run spaces, sampled by a
grouped multivariate TPE), the paper's grid of every defense enqueued first, in turn.

A front picked from search-seed values keeps their lucky draws (the winner's curse), and a setting
tuned until the searched attacks fail may still leak to one it never saw. So after the budget every
front point (at most `--confirm-top`, spread along the front) runs again on held-out seeds
(`--confirm-seeds`, disjoint from the search seeds), attacked by the searched attacks and held-out ones
(`--confirm-attacks`: by default the offline LiRA and RMIA and the paper's attacks not searched
against). `pareto.parquet` holds, per point, the search-time objectives and the confirmed ones with 95%
Student-t intervals over the held-out seeds (`miaray.stats.t_interval`), the TPR at 1% FPR of the
strongest confirming attack, and `flagged` where a confirmed interval excludes the search-time value.

Why Optuna ask/tell in the driver with Ray tasks, not `OptunaSearch` inside Tune: OptunaSearch leaves
a trial whose objective is NaN or missing RUNNING for ever (docs/science.md, Ray and Optuna), and a diverged DP
unit is exactly that case. Here the driver alone owns the study: it asks, submits one Ray task per
trial and seed, and tells every outcome itself, a failure as `TrialState.FAIL`. The study lives in
`<experiment>/study.db` (SQLite, written by this one process only, as SQLite requires), so the same
command resumes a killed search: finished trials are kept, numbering continues, and a trial the dead
driver left RUNNING is marked FAIL and its parameters run next (the new trial carries the user
attribute `reasked_from`); interrupted trials, listed in the study's user attribute `interrupted`, do
not count against the budget. A unit whose ok rows are already in the experiment (a seed that finished
before the kill, a confirmation run before) is not run again: the rows on disk are the truth.

Outputs beside the grid's: `<experiment>/rows/<unit_id>.parquet` per unit (read by
`miaray.results.load`, with the columns `search_trial`, `search_origin`, `search_phase` and
`search_study` added), `trials.parquet` (every counted trial, per-seed values included),
`pareto.parquet` (the front, search-time and confirmed) and `pareto.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
import ray
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from miaray import results
from miaray.cli import entry_point
from miaray.config import (ALL_ATTACKS, ATTACKS, DEFENSE_PARAMS, MAX_SEED, PRIMARY_DEFENSE_PARAM, SWEEP_OPTIONS,
                           TRAINED_ATTACKS, ConfigError, UnitConfig, check_number, defense_label, parse_name_values,
                           with_options)
from miaray.pareto import pareto_front
from miaray.stats import t_interval
from miaray.store import Store
from miaray.sweep import (GridSpec, Plan, RunSettings, build_model, build_parser, connect, int_at_least,
                          missing_builds, parse_args, settings_from_args, worker_context)
from miaray.sweep.cli import check_resume

# Log-uniform ranges, each wider than the paper's grid on both sides so the search can leave it.
SEARCH_SPACES: dict[str, dict[str, tuple[float, float]]] = {
    "ppb": {"lambda": (0.25, 64.0)},
    "dp": {"noise_multiplier": (0.01, 100.0), "max_grad_norm": (0.1, 10.0)},
    "adv": {"alpha": (0.25, 64.0)},
}
# The paper's grid (docs/science.md, Defense definitions); parameters it does not vary keep their DEFENSE_PARAMS default.
PAPER_GRIDS: dict[str, tuple[dict[str, float], ...]] = {
    "ppb": tuple({"lambda": v} for v in (1.0, 2.0, 4.0, 8.0, 16.0)),
    "dp": tuple({"noise_multiplier": v} for v in (0.01, 0.1, 1.0, 10.0, 100.0)),
    "adv": tuple({"alpha": v} for v in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)),
}
SEARCHABLE = tuple(SEARCH_SPACES)
DEFENSE_PARAM = "defense"  # the categorical parameter of a study over several defenses
# The privacy objective: --privacy-metric -> the rows' metric it reads, per seed the strongest attack's.
PRIVACY_METRICS: dict[str, str] = {"advantage": "advantage", "auc": "attack_auc",
                                   "tpr_at_fpr_0.01": "tpr_at_fpr_0.01", "tpr_at_fpr_0.001": "tpr_at_fpr_0.001"}
DEFAULT_PRIVACY_METRIC = "advantage"
TPR_METRIC = "tpr_at_fpr_0.01"  # what the confirmation reports of its strongest attack at low FPR


def privacy_column(metric: str = DEFAULT_PRIVACY_METRIC) -> str:
    """The privacy objective's column in trials.parquet and pareto.parquet, e.g. best_attack_advantage."""
    return f"best_attack_{metric}"


ADVANTAGE = privacy_column("advantage")  # the default objective's column
OBJECTIVES = {"target_test_acc": "max", ADVANTAGE: "min"}
STUDY_FILE = "study.db"
DEFAULT_CONFIRM_TOP = 3     # front points confirmed at most
DEFAULT_CONFIRM_SEEDS = 3   # held-out seeds, after the largest search seed, unless --confirm-seeds
# Samples per dataset (the README's table; the embedded ones pinned by tests/test_search_confirm.py): with
# the split they give the target's non-members, which bound the TPR at low FPR a dataset can measure.
DATASET_SAMPLES: dict[str, int] = {"digits": 1797, "mnist5k": 5000, "synthetic_tabular": 4000, "cifar10": 60000,
                                   "cifar100": 60000, "svhn": 99289, "chmnist": 5000, "purchase": 197324,
                                   "texas": 67330, "location": 5010}
SEARCH_PRESETS: dict[str, GridSpec] = {
    # The paper's question on embedded data: the regime where pruning raises leakage (the claims preset's
    # C1 'holds' cell: digits, ResNet18 at width 0.5, L1 unstructured at 0.9; the same models as the grid's
    # `defenses` preset, so they share the store), two search seeds per trial, 2 shadows, at most 30 epochs,
    # the trained attacks at a fifth of their reference schedules. Sized for at most 30 minutes on 2 CPU
    # cores with the default confirmation (docs/defense_search.md).
    "quick": GridSpec(datasets=("digits",), archs=("resnet18",), methods=("l1_unstructured",), sparsities=(0.9,),
                      seeds=(0, 1), widths=(0.5,), attacks=("conf", "mentr", "nn", "samia"), num_shadows=2,
                      max_epochs=30, attack_epochs=20, adaptive=(True,)),
    # The paper's defense setting (section 6): CIFAR10 ResNet18, L1 unstructured at sparsity 0.7.
    "paper": GridSpec(datasets=("cifar10",), archs=("resnet18",), methods=("l1_unstructured",),
                      sparsities=(0.7,), adaptive=(True,)),
}


# The default budget per preset: quick's fits its 30 minutes with the confirmation (docs/defense_search.md).
PRESET_TRIALS = {"quick": 10, "paper": 16}


class CollapsedAttackWarning(UserWarning):
    """An attack's scores on a trial's target were constant or not finite: it was left out of the objective."""


# ---- the search space --------------------------------------------------------------------------
def search_space(defense: str, *, fixed: Mapping[str, float] = ()) -> dict[str, FloatDistribution]:
    """Optuna distributions of `defense`'s searched hyperparameters, minus those held `fixed`."""
    if defense not in SEARCH_SPACES:
        raise ConfigError(f"defense={defense!r} has no search space; choose one of: {', '.join(SEARCHABLE)}"
                          + (" (basic, no defense, is every search's reference unit)" if defense == "basic" else ""))
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
    merged = {**dict(cell.defense_params), **{name: float(value) for name, value in params.items()
                                              if name != DEFENSE_PARAM}}
    return dataclasses.replace(cell, defense_params=tuple(sorted(merged.items())), adaptive=True).validate()


def baseline_unit(cell: UnitConfig, *, seed: int | None = None, attacks: Sequence[str] | None = None) -> UnitConfig:
    """The undefended cell (Basic), the reference point of the plot; the same unit as the grid's."""
    return dataclasses.replace(cell, defense="basic", defense_params=(), adaptive=False,
                               seed=cell.seed if seed is None else seed,
                               attacks=cell.attacks if attacks is None else tuple(attacks)).validate()


def default_confirm_attacks(cell: UnitConfig) -> tuple[str, ...]:
    """The held-out attacks of the confirmation: the paper's attacks the search did not use, then the
    offline LiRA and RMIA (RMIA's offline calibration attacks one shadow with the others: 2 shadows)."""
    offline = ("lira_offline", "rmia_offline") if cell.num_shadows >= 2 else ("lira_offline",)
    return tuple(a for a in (*ATTACKS, *offline) if a not in cell.attacks)


def target_nonmembers(cell: UnitConfig) -> int:
    """The target's non-members in `cell` (the test part of its half), from the dataset's sample count."""
    from miaray.data.splits import make_splits  # torch: loaded only when a search is checked

    return len(make_splits(DATASET_SAMPLES[cell.dataset], seed=cell.seed, num_shadows=1, split=cell.split).target.test)


# ---- objectives from a unit's rows ---------------------------------------------------------------
def collapsed(row: Mapping[str, Any]) -> bool:
    """Whether a row's attack collapsed (`miaray.unit.attack_rows`); rows from before the mark did not."""
    return row.get("attack_status") == "collapsed"


@dataclass(frozen=True)
class UnitOutcome:
    """What one unit (one seed of a trial) scores: test accuracy, the privacy objective and the attack
    that reached it, and the attacks left out because they collapsed (attack -> why)."""

    target_test_acc: float
    privacy: float
    attack: str
    collapsed: dict[str, str] = field(default_factory=dict)


def unit_outcome(rows: Sequence[Mapping[str, Any]], *, metric: str = DEFAULT_PRIVACY_METRIC,
                 attacks: Sequence[str] | None = None) -> UnitOutcome | str:
    """The objectives of a unit, or the reason it has none: the strongest attack on the pruned target is
    the one with the largest `metric` (among `attacks`, when given) that did not collapse."""
    column = PRIVACY_METRICS[metric]
    pruned = [r for r in rows if r.get("target_model") == "pruned" and (attacks is None or r["attack"] in attacks)]
    failed = [r for r in pruned if r.get("status") != "ok"]
    if failed or not pruned:
        return str(failed[0].get("error") or "failed") if failed else "the unit returned no rows"
    gone = {str(r["attack"]): str(r.get("attack_note") or "collapsed") for r in pruned if collapsed(r)}
    valid = [r for r in pruned if not collapsed(r)]
    if not valid:
        return "every attack collapsed: " + "; ".join(f"{a} ({why})" for a, why in gone.items())
    acc = float(pruned[0]["target_test_acc"])
    non_finite = [r["attack"] for r in valid if not math.isfinite(float(r[column]))]
    if non_finite or not math.isfinite(acc):
        return f"non-finite objective (test accuracy {acc}, {column} of {non_finite})"
    strongest = max(valid, key=lambda r: float(r[column]))
    return UnitOutcome(acc, float(strongest[column]), str(strongest["attack"]), gone)


def objectives(rows: Sequence[Mapping[str, Any]], *, metric: str = DEFAULT_PRIVACY_METRIC
               ) -> tuple[float, float, str] | str:
    """(test accuracy, privacy objective, strongest attack) of a unit, or the reason it has none."""
    outcome = unit_outcome(rows, metric=metric)
    return outcome if isinstance(outcome, str) else (outcome.target_test_acc, outcome.privacy, outcome.attack)


# ---- the study ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Search:
    """One search: the cell of each defense (at the first search seed), the seeds, the objective, the
    budget, the confirmation and how trials are run."""

    cells: tuple[UnitConfig, ...]    # one per defense searched; dataset, arch, method, sparsity, attacks, ...
    trials: int                      # total budget, paper-grid points included
    settings: RunSettings
    seeds: tuple[int, ...] = ()      # the search seeds; () = the cells' seed
    privacy_metric: str = DEFAULT_PRIVACY_METRIC
    confirm_top: int = DEFAULT_CONFIRM_TOP  # front points re-run on the held-out seeds; 0: none
    confirm_seeds: tuple[int, ...] = ()     # () = DEFAULT_CONFIRM_SEEDS seeds after the largest search seed
    confirm_attacks: tuple[str, ...] | None = None  # held-out attacks; None = default_confirm_attacks
    concurrency: int = 1             # trials running at once (each runs one task per search seed)
    points: tuple[tuple[tuple[str, float], ...], ...] = ()  # user points, evaluated before the grid
    sampler_seed: int = 0
    retries: int = 0

    # ---- derived -------------------------------------------------------------------------------------
    @property
    def cell(self) -> UnitConfig:
        return self.cells[0]

    @property
    def defenses(self) -> tuple[str, ...]:
        return tuple(c.defense for c in self.cells)

    @property
    def multi(self) -> bool:
        """Several defenses: the defense is a categorical parameter of the study."""
        return len(self.cells) > 1

    @property
    def search_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.cell.seed,)

    @property
    def held_out_seeds(self) -> tuple[int, ...]:
        last = max(self.search_seeds)
        return self.confirm_seeds or tuple(range(last + 1, last + 1 + DEFAULT_CONFIRM_SEEDS))

    @property
    def held_out_attacks(self) -> tuple[str, ...]:
        return default_confirm_attacks(self.cell) if self.confirm_attacks is None else self.confirm_attacks

    @property
    def confirm_attack_list(self) -> tuple[str, ...]:
        """The attacks of a confirmation unit: the searched ones, then the held-out ones."""
        return tuple(dict.fromkeys((*self.cell.attacks, *self.held_out_attacks)))

    @property
    def column(self) -> str:
        return privacy_column(self.privacy_metric)

    @property
    def space(self) -> dict[str, FloatDistribution]:
        """The first defense's space (the whole space of a one-defense study)."""
        return self.space_of(self.cell.defense)

    def space_of(self, defense: str) -> dict[str, FloatDistribution]:
        return search_space(defense, fixed=dict(self.cell_of(defense).defense_params))

    def cell_of(self, defense: str) -> UnitConfig:
        return next(c for c in self.cells if c.defense == defense)

    def params_for(self, defense: str, point: Mapping[str, float]) -> dict[str, Any]:
        """A point of `defense` as the study's parameters (the defense among them when several)."""
        return {**({DEFENSE_PARAM: defense} if self.multi else {}), **point}

    def point_defense(self, point: Mapping[str, float]) -> str:
        """The defense a user point belongs to: the one whose space holds all its names."""
        names = set(point)
        owners = [d for d in self.defenses if names <= set(self.space_of(d))]
        if not names or not owners:
            searched = "; ".join(f"{d}: {', '.join(self.space_of(d))}" for d in self.defenses)
            unknown = sorted(names - set(self.space)) if not self.multi else sorted(names)
            raise ConfigError(f"point {dict(point)}: {unknown} not searched{' by one defense' if self.multi else ''}; "
                              f"searched: {searched if self.multi else ', '.join(self.space)}")
        return owners[0]

    def starting_params(self, point: Mapping[str, float]) -> dict[str, Any]:
        defense = self.point_defense(point)
        return self.params_for(defense, full_point(defense, point, space=self.space_of(defense)))

    @property
    def study_name(self) -> str:
        return f"{'+'.join(self.defenses)}-{self.cell.unit_id()}"

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{Path(self.settings.experiment) / STUDY_FILE}"

    def identity(self) -> dict[str, Any]:
        """What the study's values mean (JSON-like): the cells, the seeds averaged, the privacy metric. A
        study is resumed only with the same identity."""
        return json.loads(json.dumps({"cells": [c.to_dict() for c in self.cells], "seeds": list(self.search_seeds),
                                      "privacy_metric": self.privacy_metric}, sort_keys=True))

    def unit(self, defense: str, params: Mapping[str, float], *, seed: int,
             attacks: Sequence[str] | None = None) -> UnitConfig:
        """The unit of a trial's setting on one seed (with `attacks`: a confirmation's)."""
        unit = dataclasses.replace(trial_unit(self.cell_of(defense), params=params), seed=seed)
        return (dataclasses.replace(unit, attacks=tuple(attacks)) if attacks is not None else unit).validate()

    def describe(self) -> str:
        """The search in a few lines, for people (printed before it starts and by --dry-run)."""
        c, starts = self.cell, starting_points(self)
        spaces = "; ".join(f"{d}: " + ", ".join(f"{n} in [{s.low:g}, {s.high:g}] (log)" for n, s in
                                                  self.space_of(d).items()) for d in self.defenses)
        fixed = {d: {k: v for k, v in self.cell_of(d).resolved_defense_params.items() if k not in self.space_of(d)}
                 for d in self.defenses}
        seeds = ", ".join(map(str, self.search_seeds))
        lines = [f"search: {' + '.join(self.defenses)} (adaptive) on {c.dataset}/{c.arch} {c.method}@{c.sparsity:g}, "
                 f"width {c.width:g}, {c.num_shadows} shadows, attacks {', '.join(c.attacks)}",
                 f"objectives (means over seeds {seeds}): max target test accuracy, min {self.column} (per seed the "
                 f"strongest attack's {PRIVACY_METRICS[self.privacy_metric]}; collapsed attacks left out)",
                 f"space: {spaces}; fixed: " + "; ".join(f"{d}: {_fmt(f) or '-'}" for d, f in fixed.items()),
                 f"starting points: {'; '.join(f'{_label(p)} ({origin})' for origin, p in starts)}",
                 f"budget: {self.trials} trials x {len(self.search_seeds)} seeds, {self.concurrency} trials at once, "
                 f"{self.settings.cpus_per_trial:g} CPU + {self.settings.gpus_per_trial:g} GPU per unit; "
                 f"study {self.storage_url}"]
        if self.confirm_top:
            lines.append(f"confirmation: up to {self.confirm_top} front points x held-out seeds "
                         f"{', '.join(map(str, self.held_out_seeds))} (plus the undefended unit on each), attacks "
                         f"{', '.join(self.cell.attacks)} + held out {', '.join(self.held_out_attacks) or '-'}; "
                         f"95% intervals, flagged where one excludes the search-time value")
        else:
            lines.append("confirmation: none (--confirm-top 0): the front is search-seed values only")
        if self.trials < len(starts):
            lines.append(f"note: the budget is below the {len(starts)} starting points: no free search")
        return "\n".join(lines)

    def validate(self) -> "Search":
        if not self.cells:
            raise ConfigError("a search needs a cell")
        for c in self.cells:
            c.validate()
        if len(set(self.defenses)) != len(self.defenses):
            raise ConfigError(f"--defense {','.join(self.defenses)} names a defense twice: a study searches each "
                              "defense once (at most one value per --defense-param)")
        for d in self.defenses:
            if not self.space_of(d):
                raise ConfigError(f"every hyperparameter of {d} is held fixed by defense_params: nothing to "
                                  f"search (searched: {', '.join(SEARCH_SPACES[d])})")
        shared = {k: v for k, v in self.cell.to_dict().items() if k not in ("defense", "defense_params")}
        if any({k: v for k, v in c.to_dict().items() if k not in ("defense", "defense_params")} != shared
               for c in self.cells):
            raise ConfigError("the defenses of one study must share their cell (all but the defense)")
        if self.trials < 1 or self.concurrency < 1:
            raise ConfigError(f"trials={self.trials} and concurrency={self.concurrency} must be at least 1")
        if "://" in self.settings.experiment:
            raise ConfigError(f"the study is a SQLite file, so --storage must be a local folder, not "
                              f"{self.settings.experiment!r}")
        check_number("sampler_seed", self.sampler_seed, low=0, high=MAX_SEED, integer=True)
        self._validate_metric()
        self._validate_seeds()
        for point in self.points:
            self.point_defense(dict(point))
            for name, value in point:  # outside the space Optuna warns but runs it; <= 0 breaks its log scale
                space = self.space_of(self.point_defense(dict(point)))[name]
                check_number(f"point {name}", value, low=0.0, low_inclusive=False,
                             why=f"the search space is log-scaled, {space.low:g} to {space.high:g}")
        return self

    def _validate_metric(self) -> None:
        if self.privacy_metric not in PRIVACY_METRICS:
            raise ConfigError(f"--privacy-metric {self.privacy_metric!r} is not valid; choose one of: "
                              f"{', '.join(PRIVACY_METRICS)}")
        if self.privacy_metric.startswith("tpr_at_fpr_"):
            from miaray.attacks.metrics import measurable_fpr

            level = float(self.privacy_metric.removeprefix("tpr_at_fpr_"))
            n = target_nonmembers(self.cell)
            if not measurable_fpr(level, n):
                measurable = [m for m in PRIVACY_METRICS if not m.startswith("tpr_at_fpr_")
                              or measurable_fpr(float(m.removeprefix("tpr_at_fpr_")), n)]
                raise ConfigError(f"--privacy-metric {self.privacy_metric}: a TPR at FPR {level:g} cannot be measured "
                                  f"on the {n} non-members of the {self.cell.dataset} target (it needs at least "
                                  f"{math.ceil(1 / level)}); choose one of: {', '.join(measurable)}")

    def _validate_seeds(self) -> None:
        for option, seeds in (("--seeds", self.search_seeds), ("--confirm-seeds", self.held_out_seeds)):
            if len(set(seeds)) != len(seeds):
                raise ConfigError(f"{option} {','.join(map(str, seeds))} names a seed twice")
        for seed in self.search_seeds:
            dataclasses.replace(self.cell, seed=seed).validate()
        check_number("confirm_top", self.confirm_top, low=0, integer=True)
        if not self.confirm_top:
            return
        overlap = sorted(set(self.held_out_seeds) & set(self.search_seeds))
        if overlap:
            raise ConfigError(f"--confirm-seeds {','.join(map(str, self.held_out_seeds))} overlaps --seeds "
                              f"{','.join(map(str, self.search_seeds))} at {','.join(map(str, overlap))}: the "
                              "confirmation re-measures the front on held-out seeds, disjoint from the search's")
        if len(self.held_out_seeds) < 2:
            raise ConfigError(f"--confirm-seeds {','.join(map(str, self.held_out_seeds))}: give at least 2 held-out "
                              "seeds (a 95% interval needs two), or --confirm-top 0 for no confirmation")
        for attack in self.held_out_attacks:
            if attack not in ALL_ATTACKS:
                raise ConfigError(f"--confirm-attacks {attack!r} is not valid; choose from: {', '.join(ALL_ATTACKS)}")
        try:
            for seed in self.held_out_seeds:
                dataclasses.replace(self.cell, seed=seed, attacks=self.confirm_attack_list).validate()
        except ConfigError as error:
            raise ConfigError(f"--confirm-attacks {','.join(self.held_out_attacks)} / --confirm-seeds: {error}") from None


def _sampler(seed: int, startup: int, *, group: bool = False) -> optuna.samplers.BaseSampler:
    # Multi-objective TPE rather than the default NSGA-II: NSGA-II's first generation (50) is random,
    # longer than a whole 16-trial budget. The constant liar keeps concurrent asks apart; `group` samples
    # each defense's conditional space jointly (several defenses in one study).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=group, constant_liar=True,
                                          n_startup_trials=startup)


def stored_identity(study: optuna.Study) -> dict[str, Any] | None:
    """The identity a study was created with; studies from before it was stored: their one cell, its
    seed, the advantage; None for a new study."""
    if "search" in study.user_attrs:
        return study.user_attrs["search"]
    if "cell" in study.user_attrs:
        cell = json.loads(study.user_attrs["cell"])
        return {"cells": [cell], "seeds": [cell.get("seed", 0)], "privacy_metric": DEFAULT_PRIVACY_METRIC}
    return None


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    changed = {k: (old.get(k), new.get(k)) for k in ("seeds", "privacy_metric") if old.get(k) != new.get(k)}
    old_cells, new_cells = old.get("cells", []), new.get("cells", [])
    if [c.get("defense") for c in old_cells] != [c.get("defense") for c in new_cells]:
        changed["defenses"] = ([c.get("defense") for c in old_cells], [c.get("defense") for c in new_cells])
    else:
        for before, after in zip(old_cells, new_cells):
            changed.update({k: (before.get(k), v) for k, v in after.items() if before.get(k) != v})
    return changed


def open_study(search: Search, *, log: Callable[[str], None] = print) -> optuna.Study:
    """Create the study, or load it and recover from trials a killed driver left running."""
    Path(search.settings.experiment).mkdir(parents=True, exist_ok=True)
    identity = search.identity()
    others = [n for n in optuna.get_all_study_names(storage=search.storage_url) if n != search.study_name]
    if others:  # one experiment, one search: its rows, front and plot would otherwise mix two searches
        old = stored_identity(optuna.load_study(study_name=others[0], storage=search.storage_url)) or {}
        raise ConfigError(f"{search.settings.experiment} holds another search (changed: {_changes(old, identity)}); "
                          "give this one its own --name, or repeat the original options to resume it")
    study = optuna.create_study(study_name=search.study_name, storage=search.storage_url,
                                directions=["maximize", "minimize"], load_if_exists=True,
                                sampler=_sampler(search.sampler_seed, len(starting_points(search)), group=search.multi))
    old = stored_identity(study)
    if old is not None and old != identity:  # the same cell, other seeds or another objective
        raise ConfigError(f"{search.settings.experiment} holds this search with other settings (changed: "
                          f"{_changes(old, identity)}); its values would mean something else: give this one its "
                          "own --name, or repeat the original options to resume it")
    study.set_user_attr("search", identity)
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
            + (f", {_label(params)} asked again" if params else ""))
    return study


def starting_points(search: Search) -> list[tuple[str, dict[str, Any]]]:
    """(origin, params) to evaluate before free search: the user's points, then the paper's grid of
    every defense, the defenses in turn (so a short budget reaches each)."""
    grids = [[("paper_grid", search.params_for(d, p)) for p in paper_points(d, space=search.space_of(d))]
             for d in search.defenses]
    return ([("user", search.starting_params(dict(p))) for p in search.points]
            + [start for turn in itertools.zip_longest(*grids) for start in turn if start is not None])


def enqueue_next_start(study: optuna.Study, *, starts: Sequence[tuple[str, dict[str, Any]]]) -> None:
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


def suggest(trial: optuna.Trial, search: Search) -> tuple[str, dict[str, float]]:
    """The trial's defense and hyperparameters, define-by-run: the defense first (several), then the
    parameters of its own space only (an enqueued point's values come back as they were queued)."""
    defense = trial.suggest_categorical(DEFENSE_PARAM, search.defenses) if search.multi else search.cell.defense
    return defense, {name: trial.suggest_float(name, d.low, d.high, log=True)
                     for name, d in search.space_of(defense).items()}


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that used the budget: finished, less those a killed driver interrupted."""
    interrupted = set(study.user_attrs.get("interrupted", []))
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in interrupted]


def budget_used(study: optuna.Study) -> int:
    return len(counted_trials(study))


def trial_setting(trial: FrozenTrial | optuna.Trial, search: Search) -> tuple[str, dict[str, float]]:
    """(defense, hyperparameters) of a trial of `search`."""
    params = dict(trial.params)
    defense = params.pop(DEFENSE_PARAM, None) or search.cell.defense
    return defense, params


# ---- Ray tasks ------------------------------------------------------------------------------------
@ray.remote
def _run_trial_unit(config: dict, settings: RunSettings) -> list[dict[str, Any]]:
    from miaray.unit import run_unit  # the science stack loads in the worker only

    unit = UnitConfig.from_dict(config)
    # Like a sweep cell's: per-sample signals and ROC curves beside the rows, for analysis/figures.py.
    return run_unit(unit, artifacts_dir=settings.experiment,
                    **worker_context(settings, label=f"{unit.defense} {dict(unit.defense_params)} seed {unit.seed}"))


@ray.remote
def _build_original_task(config: dict, role: str, settings: RunSettings) -> None:
    build_model(UnitConfig.from_dict(config), role, False, settings)


# What a unit itself can cause: an exception, running out of memory, crashing its worker process.
TRIAL_FAILURES = (ray.exceptions.RayTaskError, ray.exceptions.OutOfMemoryError,
                  ray.exceptions.WorkerCrashedError)


def build_originals(cells: Sequence[UnitConfig], *, settings: RunSettings, retries: int,
                    log: Callable[[str], None] = print) -> None:
    """Build the originals (with their signals) of every seed the store lacks, as parallel Ray tasks. A
    failure is logged and the search goes on: the units that need the model fail with the same error."""
    todo = missing_builds(Plan.of(cells).originals, pruned=False, store=Store(settings.store))
    total = len(Plan.of(cells).originals)
    log(f"originals: {total - len(todo)} of {total} cached, {len(todo)} to build")
    task = _build_original_task.options(num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial,
                                        max_retries=retries, retry_exceptions=retries > 0)
    pending = {task.remote(c.to_dict(), role, settings): (c, role) for c, role in todo.values()}
    failed = 0
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        cell, role = pending.pop(ref)
        try:
            ray.get(ref)
        except Exception as error:  # a task's exception; the search goes on without that model
            failed += 1
            log(f"originals: FAILED {cell.dataset}/{cell.arch} seed {cell.seed} {role}: "
                f"{str(error).strip().splitlines()[-1]}")
        log(f"originals: {len(todo) - len(pending) - failed}/{len(todo)} built, {failed} failed")


def _submit(unit: UnitConfig, search: Search) -> ray.ObjectRef:
    task = _run_trial_unit.options(num_cpus=search.settings.cpus_per_trial,
                                   num_gpus=search.settings.gpus_per_trial,
                                   max_retries=search.retries, retry_exceptions=search.retries > 0)
    return task.remote(unit.to_dict(), search.settings)


def _write(unit: UnitConfig, rows: Sequence[Mapping[str, Any]], *, extra: Mapping[str, Any],
           settings: RunSettings) -> list[dict[str, Any]]:
    rows = [{**row, **extra} for row in rows]
    results.write_unit_rows(experiment=settings.experiment, unit_id=unit.unit_id(), rows=rows)
    return rows


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
    return _write(unit, rows, extra=extra, settings=settings)


def stored_rows(unit: UnitConfig, settings: RunSettings) -> list[dict[str, Any]] | None:
    """The unit's rows in the experiment when they are all ok (the unit ran: it need not run again)."""
    try:
        frame = results.read_parquet(f"{results.rows_dir(settings.experiment)}/{unit.unit_id()}{results.SUFFIX}")
    except ValueError:  # damaged: run it again
        return None
    if frame is None or frame.empty or "status" not in frame or (frame["status"] != "ok").any():
        return None
    return frame.to_dict("records")


def _start(unit: UnitConfig, search: Search, *, extra: Mapping[str, Any]) -> list[dict[str, Any]] | ray.ObjectRef:
    """The unit's stored ok rows (re-labelled with `extra`), else its submitted task."""
    rows = stored_rows(unit, search.settings)
    return _submit(unit, search) if rows is None else _write(unit, rows, extra=extra, settings=search.settings)


def _extra(search: Search, *, trial: int | None, origin: str, phase: str) -> dict[str, Any]:
    extra = {"search_study": search.study_name, "search_origin": origin, "search_phase": phase}
    return {**extra, "search_trial": trial} if trial is not None else extra


# ---- the search loop ----------------------------------------------------------------------------------
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


def _fmt(params: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in params.items())


def _label(params: Mapping[str, Any]) -> str:
    """A trial's parameters for people: 'lambda=4', or 'dp: noise_multiplier=1, max_grad_norm=1'."""
    rest = {k: v for k, v in params.items() if k != DEFENSE_PARAM}
    return f"{params[DEFENSE_PARAM]}: {_fmt(rest)}" if DEFENSE_PARAM in params else _fmt(rest)


# ---- the confirmation -------------------------------------------------------------------------------
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


# ---- results ------------------------------------------------------------------------------------
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
    order = sorted(wide.columns, key=lambda c: (ALL_ATTACKS.index(c[1]), METRICS.index(c[0])))
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


# ---- command line -------------------------------------------------------------------------------
def _points(items: Sequence[str]) -> tuple[tuple[tuple[str, float], ...], ...]:
    return tuple(tuple(sorted(dict(parse_name_values(item.split(","), option="--point")).items()))
                 for item in items)


def _seed_list(text: str) -> tuple[int, ...]:
    return tuple(int(item.strip()) for item in text.split(",") if item.strip())


_seed_list.__name__ = "comma list of integers"  # argparse's message for a malformed value


def _attack_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def build_search_parser() -> argparse.ArgumentParser:
    """The grid's options (one cell) and run options, plus the search's own."""
    p = build_parser(prog="defense_search.py", presets=SEARCH_PRESETS, description=(
        "Search defense hyperparameters for one cell with Optuna (maximise test accuracy, minimise the "
        "strongest attack's advantage, AUC or TPR at low FPR; means over --seeds), trials on Ray, then re-run "
        "the front on held-out seeds and attacks. The grid filters must leave one cell; --defense may list "
        "several defenses (one study, the defense a parameter). The attack is always adaptive, and the same "
        "command resumes the study it finds in --storage/--name (--adaptive and --resume are implied)."))
    s = p.add_argument_group("search")
    s.add_argument("--trials", type=int_at_least(1),
                   help="total budget in trials (each runs every --seeds seed), >= 1, the paper-grid points included "
                        f"(default: {', '.join(f'{n} with --preset {p}' for p, n in PRESET_TRIALS.items())})")
    s.add_argument("--concurrency", type=int_at_least(1),
                   help="trials at once, >= 1 (default: as many as the cluster fits at the per-trial resources, "
                        "divided by the number of seeds)")
    s.add_argument("--point", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                   help="a point to evaluate before the paper grid, repeatable, e.g. noise_multiplier=3,max_grad_norm=0.5 "
                        "(its names say its defense; unnamed parameters at their defaults; may lie outside the "
                        "search space)")
    s.add_argument("--sampler-seed", type=int, default=0, help="integer seed of the TPE sampler")
    s.add_argument("--privacy-metric", choices=tuple(PRIVACY_METRICS), default=DEFAULT_PRIVACY_METRIC,
                   help="the privacy objective, per seed the strongest attack's: advantage (TPR - FPR at its own "
                        "decision), auc, or TPR at 1%% / 0.1%% FPR (refused where the dataset's non-members cannot "
                        "measure it)")
    c = p.add_argument_group("confirmation (after the budget)")
    c.add_argument("--confirm-top", type=int_at_least(0), default=DEFAULT_CONFIRM_TOP,
                   help="front points re-run on the held-out seeds with the held-out attacks, at most K, spread "
                        "along the front when it is longer; 0: no confirmation")
    c.add_argument("--confirm-seeds", type=_seed_list, metavar="SEED,...",
                   help=f"held-out seeds, at least 2, disjoint from --seeds (default: the {DEFAULT_CONFIRM_SEEDS} "
                        "seeds after the largest search seed)")
    c.add_argument("--confirm-attacks", type=_attack_list, metavar="ATTACK,...",
                   help="held-out attacks, run beside the searched ones (default: the paper's attacks not in "
                        "--attacks, and lira_offline and rmia_offline; rmia_offline needs 2 shadows)")
    return p


def _default_concurrency(settings: RunSettings, *, seeds: int = 1) -> int:
    if not ray.is_initialized():  # a dry run: no cluster to measure
        return 1
    resources = ray.cluster_resources()
    fits = resources.get("CPU", 1) / max(settings.cpus_per_trial, 1e-9)
    if settings.gpus_per_trial > 0:
        fits = min(fits, resources.get("GPU", 0) / settings.gpus_per_trial)
    return max(1, int(fits) // max(1, seeds))


def search_cells(spec: GridSpec) -> tuple[list[UnitConfig], str]:
    """The cells of a search grid at its first seed, one per defense, or ('', why not)."""
    cells = dataclasses.replace(spec, adaptive=(True,)).cells()
    first = [c for c in cells if c.seed == spec.seeds[0]]
    place = {(c.dataset, c.arch, c.width, c.method, c.sparsity, c.split, c.num_references) for c in first}
    defenses = [c.defense for c in first]
    if len(place) != 1 or len(set(defenses)) != len(defenses) or len(cells) != len(first) * len(spec.seeds):
        settings = ", ".join(defense_label(c.defense, c.defense_params) for c in first)
        return [], (f"the grid filters leave {len(first)} cells per seed ({len(place)} "
                    f"cell{'s' if len(place) != 1 else ''} times the defense settings {settings}); a search takes one "
                    "cell (pass one value each to --datasets, --archs, --methods, --sparsities, --splits, --widths, "
                    "--references) and at most one setting per defense "
                    "(one value per --defense-param); --seeds and --defense may list several")
    return first, ""


# The options the search's errors name: the sweep's, with --defense as the README writes it for a search.
SEARCH_OPTIONS = {**SWEEP_OPTIONS, "defense": "--defense", "defenses": "--defense"}


def search_trainings(search: Search) -> list[str]:
    """What a search trains, for its plan (and --dry-run), and the cost warning past the thresholds of
    `miaray.sweep.plan.cost_warning`: the originals of every search and held-out seed, then per unit (a
    trial's seed, the undefended unit of each seed, a confirmation) the target and every shadow pruned
    and fine-tuned (adaptive: each unit's own) and its trained attacks. Upper bounds: every trial runs,
    every model at its epoch cap."""
    from miaray.sweep.plan import cost_warning

    c = search.cell
    epochs, finetune = c.train.epochs(tabular=c.tabular)
    seeds, held_out = len(search.search_seeds), len(search.held_out_seeds) if search.confirm_top else 0
    per_unit = 1 + c.num_shadows
    searched = search.trials * seeds + seeds
    confirming = search.confirm_top * held_out + held_out
    originals = (seeds + held_out) * per_unit
    models = originals + (searched + confirming) * per_unit
    total = originals * epochs + (searched + confirming) * per_unit * finetune
    attacks = (searched * len(set(c.attacks) & set(TRAINED_ATTACKS))
               + confirming * len(set(search.confirm_attack_list) & set(TRAINED_ATTACKS)))
    warning = cost_warning(models=models, epochs=total, epoch_cap=epochs,
                           cpus_at_once=min(search.concurrency, search.trials) * seeds * search.settings.cpus_per_trial)
    return [f"trainings: at most {models:,} models ({originals:,} originals, then {per_unit} pruned and fine-tuned "
            f"per unit: {search.trials:,} trials x {seeds} seeds, the undefended unit of each seed"
            + (", the confirmations" if held_out else "") + f"), at most {total:,} epochs in all; {attacks:,} attack "
            "models trained", *([warning] if warning else [])]


@entry_point(prog="defense_search.py", resume="finished trials are kept; rerun the same command to resume")
def defense_search_main(argv: list[str] | None = None) -> int:
    """`sweeps/defense_search.py`: one search, its confirmation, then the Pareto table, files and plot."""
    parser = build_search_parser()
    args, spec = parse_args(argv, parser, SEARCH_PRESETS)
    if args.defenses is None:  # else the preset's Basic would be refused: a defense nobody typed
        parser.error(f"--defense is required: the defense whose hyperparameters to search, one or several of "
                     f"{', '.join(SEARCH_SPACES)} (e.g. --defense ppb)")
    cells, why = search_cells(spec)
    if not cells:
        parser.error(why)
    try:
        points = _points(args.point)
    except ConfigError as error:
        parser.error(str(error))
    cell = cells[0]
    name = (f"defense_search-{cell.dataset}-{cell.arch}-{cell.method}-{cell.sparsity:g}-"
            f"{'+'.join(c.defense for c in cells)}")
    check_resume(args, parser, name=name)  # --resume of a search that never ran: refused before Ray starts
    if not args.dry_run:
        connect(address=args.address)  # first: the default --gpus-per-trial depends on the cluster
    try:
        settings = settings_from_args(args, name=name)  # checked against the cluster once connected
        search = Search(cells=tuple(cells), trials=args.trials or PRESET_TRIALS[args.preset], settings=settings,
                        seeds=tuple(spec.seeds),
                        privacy_metric=args.privacy_metric, confirm_top=args.confirm_top,
                        confirm_seeds=tuple(args.confirm_seeds or ()), confirm_attacks=args.confirm_attacks,
                        points=points, sampler_seed=args.sampler_seed, retries=args.retries,
                        concurrency=args.concurrency or _default_concurrency(settings, seeds=len(spec.seeds))
                        ).validate()
    except ConfigError as error:
        parser.error(str(with_options(error, SEARCH_OPTIONS)))
    print("\n".join([search.describe(), *search_trainings(search)]), flush=True)
    if args.dry_run:
        return 0
    study = run_search(search, log=lambda m: print(m, flush=True))
    run_confirmation(search, study, log=lambda m: print(m, flush=True))
    front = write_outputs(search, study=study)
    column = search.column
    shown = ["trial", *(["defense"] if search.multi else []), "setting", "target_test_acc", column,
             "strongest_attack", "epsilon"]
    if search.confirm_top:
        shown += ["confirmed_target_test_acc", f"confirmed_{column}", f"confirmed_all_{column}",
                  "confirmed_best_tpr_attack", f"confirmed_best_{TPR_METRIC}", "flagged"]
    print(f"\nPareto front ({len(front)} of {budget_used(study)} trials; search-time values are means over seeds "
          f"{', '.join(map(str, search.search_seeds))}"
          + (f", confirmed ones over held-out seeds {', '.join(map(str, search.held_out_seeds))} with every "
             "confirming attack in confirmed_all" if search.confirm_top else "")
          + f") in {settings.experiment}/pareto.parquet:")
    print(front[[c for c in shown if c in front]].to_string(index=False, float_format=lambda v: f"{v:.4g}")
          if len(front) else "(empty)")
    if search.confirm_top and len(front) and front["flagged"].any():
        flagged = front.loc[front["flagged"], ["trial", "flag_reason"]].itertuples(index=False)
        print(f"flagged: {', '.join(f'trial {t} ({why})' for t, why in flagged)}: a confirmed 95% interval "
              "excludes the search-time value")
    return 0 if len(front) else 1
