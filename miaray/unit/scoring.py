"""What a unit keeps of an attack's scores on its target, whatever the attack (the paper's, a likelihood-ratio
or a two-model one): the metrics, the ROC points, the per-sample scores, and whether the attack collapsed.

A collapsed attack is not a result: one whose scores on the target are all equal (its fit learned nothing
it can rank by) or not finite (its fit diverged). Its metrics are those of its scores (0.5 / 0 / 0.5 for
constant ones; NaN where they are not finite, with the set's sizes only)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_curve

from miaray.attacks.base import Decider
from miaray.attacks.metrics import METRICS, evaluate_scores

CONSTANT = "constant scores on the target"
DIVERGED = "non-finite scores on the target (its fit diverged)"


def scored(attack: Decider, scores: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """The fitted `attack`'s `scores` on the target (in the order of `truth`, 1 = member) as a unit keeps
    them: `metrics`, ROC points `fpr` and `tpr`, `scores` (float32) and `collapsed` (CONSTANT, DIVERGED, or
    '' for a result)."""
    kept = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    if not np.isfinite(scores).all():  # no ROC to draw, no metric to compute: only the set's sizes
        metrics = {**{m: math.nan for m in METRICS}, "n_members": int((truth == 1).sum()),
                   "n_nonmembers": int((truth == 0).sum())}
        empty = torch.zeros(0, dtype=torch.float64)
        return {"metrics": metrics, "fpr": empty, "tpr": empty, "collapsed": DIVERGED, "scores": kept}
    fpr, tpr, _ = roc_curve(truth, scores)
    return {"metrics": evaluate_scores(attack, scores, truth), "fpr": torch.from_numpy(fpr),
            "tpr": torch.from_numpy(tpr), "collapsed": CONSTANT if np.ptp(scores) == 0 else "", "scores": kept}
