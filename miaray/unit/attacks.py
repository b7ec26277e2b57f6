"""A unit's attacks on one target: the paper's fitted on the shadows' signals, the likelihood-ratio attacks
(LiRA, RMIA) on the stored phi, the two-model attacks on the (original, pruned) pairs; their rows, ROC
points, budget lines and per-sample scores."""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np

from miaray.attacks import make_attack
from miaray.attacks.signals import Signals
from miaray.results import RENAMED_COLUMNS
from miaray.unit.context import UnitContext, membership
from miaray.unit.pairs import UnitPairs
from miaray.unit.ratio import RatioPhi, run_ratio_attack
from miaray.unit.scoring import CONSTANT, scored
from miaray.vocabulary import PAIR_ATTACKS, RATIO_ATTACKS, TRAINED_ATTACKS


def renamed(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored result's parameters or budget line under the current column names (`RENAMED_COLUMNS`): a
    result stored before a rename keeps the old ones."""
    return {RENAMED_COLUMNS.get(name, name): value for name, value in stored.items()}


def attack_rows(ctx: UnitContext, *, target: Signals, shadows: dict[str, Signals], attacks: tuple[str, ...],
                cache_key: Callable[[str], dict[str, Any]] | None = None, phi: RatioPhi | None = None,
                pairs: UnitPairs | None = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, np.ndarray]]:
    """Fit each attack on the shadows' (or reference models') signals only, score it on the target.

    The paper's attacks fit on the pooled shadow signals; the likelihood-ratio attacks (LiRA, RMIA) read
    `phi` (`miaray.unit.ratio`) at every budget; the two-model attacks fit on the shadows'
    (original, pruned) pairs and score the target's (`pairs`, `miaray.unit.pairs`), their rows and ROC
    points marked target_model 'both'. With `cache_key`, an attack's result (metrics,
    ROC points, budget) is kept in the store under `cache_key(attack)` and loaded, not recomputed, by
    every later unit that asks for the same key. Returns (one metrics row per attack, ROC points per
    attack, the likelihood-ratio attacks' budget lines, each attack's per-sample scores on the target in the
    order of `membership`: float32, absent for a result stored before they were kept); `time_attack_s`
    is what this call spent (loading, for a stored result).

    An attack that collapsed (`miaray.unit.scoring`) keeps its row, marked `attack_status` 'collapsed' with
    the reason in `attack_note` (else 'ok' and ''), and a warning names it; best-attack summaries
    (`miaray.sweep.trials.headline`, the defense search's objective) leave it out. A result stored before
    this mark is judged by its ROC: constant scores give the two points (0, 0) and (1, 1) only."""
    truth = membership(ctx, "target")
    on_device: dict[str, Any] = {}

    def compute(name: str) -> tuple[dict[str, Any], dict]:
        if name in RATIO_ATTACKS:
            return run_ratio_attack(name, phi, truth), {}
        if name in PAIR_ATTACKS:
            attack = pairs.fitted(name)
            scores = attack.predict_proba(pairs.target)
        else:
            if not on_device:  # pooled once, and only when an attack must actually run
                # Attack models train where the data lives (the GPU when there is one).
                on_device.update(pooled=Signals.concat(list(shadows.values())).to(ctx.device),
                                 membership=np.concatenate([membership(ctx, role) for role in shadows]),
                                 target=target.to(ctx.device))
            params = {"epochs": ctx.config.attack_epochs} if ctx.config.attack_epochs and name in TRAINED_ATTACKS else {}
            attack = make_attack(name, seed=ctx.config.seed, **params).fit(on_device["pooled"], on_device["membership"])
            scores = attack.predict_proba(on_device["target"])
        return scored(attack, scores, truth), {}

    rows, roc, budget, per_sample = [], [], [], {}
    for name in attacks:
        start = time.perf_counter()
        result, _ = (compute(name) if cache_key is None
                     else ctx.store.get_or_build(cache_key(name), lambda: compute(name)))
        metrics = result["metrics"]
        params, lines = renamed(result.get("params", {})), [renamed(line) for line in result.get("budget", [])]
        collapsed = result.get("collapsed")
        if collapsed is None:  # a result stored before the mark: read its ROC
            collapsed = CONSTANT if len(result["fpr"]) == 2 else ""
        if collapsed:
            warnings.warn(f"attack {name} collapsed ({collapsed}"
                          f"{'' if cache_key is None else ', unpruned target'}): its row is marked "
                          "attack_status='collapsed' and left out of the best attack", UserWarning, stacklevel=2)
        both = {"target_model": "both"} if name in PAIR_ATTACKS else {}  # else the caller's target model
        rows.append({"attack": name, **metrics, **params,
                     "attack_status": "collapsed" if collapsed else "ok", "attack_note": collapsed,
                     "time_attack_s": time.perf_counter() - start, **both})
        roc += [{"attack": name, "fpr": f, "tpr": t, **both}
                for f, t in zip(result["fpr"].tolist(), result["tpr"].tolist())]
        budget += [{"attack": name, **line} for line in lines]
        if "scores" in result:
            per_sample[name] = result["scores"].numpy()
        ctx.log(f"attack {name:12s} acc {metrics['attack_acc']:.3f}  auc {metrics['attack_auc']:.3f}"
                + (f"  ({params['models_used']} models)" if params else "")
                + ("" if cache_key is None else " (unpruned target)") + (f"  COLLAPSED: {collapsed}" if collapsed else ""))
    return rows, roc, budget, per_sample
