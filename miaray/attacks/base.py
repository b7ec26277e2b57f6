"""The estimator interface every membership inference attack implements (sklearn style).

fit(shadow_signals, membership) learns from shadow data only; predict_proba(target_signals) gives a
membership score (higher = more likely member); predict gives 0/1 (1 = member). Fitted state lives
in attributes whose names end in "_".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from miaray.attacks.signals import Signals


def as_membership(membership: np.ndarray | torch.Tensor | list[int], n: int) -> np.ndarray:
    """membership as an int64 0/1 numpy vector of length n (1 = member); rejects anything else."""
    values = membership.detach().cpu().numpy() if isinstance(membership, torch.Tensor) else np.asarray(membership)
    values = values.astype(np.int64).reshape(-1)
    if len(values) != n:
        raise ValueError(f"membership has {len(values)} entries for {n} signals")
    if not np.isin(values, (0, 1)).all():
        raise ValueError("membership must contain only 0 (non-member) and 1 (member)")
    return values


class Decider(ABC):
    """What every attack shares once it scores: predict_proba gives a membership score per sample (higher
    = more likely member), predict the 0/1 decision at `decision_score`; fitted state lives in attributes
    ending in "_". `fit_call` says, in the not-fitted error, what to call."""

    name: ClassVar[str]
    label_only: ClassVar[bool] = False
    # predict(s) = predict_proba(s) >= decision_score
    decision_score: ClassVar[float] = 0.5
    fit_call: ClassVar[str] = "fit(shadow_signals, membership)"

    @abstractmethod
    def predict_proba(self, target) -> np.ndarray:
        """Membership score per sample, float64, higher = more likely member."""

    def predict(self, target) -> np.ndarray:
        """0/1 membership decision per sample (1 = member)."""
        return self.predict_from_scores(self.predict_proba(target))

    def predict_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """The 0/1 decisions for scores returned by predict_proba (saves a second pass)."""
        return (np.asarray(scores) >= self.decision_score).astype(np.int64)

    def _check_fitted(self) -> None:
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call {self.fit_call}")


class Attack(Decider):
    """Base class of the paper's attacks: subclasses implement fit and predict_proba on `Signals` and
    set the class attributes."""

    @abstractmethod
    def fit(self, shadow_signals: Signals, membership: np.ndarray) -> "Attack":
        """Learn from shadow signals and their membership (1 = member); returns self."""

    @abstractmethod
    def predict_proba(self, target_signals: Signals) -> np.ndarray:
        """Membership score per sample, float64, higher = more likely member."""

    def score(self, signals: Signals, membership: np.ndarray) -> float:
        """Accuracy of predict against the true membership."""
        truth = as_membership(membership, len(signals))
        return float(np.mean(self.predict(signals) == truth))
