"""RMIA (Zarifzadeh et al., "Low-Cost High-Power Membership Inference Attacks", ICML 2024).

Pr(x | theta) is the target model's true-class probability p_y(x) = sigmoid(phi(x)) (``miaray.attacks.phi``);
Pr(x) is the same averaged over reference models:

- online (``rmia``):          Pr(x) = mean of Pr(x | theta_m) over all M reference models, IN and OUT;
- offline (``rmia_offline``): Pr(x) = 0.5 ((1 + a) Pr_OUT(x) + (1 - a)), Pr_OUT the mean over OUT models
                              only; a in [0, 1] stands in for the missing IN models (a = 1: an IN model
                              would score x like an OUT one; a = 0: it would give x probability 1).

    ratio(x) = Pr(x | theta) / Pr(x),   LR(x, z) = ratio(x) / ratio(z),
    score(x) = fraction of population samples z with LR(x, z) >= gamma
             = fraction of z with ratio(z) <= ratio(x) / gamma       (one searchsorted over sorted ratios).

Population z: samples the attacker holds that are neither members nor non-members of the target; in
miaray the shadow half, never the target's pool. They enter ``fit`` separately (the target model's and
the reference models' phi of z). Online, the reference models train inside the target's pool, so every
z is OUT for all of them. Offline, z from the shadow half may be IN for some shadows: those cells are NaN
(``out_only``), Pr_OUT(z) averages the others, and a z without any OUT model is left out
(``n_population_`` counts the z used).

Calibrating a (offline, as the RMIA paper does: attack one reference model with the others): each
calibration model k in turn plays the target; the other models' OUT signals give Pr(x) for samples
whose membership in k is known. ``a_`` is the grid value with the highest AUC, averaged over k.
score(x) is non-decreasing in ratio(x) for any fixed set of z, so the AUC depends on z only through
ties, and calibration ranks ratio(x) itself.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from miaray.attacks.ratio_attack import ArrayLike, RatioAttack, as_array, models_phi, target_phi

A_GRID = tuple(i / 10 for i in range(11))  # candidates for the offline a: 0, 0.1, ..., 1
TINY = np.finfo(np.float64).tiny  # Pr(x) floor: a probability that underflowed never divides by zero


def probability(phi: np.ndarray) -> np.ndarray:
    """Pr(x | theta) = sigmoid(phi), in float64 (phi = log(p / (1 - p)))."""
    return expit(np.asarray(phi, dtype=np.float64))


def offline_probability(pr_out: np.ndarray, a: float) -> np.ndarray:
    """Pr(x) = 0.5 ((1 + a) Pr_OUT(x) + (1 - a)) from the mean OUT probability."""
    return 0.5 * ((1.0 + a) * pr_out + (1.0 - a))


def out_mean(p: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN cells (the OUT models); NaN for a row without any."""
    counts = np.sum(~np.isnan(p), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(p, axis=1) / counts, np.nan)


def _plain(values: ArrayLike, *, name: str, allow_nan: bool, n: int | None = None) -> np.ndarray:
    """The models' phi of the plain query only, as (n, M)."""
    phi = models_phi(values, name=name, allow_nan=allow_nan, n=n)
    if phi.shape[2] != 1:
        raise ValueError(f"{name}: RMIA takes the plain query only, (n, M): column 0 of model_phi")
    return phi[:, :, 0]


def calibrate_offline_a(calibration: ArrayLike, inside: ArrayLike, *,
                        grid: Sequence[float] = A_GRID) -> tuple[float, dict[float, float]]:
    """The offline a that best attacks each calibration model with the others' OUT signals.

    ``calibration``: phi (n, K) of K >= 2 models the attacker trained (the shadows) on n samples of its
    own data; ``inside``: (n, K), True where model k trained on the sample. Returns (a, mean AUC per
    grid value); ties go to the smaller a.
    """
    phi = _plain(calibration, name="calibration", allow_nan=False)
    mask = as_array(inside, name="calibration_inside", ndim=(2,), dtype=bool)
    if mask.shape != phi.shape:
        raise ValueError(f"calibration_inside has shape {mask.shape}; expected {phi.shape}")
    if phi.shape[1] < 2:
        raise ValueError("calibrating a needs at least two models: one attacked, one to compare with")
    p = probability(phi)
    per_model = []
    for k in range(phi.shape[1]):
        others = np.delete(np.arange(phi.shape[1]), k)
        out = np.where(mask[:, others], np.nan, p[:, others])
        usable = (~np.isnan(out)).any(axis=1)  # samples some other model did not train on
        members = mask[usable, k]
        if members.all() or not members.any():
            continue
        pr_out = out_mean(out[usable])
        per_model.append([roc_auc_score(members, p[usable, k] / offline_probability(pr_out, a))
                          for a in grid])
    if not per_model:
        raise ValueError("no calibration model has both members and non-members with an OUT signal "
                         "from the other models")
    mean_auc = np.mean(per_model, axis=0)
    return float(grid[int(np.argmax(mean_auc))]), {float(a): float(auc) for a, auc in zip(grid, mean_auc)}


