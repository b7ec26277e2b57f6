"""The search space of each defense and what a setting is measured by: the log-uniform ranges and the
paper's grid as points of them, the privacy objective (its metric and column), the units a setting runs
as (the trial's, the undefended reference, the confirmation's held-out attacks), the samples a dataset
gives for a TPR at low FPR, the TPE sampler, and a point's label for people."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping, Sequence

import optuna
from optuna.distributions import FloatDistribution

from miaray.config import ConfigError, UnitConfig
from miaray.vocabulary import ATTACKS, DEFENSE_PARAMS


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
# Samples per dataset (the README's table; the embedded ones pinned by tests/test_search_confirm.py): with
# the split they give the target's non-members, which bound the TPR at low FPR a dataset can measure.
DATASET_SAMPLES: dict[str, int] = {"digits": 1797, "mnist5k": 5000, "synthetic_tabular": 4000, "cifar10": 60000,
                                   "cifar100": 60000, "svhn": 99289, "chmnist": 5000, "purchase": 197324,
                                   "texas": 67330, "location": 5010}


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


def _sampler(seed: int, startup: int, *, group: bool = False) -> optuna.samplers.BaseSampler:
    # Multi-objective TPE rather than the default NSGA-II: NSGA-II's first generation (50) is random,
    # longer than a whole 16-trial budget. The constant liar keeps concurrent asks apart; `group` samples
    # each defense's conditional space jointly (several defenses in one study).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=group, constant_liar=True,
                                          n_startup_trials=startup)


def _fmt(params: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in params.items())


def _label(params: Mapping[str, Any]) -> str:
    """A trial's parameters for people: 'lambda=4', or 'dp: noise_multiplier=1, max_grad_norm=1'."""
    rest = {k: v for k, v in params.items() if k != DEFENSE_PARAM}
    return f"{params[DEFENSE_PARAM]}: {_fmt(rest)}" if DEFENSE_PARAM in params else _fmt(rest)
