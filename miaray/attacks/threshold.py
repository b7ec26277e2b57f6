"""Metric-based threshold attacks (Song & Mittal): Conf, Xent, Mentr (per-class), Top1-Conf (global).

Each attack maps a sample to a value oriented so that higher = member (confidence as is, losses
negated) and predicts member iff value >= threshold. A threshold maximises the balanced accuracy
0.5 * (TPR + TNR) on shadow data over every distinct shadow value; among equally good thresholds the
smallest wins. Per-class thresholds fall back to the global one for classes that lack members or
non-members in the shadow data.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from miaray.attacks.base import Attack, as_membership
from miaray.attacks.signals import Signals

LOG_CLAMP = 1e-30  # log(p) is taken of max(p, LOG_CLAMP): softmax outputs can underflow to 0


def _clamped_log(values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(values, LOG_CLAMP))


def true_class_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p_y: the softmax value of the ground-truth class."""
    return probs[np.arange(len(labels)), labels]


def cross_entropy_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log p_y (clamped)."""
    return -_clamped_log(true_class_confidence(probs, labels))


def modified_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal: -(1 - p_y) log p_y - sum_{t != y} p_t log(1 - p_t) (logs clamped)."""
    p_y = true_class_confidence(probs, labels)
    is_true = np.zeros(probs.shape, dtype=bool)
    is_true[np.arange(len(labels)), labels] = True
    others = np.where(is_true, 0.0, probs * _clamped_log(1.0 - probs)).sum(axis=1)
    return -(1.0 - p_y) * _clamped_log(p_y) - others


def _balanced_accuracy(members_at_or_above: np.ndarray, nonmembers_below: np.ndarray,
                       n_members: int, n_nonmembers: int) -> np.ndarray:
    # Shared by both searches so that equal counts give bit-identical objectives (same argmax).
    return 0.5 * (members_at_or_above / n_members + nonmembers_below / n_nonmembers)


def _check_scores(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    b = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("a threshold needs at least one member and one non-member score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("threshold search got non-finite scores")
    return a, b


def best_threshold(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[float, float]:
    """Sort and scan, O(n log n): (smallest threshold t maximising balanced accuracy of
    "member iff score >= t" over the distinct scores, that balanced accuracy)."""
    a, b = _check_scores(member_scores, nonmember_scores)
    values = np.concatenate([a, b])
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    is_member = (order < len(a)).astype(np.int64)
    # Position of the first occurrence of each distinct value: everything before it is < the value.
    first = np.flatnonzero(np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]]))
    members_below = np.concatenate([[0], np.cumsum(is_member)])[first]
    acc = _balanced_accuracy(len(a) - members_below, first - members_below, len(a), len(b))
    best = int(np.argmax(acc))  # first maximum = smallest threshold
    return float(sorted_values[first[best]]), float(acc[best])


def best_threshold_exhaustive(member_scores: np.ndarray, nonmember_scores: np.ndarray, *,
                              max_block: int = 1 << 24) -> tuple[float, float]:
    """Reference search (quadratic, as in the authors' code but vectorised in blocks): try every
    distinct score as threshold; same objective and tie-break as best_threshold."""
    a, b = _check_scores(member_scores, nonmember_scores)
    candidates = np.unique(np.concatenate([a, b]))
    rows = max(1, max_block // max(len(a), len(b)))
    acc = np.empty(len(candidates))
    for start in range(0, len(candidates), rows):
        t = candidates[start:start + rows, None]
        acc[start:start + rows] = _balanced_accuracy(np.count_nonzero(a[None, :] >= t, axis=1),
                                                     np.count_nonzero(b[None, :] < t, axis=1), len(a), len(b))
    best = int(np.argmax(acc))
    return float(candidates[best]), float(acc[best])


class ThresholdAttack(Attack):
    """Member iff metric value >= threshold of the sample's class (or the global threshold).

    predict_proba returns the margin value - threshold (>= 0 means member): a real-valued score,
    not a probability, comparable across classes for ROC curves. The ROC, and so attack_auc,
    tpr_at_fpr_* and max_advantage (miaray.attacks.metrics), rank this per-class margin, not the raw
    value: with per-class thresholds the two orders differ across classes. tpr, fpr, attack_acc and
    advantage are those of the decision margin >= 0. Deterministic (no seed).
    """

    per_class: ClassVar[bool] = True
    decision_score: ClassVar[float] = 0.0

    @staticmethod
    @abstractmethod
    def values(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The attack's metric per sample, oriented so that higher = member."""

    def _values(self, signals: Signals) -> tuple[np.ndarray, np.ndarray]:
        probs = signals.probs.detach().cpu().double().numpy()
        labels = signals.labels.detach().cpu().numpy()
        return self.values(probs, labels), labels

    def fit(self, shadow_signals: Signals, membership: np.ndarray) -> "ThresholdAttack":
        member = as_membership(membership, len(shadow_signals)).astype(bool)
        values, labels = self._values(shadow_signals)
        global_threshold, _ = best_threshold(values[member], values[~member])
        thresholds = np.full(shadow_signals.num_classes, global_threshold)
        if self.per_class:
            for c in range(shadow_signals.num_classes):
                in_class = labels == c
                if (in_class & member).any() and (in_class & ~member).any():
                    thresholds[c], _ = best_threshold(values[in_class & member], values[in_class & ~member])
        self.global_threshold_ = global_threshold
        self.thresholds_ = thresholds
        return self

    def predict_proba(self, target_signals: Signals) -> np.ndarray:
        self._check_fitted()
        values, labels = self._values(target_signals)
        return values - self.thresholds_[labels]


class ConfAttack(ThresholdAttack):
    """Conf (Yeom et al.): ground-truth-class confidence p_y, per-class threshold."""

    name = "conf"

    @staticmethod
    def values(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return true_class_confidence(probs, labels)


class XentAttack(ThresholdAttack):
    """Xent: cross-entropy loss -log p_y (lower = member), per-class threshold on its negation.

    log p_y is strictly increasing in p_y, so Xent makes Conf's per-class threshold decisions (equal
    attack_acc expected); its AUC may differ, as the margins are pooled across classes.
    """

    name = "xent"

    @staticmethod
    def values(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return -cross_entropy_loss(probs, labels)


class MentrAttack(ThresholdAttack):
    """Mentr (Song & Mittal): modified entropy (lower = member), per-class threshold on its negation."""

    name = "mentr"

    @staticmethod
    def values(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return -modified_entropy(probs, labels)


class Top1ConfAttack(ThresholdAttack):
    """Top1-Conf (Salem et al.): highest confidence max_c p_c, one global threshold."""

    name = "top1_conf"
    per_class = False

    @staticmethod
    def values(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return probs.max(axis=1)
