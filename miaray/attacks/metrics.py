"""Privacy metrics of one attack on a (balanced) target membership set.

attack_acc: accuracy of the attack's own 0/1 predictions. From the ROC of the scores (sklearn):
attack_auc, tpr_at_fpr_0.01 and tpr_at_fpr_0.001 (largest TPR among ROC points with FPR <= level),
advantage (max |TPR - FPR| over the ROC points).

Label-only attacks (BlindMI) have no scores: their ROC is the one point (FPR, TPR) of the
predictions joined to (0, 0) and (1, 1). Then attack_auc = (1 + TPR - FPR) / 2, the balanced
accuracy of the predictions; advantage = |TPR - FPR| at that point; tpr_at_fpr_x = TPR if FPR <= x,
else 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from miaray.attacks.base import Attack, as_membership
from miaray.attacks.signals import Signals

FPR_LEVELS = (0.01, 0.001)


def attack_metrics(membership: np.ndarray, *, scores: np.ndarray | None = None, predictions: np.ndarray,
                   label_only: bool = False) -> dict[str, float]:
    """The metrics above; scores are required unless label_only, where they must be omitted."""
    truth = as_membership(membership, len(predictions))
    if len(np.unique(truth)) != 2:
        raise ValueError("membership must contain both members and non-members")
    predictions = np.asarray(predictions).reshape(-1)
    if label_only:
        if scores is not None:
            raise ValueError("a label-only attack has no scores: pass predictions only")
        scores = predictions
    elif scores is None:
        raise ValueError("scores are required unless label_only=True")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(truth):
        raise ValueError(f"{len(scores)} scores for {len(truth)} samples")
    fpr, tpr, _ = roc_curve(truth, scores)
    result = {"attack_acc": float(np.mean(predictions == truth)),
              "attack_auc": float(roc_auc_score(truth, scores))}
    for level in FPR_LEVELS:
        result[f"tpr_at_fpr_{level}"] = float(tpr[fpr <= level].max())
    result["advantage"] = float(np.max(np.abs(tpr - fpr)))
    return result


def evaluate_attack(attack: Attack, target_signals: Signals, membership: np.ndarray) -> dict[str, float]:
    """attack_metrics of a fitted attack on target signals with known membership."""
    return evaluate_scores(attack, attack.predict_proba(target_signals), membership)


def evaluate_scores(attack: Attack, scores: np.ndarray, membership: np.ndarray) -> dict[str, float]:
    """attack_metrics of a fitted attack's scores (its predict_proba) on targets of known membership."""
    return attack_metrics(membership, scores=None if attack.label_only else scores,
                          predictions=attack.predict_from_scores(scores), label_only=attack.label_only)
