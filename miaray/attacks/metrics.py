"""Privacy metrics of one attack on a target membership set (docs/science.md, Metrics of a row; since 2026-12-05).

At the attack's own decision (its 0/1 predictions: thresholds or classifier fitted on shadow data
only, never on the target's labels):

- tpr, fpr: fraction of members / non-members the attack calls members;
- attack_acc = 0.5 (tpr + 1 - fpr): balanced accuracy, so guessing (or calling everyone a member)
  scores 0.5 on any split (the paper's and Song & Mittal's definition);
- advantage = tpr - fpr (Yeom et al.), signed: an attack worse than guessing has a negative one.

From the ROC of the attack's scores on the target (sklearn's `roc_curve`):

- attack_auc: area under it. What it ranks is the attack's score (`predict_proba`); for the
  threshold attacks that is the margin over the fitted threshold (value minus its class's threshold
  for conf, xent and mentr; minus the one global threshold for top1_conf), not the raw value;
- tpr_at_fpr_0.01, tpr_at_fpr_0.001: the largest TPR among ROC points with FPR <= the level, over
  every threshold the scores offer (`drop_intermediate=False`: sklearn's default drops ROC points
  that lie on a line between two others, and where scores tie, such as a member and a non-member
  with the same score, those points are real thresholds; dropped, the TPR under a level is read off
  too few points and comes out low). A level below 1 / n_nonmembers cannot be measured on the set
  (its only ROC point there is FPR 0): NaN, not the TPR at zero false positives;
- max_advantage: max over the ROC points of TPR - FPR (>= 0, the point (0, 0) is on every ROC). An
  oracle upper bound: it picks the threshold with the target's membership labels, which the attacker
  never has.

n_members and n_nonmembers are the sizes of the two sets.

Label-only attacks (BlindMI) have no scores: their ROC is the one point (fpr, tpr) of the predictions
joined to (0, 0) and (1, 1). Then attack_auc = (1 + tpr - fpr) / 2 = attack_acc, max_advantage =
max(0, advantage), and tpr_at_fpr_x = tpr if fpr <= x, else 0 (NaN where x < 1 / n_nonmembers).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from miaray.attacks.base import Attack, as_membership
from miaray.attacks.signals import Signals

FPR_LEVELS = (0.01, 0.001)
# Every metric of a row, in the order people read them (tables, the search's per-attack columns).
METRICS = ("attack_acc", "tpr", "fpr", "advantage", "max_advantage", "attack_auc",
           *(f"tpr_at_fpr_{level}" for level in FPR_LEVELS), "n_members", "n_nonmembers")


def measurable_fpr(level: float, n_nonmembers: int) -> bool:
    """Whether an FPR of `level` can be told apart on `n_nonmembers` non-members: at least one false
    positive must fit under it (level >= 1 / n_nonmembers)."""
    return level * n_nonmembers >= 1 - 1e-9


def attack_metrics(membership: np.ndarray, *, scores: np.ndarray | None = None, predictions: np.ndarray,
                   label_only: bool = False) -> dict[str, float]:
    """The metrics above; scores are required unless label_only, where they must be omitted."""
    truth = as_membership(membership, len(predictions))
    if len(np.unique(truth)) != 2:
        raise ValueError("membership must contain both members and non-members")
    predictions = np.asarray(predictions).reshape(-1)
    if not np.isin(predictions, (0, 1)).all():
        raise ValueError("predictions must be 0 (non-member) or 1 (member)")
    if label_only:
        if scores is not None:
            raise ValueError("a label-only attack has no scores: pass predictions only")
        scores = predictions
    elif scores is None:
        raise ValueError("scores are required unless label_only=True")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(truth):
        raise ValueError(f"{len(scores)} scores for {len(truth)} samples")
    member = truth == 1
    n_members, n_nonmembers = int(member.sum()), int((~member).sum())
    tpr, fpr = float(predictions[member].mean()), float(predictions[~member].mean())
    roc_fpr, roc_tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    result = {"attack_acc": 0.5 * (tpr + 1.0 - fpr), "tpr": tpr, "fpr": fpr, "advantage": tpr - fpr,
              "max_advantage": float(np.max(roc_tpr - roc_fpr)),
              "attack_auc": float(roc_auc_score(truth, scores))}
    for level in FPR_LEVELS:
        result[f"tpr_at_fpr_{level}"] = (float(roc_tpr[roc_fpr <= level].max())
                                         if measurable_fpr(level, n_nonmembers) else float("nan"))
    result["n_members"], result["n_nonmembers"] = n_members, n_nonmembers
    return result


def evaluate_attack(attack: Attack, target_signals: Signals, membership: np.ndarray) -> dict[str, float]:
    """attack_metrics of a fitted attack on target signals with known membership."""
    return evaluate_scores(attack, attack.predict_proba(target_signals), membership)


def evaluate_scores(attack: Attack, scores: np.ndarray, membership: np.ndarray) -> dict[str, float]:
    """attack_metrics of a fitted attack's scores (its predict_proba) on targets of known membership."""
    return attack_metrics(membership, scores=None if attack.label_only else scores,
                          predictions=attack.predict_from_scores(scores), label_only=attack.label_only)
