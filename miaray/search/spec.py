"""`Search`, what one search is: the cell of each defense, the search and held-out seeds, the privacy
objective, the budget, the confirmation and how trials run, with its checks and its description; and
what the study asks with it: the starting points (the user's, then every defense's paper grid in turn),
the define-by-run suggestion of a trial's setting, and that setting read back from a trial."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from miaray.config import ConfigError, UnitConfig, check_number
from miaray.roles import MAX_SEED
from miaray.search.space import (DEFAULT_PRIVACY_METRIC, DEFENSE_PARAM, PRIVACY_METRICS, SEARCH_SPACES, _fmt, _label,
                                 default_confirm_attacks, full_point, paper_points, privacy_column, search_space,
                                 target_nonmembers, trial_unit)
from miaray.sweep import RunSettings
from miaray.vocabulary import attack_names


STUDY_FILE = "study.db"
DEFAULT_CONFIRM_TOP = 3     # front points confirmed at most
DEFAULT_CONFIRM_SEEDS = 3   # held-out seeds, after the largest search seed, unless --confirm-seeds


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
            if attack not in attack_names():
                raise ConfigError(f"--confirm-attacks {attack!r} is not valid; choose from: {', '.join(attack_names())}")
        try:
            for seed in self.held_out_seeds:
                dataclasses.replace(self.cell, seed=seed, attacks=self.confirm_attack_list).validate()
        except ConfigError as error:
            raise ConfigError(f"--confirm-attacks {','.join(self.held_out_attacks)} / --confirm-seeds: {error}") from None


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


def trial_setting(trial: FrozenTrial | optuna.Trial, search: Search) -> tuple[str, dict[str, float]]:
    """(defense, hyperparameters) of a trial of `search`."""
    params = dict(trial.params)
    defense = params.pop(DEFENSE_PARAM, None) or search.cell.defense
    return defense, params
