"""Two-model attacks: the attacker holds both the original and its pruned version, as when a dense model
and its compressed copy are both published (CompLeak, Li et al. 2026).

Both models are queried on the same samples; each gives phi = log(p_y / (1 - p_y)), LiRA's logit-scaled
true-class confidence (`miaray.attacks.phi`, stored per model, never derived from rounded
probabilities). A `PairPhi` holds the two columns. Fitting uses the shadow pairs only: each shadow's
original and its pruned copy on that shadow's members and non-members.

- pair_diff: the per-sample change phi_pruned - phi_original, oriented on the shadow pairs (members'
  phi may rise or fall more under pruning and fine-tuning) and thresholded where the shadows' balanced
  accuracy is highest (`best_threshold`, a sort and a scan). Identical models give constant scores:
  chance.
- pair_lr: a logistic regression on (phi_original, phi_pruned, their change, its size), standardised on
  the shadows, classes weighted to balance: a learned combination of both models' signals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from miaray.attacks.base import Decider, as_membership
from miaray.attacks.threshold import best_threshold


@dataclass(frozen=True)
class PairPhi:
    """phi of the original and of the pruned model on the same samples, each (n,)."""

    original: np.ndarray
    pruned: np.ndarray

    def __post_init__(self) -> None:
        original, pruned = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (self.original, self.pruned))
        if len(original) != len(pruned):
            raise ValueError(f"the two models' phi cover {len(original)} and {len(pruned)} samples")
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "pruned", pruned)

    def __len__(self) -> int:
        return len(self.original)

    @property
    def change(self) -> np.ndarray:
        return self.pruned - self.original

    @classmethod
    def concat(cls, pairs: list["PairPhi"]) -> "PairPhi":
        return cls(np.concatenate([p.original for p in pairs]), np.concatenate([p.pruned for p in pairs]))


class PairAttack(Decider):
    """An attack on (original, pruned) pairs: fit on the shadow pairs, score the target's pair."""

    fit_call = "fit(shadow_pairs, membership)"

    def fit(self, shadow_pairs: PairPhi, membership: np.ndarray) -> "PairAttack":
        raise NotImplementedError


class PairDifferenceAttack(PairAttack):
    """Threshold on the change of phi from the original to the pruned model, oriented on the shadows.

    predict_proba returns the oriented change minus the threshold (>= 0 means member), as the threshold
    attacks do; its ranking (AUC, TPR at low FPR) is that of the oriented change."""

    name: ClassVar[str] = "pair_diff"
    decision_score: ClassVar[float] = 0.0

    def fit(self, shadow_pairs: PairPhi, membership: np.ndarray) -> "PairDifferenceAttack":
        member = as_membership(membership, len(shadow_pairs)).astype(bool)
        change = shadow_pairs.change
        rise, rise_acc = best_threshold(change[member], change[~member])
        fall, fall_acc = best_threshold(-change[member], -change[~member])
        # Members' phi may rise (fine-tuning on them) or fall (pruning forgets them): the better side wins,
        # a rise on a tie.
        self.sign_, self.threshold_ = (1.0, rise) if rise_acc >= fall_acc else (-1.0, fall)
        return self

    def predict_proba(self, target_pairs: PairPhi) -> np.ndarray:
        self._check_fitted()
        return self.sign_ * target_pairs.change - self.threshold_


class PairLogisticAttack(PairAttack):
    """Logistic regression on both models' phi, their change and its size; classes balanced."""

    name: ClassVar[str] = "pair_lr"

    @staticmethod
    def features(pairs: PairPhi) -> np.ndarray:
        return np.column_stack([pairs.original, pairs.pruned, pairs.change, np.abs(pairs.change)])

    def fit(self, shadow_pairs: PairPhi, membership: np.ndarray) -> "PairLogisticAttack":
        truth = as_membership(membership, len(shadow_pairs))
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
        self.model_.fit(self.features(shadow_pairs), truth)
        return self

    def predict_proba(self, target_pairs: PairPhi) -> np.ndarray:
        self._check_fitted()
        return self.model_.predict_proba(self.features(target_pairs))[:, 1].astype(np.float64)


PAIR_ATTACK_CLASSES: dict[str, type[PairAttack]] = {cls.name: cls for cls in (PairDifferenceAttack,
                                                                             PairLogisticAttack)}