class _RMIA(RatioAttack):
    decision_score: ClassVar[float] = 0.5  # member when x beats at least half of the population

    def __init__(self, *, gamma: float = 1.0) -> None:
        if not gamma > 0:
            raise ValueError(f"gamma={gamma!r} must be positive")
        self.gamma = gamma

    def _fit_ratios(self, *, pr_x: np.ndarray, pr_z: np.ndarray, population_target: ArrayLike) -> None:
        """Fitted state from Pr(x), Pr(z) and the target's phi of z (NaN Pr(z): z left out)."""
        pz_target = target_phi(population_target, name="population_target", n=len(pr_z), queries=1)[:, 0]
        used = ~np.isnan(pr_z)
        if not used.any():
            raise ValueError("no population sample z has an OUT signal")
        self.gamma_ = self.gamma
        self.pr_x_ = np.maximum(pr_x, TINY)
        self.ratio_z_ = np.sort(probability(pz_target[used]) / np.maximum(pr_z[used], TINY))
        self.n_population_ = int(used.sum())

    def ratio(self, target: ArrayLike) -> np.ndarray:
        """ratio(x) = Pr(x | theta) / Pr(x) of the fitted samples."""
        self._check_fitted()
        phi = target_phi(target, n=len(self.pr_x_), queries=1)[:, 0]
        return probability(phi) / self.pr_x_

    def predict_proba(self, target: ArrayLike) -> np.ndarray:
        """score(x): the fraction of population z with ratio(x) / ratio(z) >= gamma."""
        dominated = np.searchsorted(self.ratio_z_, self.ratio(target) / self.gamma_, side="right")
        return dominated / self.n_population_


class RMIAOnline(_RMIA):
    """Online RMIA over reference models trained on halves of the target's pool. Fitted: ``pr_x_`` (n,),
    ``ratio_z_`` (sorted), ``gamma_``, ``n_population_``, ``n_models_``."""

    name: ClassVar[str] = "rmia"

    def fit(self, reference: ArrayLike, population_phi: ArrayLike,
            population_target: ArrayLike) -> "RMIAOnline":
        """``reference``: phi (n, M) of the reference models on the n target samples;
        ``population_phi``: phi (n_z, M) of the same models on the population z (module docstring);
        ``population_target``: phi (n_z,) of the target model on z."""
        phi_x = _plain(reference, name="reference", allow_nan=False)
        phi_z = _plain(population_phi, name="population_phi", allow_nan=False)
        if phi_z.shape[1] != phi_x.shape[1]:
            raise ValueError(f"population_phi has {phi_z.shape[1]} models, reference {phi_x.shape[1]}")
        self.n_models_ = phi_x.shape[1]
        self._fit_ratios(pr_x=probability(phi_x).mean(axis=1), pr_z=probability(phi_z).mean(axis=1),
                         population_target=population_target)
        return self


class RMIAOffline(_RMIA):
    """Offline RMIA over OUT reference models (the shadows). ``a`` fixed, or None to calibrate it in
    ``fit``. Fitted: ``a_``, ``calibration_auc_`` (mean AUC per grid value, empty when a was given),
    ``pr_x_``, ``ratio_z_``, ``gamma_``, ``n_population_``, ``n_models_``."""

    name: ClassVar[str] = "rmia_offline"

    def __init__(self, *, gamma: float = 1.0, a: float | None = None,
                 a_grid: Sequence[float] = A_GRID) -> None:
        super().__init__(gamma=gamma)
        if a is not None and not 0.0 <= a <= 1.0:
            raise ValueError(f"a={a!r} must lie in [0, 1]")
        if not a_grid or not all(0.0 <= value <= 1.0 for value in a_grid):
            raise ValueError(f"a_grid={a_grid!r} must be values in [0, 1]")
        self.a, self.a_grid = a, tuple(a_grid)

    def fit(self, out_phi: ArrayLike, population_out_phi: ArrayLike, population_target: ArrayLike,
            *, calibration: ArrayLike | None = None, calibration_inside: ArrayLike | None = None
            ) -> "RMIAOffline":
        """``out_phi``: phi (n, M) of OUT models on the n target samples (NaN where a model trained
        on a sample); ``population_out_phi``: phi (n_z, M) of the same models on z, NaN where IN;
        ``population_target``: phi (n_z,) of the target on z. Unless ``a`` was given,
        ``calibration`` and ``calibration_inside`` go to ``calibrate_offline_a``."""
        phi_x = _plain(out_phi, name="out_phi", allow_nan=True)
        phi_z = _plain(population_out_phi, name="population_out_phi", allow_nan=True)
        if phi_z.shape[1] != phi_x.shape[1]:
            raise ValueError(f"population_out_phi has {phi_z.shape[1]} models, "
                             f"out_phi {phi_x.shape[1]}")
        if np.isnan(phi_x).all(axis=1).any():
            raise ValueError("every target sample needs at least one OUT signal")
        if self.a is not None:
            self.a_, self.calibration_auc_ = float(self.a), {}
        elif calibration is None or calibration_inside is None:
            raise ValueError("rmia_offline: pass calibration and calibration_inside, or fix a")
        else:
            self.a_, self.calibration_auc_ = calibrate_offline_a(calibration, calibration_inside,
                                                                 grid=self.a_grid)
        self.n_models_ = phi_x.shape[1]
        # A z without an OUT signal gets Pr(z) = NaN and is left out in _fit_ratios.
        self._fit_ratios(pr_x=offline_probability(out_mean(probability(phi_x)), self.a_),
                         pr_z=offline_probability(out_mean(probability(phi_z)), self.a_),
                         population_target=population_target)
        return self
