"""LiRA (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022).

For each target sample x, the reference models' phi(x) (``miaray.attacks.phi``) are modelled as Gaussians:
N(mu_in, s_in^2) over the models that trained on x, N(mu_out, s_out^2) over those that did not.

- online (``lira``):          score = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)
- offline (``lira_offline``): score = log P(phi_out < phi), phi_out ~ N(mu_out, s_out^2), i.e.
                              log Phi((phi - mu_out) / s_out) with Phi the standard normal CDF.

phi is the target model's phi(x). Offline uses OUT models only (for a target sample, the shadows), and
reports the log of the one-sided probability: P itself rounds to 1.0 beyond 8 standard deviations,
which would tie the strongest members, while the log separates them up to about 38.

Variances: per sample (ddof 1) when there are at least ``global_variance_below`` reference models
(64, as in the LiRA paper); otherwise one global variance per side, the pooled within-sample variance
sum_x sum_m (phi_xm - mu_x)^2 / sum_x (m_x - 1) over that side's cells, which estimates the same
per-sample spread from all samples at once. When every sample has a single model on a side (two
references online, one offline) there is no within-sample spread to pool, and the side's variance of
all its values is used instead (what LiRA's code computes in every case).

Query augmentations: with A queries per sample, Gaussians are fitted per query, as LiRA does; online,
the score is the mean over queries of the per-query log-likelihood ratio; offline, it is log Phi of
the mean over queries of the standardised deviation (phi_a - mu_out,a) / s_out,a: with A = 1 both
are the formulas above.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from scipy.special import log_ndtr

from miaray.attacks.ratio_attack import ArrayLike, RatioAttack, as_array, models_phi, target_phi

GLOBAL_VARIANCE_BELOW = 64  # reference models; fewer: one variance per side (LiRA paper)
SIGMA_FLOOR = 1e-12         # a side whose values are all equal still gives a finite, steep score


def fit_gaussians(phi: np.ndarray, *, global_variance: bool, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per sample and query of ``phi`` (n, M, A), NaN cells left out:
    (mu, sigma), each (n, A). ``side`` names the side ("IN", "OUT") in errors."""
    counts = np.sum(~np.isnan(phi), axis=1)  # (n, A): models on this side, per sample
    if (counts == 0).any():
        missing = int(np.sum(counts.min(axis=1) == 0))
        raise ValueError(f"{missing} sample(s) have no {side} reference model; LiRA needs at least one "
                         f"per sample (online: an even number of paired reference models gives every "
                         "sample as many IN as OUT models)")
    mu = np.nanmean(phi, axis=1)
    if global_variance:
        squares = np.nansum((phi - mu[:, None, :]) ** 2)
        dof = int(np.sum(counts - 1))
        variance = squares / dof if dof > 0 else np.nanvar(phi)
        sigma = np.full_like(mu, math.sqrt(variance))
    else:
        if (counts < 2).any():
            raise ValueError(f"a per-sample {side} variance needs at least two {side} models per sample")
        sigma = np.nanstd(phi, axis=1, ddof=1)
    return mu, np.maximum(sigma, SIGMA_FLOOR)


def log_normal_density(value: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log N(value; mu, sigma^2) up to the constant -log sqrt(2 pi), which cancels in a ratio."""
    return -0.5 * ((value - mu) / sigma) ** 2 - np.log(sigma)


class _LiRA(RatioAttack):
    def __init__(self, *, global_variance_below: int = GLOBAL_VARIANCE_BELOW) -> None:
        if global_variance_below < 0:
            raise ValueError(f"global_variance_below={global_variance_below!r} must be >= 0")
        self.global_variance_below = global_variance_below

    def _fit_side(self, phi: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
        self.n_models_ = phi.shape[1]
        self.global_variance_ = self.n_models_ < self.global_variance_below
        return fit_gaussians(phi, global_variance=self.global_variance_, side=side)


class LiRAOnline(_LiRA):
    """Online LiRA: per-sample IN and OUT Gaussians over reference models trained on halves of the
    target's pool. Fitted: ``mu_in_``, ``sigma_in_``, ``mu_out_``, ``sigma_out_`` (n, A),
    ``n_models_``, ``global_variance_``."""

    name: ClassVar[str] = "lira"
    decision_score: ClassVar[float] = 0.0  # member when the likelihood ratio is at least 1

    def fit(self, reference: ArrayLike, inside: ArrayLike) -> "LiRAOnline":
        """``reference``: phi of M reference models on the n target samples, (n, M) or (n, M, A);
        ``inside``: (n, M), True where the model trained on the sample."""
        phi = models_phi(reference, name="reference", allow_nan=False)
        mask = as_array(inside, name="inside", ndim=(2,), dtype=bool)
        if mask.shape != phi.shape[:2]:
            raise ValueError(f"inside has shape {mask.shape}; expected (n, M) = {phi.shape[:2]}")
        self.mu_in_, self.sigma_in_ = self._fit_side(np.where(mask[:, :, None], phi, np.nan), "IN")
        self.mu_out_, self.sigma_out_ = self._fit_side(np.where(mask[:, :, None], np.nan, phi), "OUT")
        return self

    def predict_proba(self, target: ArrayLike) -> np.ndarray:
        """Mean over queries of log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)."""
        self._check_fitted()
        phi = target_phi(target, n=len(self.mu_in_), queries=self.mu_in_.shape[1])
        ratio = (log_normal_density(phi, self.mu_in_, self.sigma_in_)
                 - log_normal_density(phi, self.mu_out_, self.sigma_out_))
        return ratio.mean(axis=1)


class LiRAOffline(_LiRA):
    """Offline LiRA: a per-sample OUT Gaussian over reference models that never trained on the sample
    (the shadows). Fitted: ``mu_out_``, ``sigma_out_`` (n, A), ``n_models_``, ``global_variance_``."""

    name: ClassVar[str] = "lira_offline"
    decision_score: ClassVar[float] = math.log(0.5)  # member when phi lies above the OUT mean

    def fit(self, out_phi: ArrayLike) -> "LiRAOffline":
        """``out_phi``: phi of M reference models on the n target samples, (n, M) or (n, M, A),
        NaN where a model trained on the sample (``out_only``); every sample needs one OUT value."""
        phi = models_phi(out_phi, name="out_phi", allow_nan=True)
        self.mu_out_, self.sigma_out_ = self._fit_side(phi, "OUT")
        return self

    def predict_proba(self, target: ArrayLike) -> np.ndarray:
        """log Phi(mean over queries of (phi - mu_out) / s_out): log P(phi_out < phi) for one query."""
        self._check_fitted()
        phi = target_phi(target, n=len(self.mu_out_), queries=self.mu_out_.shape[1])
        return log_ndtr(((phi - self.mu_out_) / self.sigma_out_).mean(axis=1))
