"""The two-model attacks of one unit (`miaray.attacks.pair`; docs/science.md, Two-model attacks): the phi
they read, and who is a member of what.

Every model's phi is its stored one (`miaray.unit.queries.stored_phi`: on the target's pool P, then the
shadow half Z; the plain query, column 0), so the original's and the pruned model's phi of a role come from
the same queries as LiRA's and are computed once. The attacks read:

- the target's pair on P: its original and its pruned model on its members, then its non-members (the
  order every attack scores, `miaray.unit.context.membership`);
- each shadow's pair on its own members and non-members, which lie in Z: the fit's data, with the
  shadows' membership. No target membership reaches the fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from miaray.attacks.pair import PAIR_ATTACK_CLASSES, PairAttack, PairPhi
from miaray.unit.context import UnitContext
from miaray.unit.queries import stored_phi


@dataclass(frozen=True)
class UnitPairs:
    """The target's pair on its pool, and the shadows' pairs on their own samples with their membership."""

    target: PairPhi
    shadows: PairPhi
    shadow_membership: np.ndarray

    @classmethod
    def of(cls, ctx: "UnitContext", originals: Mapping[str, torch.nn.Module],
           pruned: Mapping[str, torch.nn.Module]) -> "UnitPairs":
        """From the stored phi of `originals[role]` (under `original_key`) and `pruned[role]` (under
        `model_key`) for the target and every shadow."""
        cfg = ctx.config
        n_pool = len(ctx.splits.target_pool())
        z = ctx.splits.shadow_half().numpy()
        order = np.argsort(z, kind="stable")

        def pair(role: str, positions: np.ndarray) -> PairPhi:
            return PairPhi(stored_phi(ctx, originals[role], cfg.original_key(role))[positions, 0],
                           stored_phi(ctx, pruned[role], cfg.model_key(role))[positions, 0])

        shadows, membership = [], []
        for role in cfg.shadow_roles():
            split = ctx.split(role)
            samples = torch.cat([split.train, split.test]).numpy()
            found = np.searchsorted(z, samples, sorter=order).clip(max=len(z) - 1)
            at = order[found]
            if not np.array_equal(z[at], samples):
                raise RuntimeError(f"{role} has samples outside the shadow half: its phi was not queried there")
            shadows.append(pair(role, n_pool + at))
            membership.append(np.r_[np.ones(len(split.train), np.int64), np.zeros(len(split.test), np.int64)])
        return cls(target=pair("target", np.arange(n_pool)), shadows=PairPhi.concat(shadows),
                   shadow_membership=np.concatenate(membership))

    def fitted(self, name: str) -> PairAttack:
        """Two-model attack `name` fitted on the shadows' pairs."""
        return PAIR_ATTACK_CLASSES[name]().fit(self.shadows, self.shadow_membership)
