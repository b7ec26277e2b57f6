"""Defenses applied while fine-tuning a pruned model (docs/science.md, Defenses); each is a `train.Defense`.

Basic (early stopping + L2) is the loop itself; PPB, DP-SGD and ADV override its hooks. DP-SGD
(`miaray.defenses.dp.DPDefense`) is imported when first made: Opacus adds 0.9-1.2 s per process
(`python -X importtime -c "import miaray.unit, opacus"`).
"""

from __future__ import annotations

from typing import Mapping

import torch

from miaray.config import ConfigError
from miaray.defenses.adv import ADVDefense
from miaray.defenses.ppb import PPBDefense, ppb_regularizer
from miaray.train import Defense
from miaray.vocabulary import DEFENSES, DEFENSE_PARAMS

__all__ = ["ADVDefense", "PPBDefense", "make_defense", "ppb_regularizer"]


def make_defense(name: str, params: Mapping[str, float], *, num_classes: int,
                 nonmembers: tuple[torch.Tensor, torch.Tensor] | None = None, seed: int = 0) -> Defense:
    """The defense `name` with `params` over the defaults of `DEFENSE_PARAMS[name]`.

    `nonmembers` (non-member examples, e.g. the validation split) is needed by ADV; DP re-estimates its
    frozen batch-norm statistics on its inputs when given.
    """
    if name not in DEFENSES:
        raise ConfigError(f"defense={name!r} is not valid; choose one of: {', '.join(DEFENSES)}")
    unknown = set(params) - set(DEFENSE_PARAMS[name])
    if unknown:
        raise ConfigError(f"defense {name!r} takes {sorted(DEFENSE_PARAMS[name])}, not {sorted(unknown)}")
    p = {**DEFENSE_PARAMS[name], **params}
    if name == "ppb":
        return PPBDefense(lam=p["lambda"], seed=seed)
    if name == "dp":
        from miaray.defenses.dp import DPDefense

        return DPDefense(noise_multiplier=p["noise_multiplier"], max_grad_norm=p["max_grad_norm"],
                         delta=p["delta"], seed=seed, calibration=None if nonmembers is None else nonmembers[0])
    if name == "adv":
        if nonmembers is None:
            raise ValueError("defense 'adv' needs a set of non-members (x, y)")
        if p["k"] != int(p["k"]):
            raise ConfigError(f"defense 'adv' k={p['k']!r} must be a whole number of steps")
        return ADVDefense(alpha=p["alpha"], k=int(p["k"]), num_classes=num_classes,
                          nonmembers=nonmembers, seed=seed)
    return Defense()
