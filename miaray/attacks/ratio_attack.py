"""The interface of the likelihood-ratio attacks (LiRA, RMIA) and the arrays they take.

The paper's attacks (``Attack``) fit one rule on pooled shadow signals and score any target sample.
LiRA and RMIA instead compare the target model with M reference models *on the same sample*: ``fit``
takes the reference models' signals of the n target samples (and, for RMIA, of population samples),
``predict_proba`` the target model's signals of those n samples, row for row (row i is one sample).

Arrays (numpy or CPU torch; used as float64), all of the logit-scaled confidence phi
(``miaray.attacks.phi``):

- target phi: (n,) or (n, A) for A query augmentations (column 0 the plain query);
- reference phi: (n, M) or (n, M, A), one column per reference model;
- inside: (n, M) bool, True where reference model m trained on sample i (online attacks only).

Offline attacks take OUT signals only, so no IN signal can reach them: their models' phi arrays hold NaN
where a model trained on the sample (``out_only`` blanks those cells).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from miaray.attacks.base import Decider

ArrayLike = Any  # numpy array, CPU torch tensor or nested lists


def as_array(values: ArrayLike, *, name: str, ndim: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """``values`` as a numpy array of ``dtype`` with one of the allowed numbers of dimensions."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=dtype)
    if array.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, "
                         f"got shape {array.shape}")
    return array


def models_phi(values: ArrayLike, *, name: str, n: int | None = None, allow_nan: bool) -> np.ndarray:
    """The models' phi as (n, M, A); NaN only where ``allow_nan`` (an OUT-only array), never infinities."""
    phi = as_array(values, name=name, ndim=(2, 3))
    phi = phi[:, :, None] if phi.ndim == 2 else phi
    if n is not None and len(phi) != n:
        raise ValueError(f"{name} has {len(phi)} rows for {n} samples")
    if np.isinf(phi).any() or (not allow_nan and np.isnan(phi).any()):
        raise ValueError(f"{name} must be finite{' or NaN' if allow_nan else ''}: compute phi from logits "
                         "(miaray.attacks.phi.scaled_confidence)")
    return phi


def target_phi(values: ArrayLike, *, name: str = "target_phi", n: int | None = None,
               queries: int | None = None) -> np.ndarray:
    """Target phi as (n, A), finite."""
    phi = as_array(values, name=name, ndim=(1, 2))
    phi = phi[:, None] if phi.ndim == 1 else phi
    if n is not None and len(phi) != n:
        raise ValueError(f"{name} has {len(phi)} rows; expected {n}, one per sample (row-aligned)")
    if queries is not None and phi.shape[1] != queries:
        raise ValueError(f"{name} has {phi.shape[1]} queries per sample, the references {queries}")
    if not np.isfinite(phi).all():
        raise ValueError(f"{name} must be finite: compute phi from logits")
    return phi


def out_only(phi: ArrayLike, inside: ArrayLike) -> np.ndarray:
    """The models' phi (n, M) or (n, M, A) with NaN wherever ``inside`` (n, M) says the model trained on
    the sample: the OUT-only array an offline attack takes."""
    values = as_array(phi, name="phi", ndim=(2, 3))
    mask = as_array(inside, name="inside", ndim=(2,), dtype=bool)
    if mask.shape != values.shape[:2]:
        raise ValueError(f"inside has shape {mask.shape}, phi {values.shape}: expected (n, M) for both")
    return np.where(mask if values.ndim == 2 else mask[:, :, None], np.nan, values)


class RatioAttack(Decider):
    """A fitted likelihood-ratio attack scores the target model's phi of the samples it was fitted on
    (``predict_proba``, ``predict`` as every `Decider`). ``label_only`` is False: the metrics treat
    these like any scored attack.
    """

    decision_score: ClassVar[float]  # set by each attack (see lira.py, rmia.py)
    fit_call: ClassVar[str] = "fit with the models' phi"

    @abstractmethod
    def predict_proba(self, target: ArrayLike) -> np.ndarray:
        """Membership score per sample, float64."""
