"""The likelihood-ratio attacks of one unit (LiRA, RMIA; docs/science.md, LiRA and RMIA): which models each one
reads, on which samples, with how many models, and what it reports.

Every model such an attack reads (target, shadows, reference models; pruned, or the originals for the
unpruned target) is queried the same way, whatever its role: its phi (`model_phi`, the logit-scaled
true-class confidence, one column per query) on the target's pool P (its members, then its
non-members: the samples every attack scores, in the order of `miaray.unit.context.membership`) followed by
the shadow half Z (the attacker's own data, where RMIA's population z comes from), stored under
`UnitConfig.phi_key` and loaded, never re-derived. The attacks then read:

- lira_offline: the shadows' phi on P. No shadow trains on the target's half of the data, so every
  one of these is an OUT signal (checked on the splits, `RatioPhi.of`);
- rmia_offline: the same, the shadows' phi on Z with the cells where a shadow trained on z blanked
  (`out_only`), and the target's phi on Z; `a` calibrated by attacking each shadow with the others
  on Z (`calibrate_offline_a`), gamma = 1;
- lira: the reference models' phi on P and which of them trained on each sample (half of them);
- rmia: the reference models' phi on P and on Z (they train inside P, so every z is OUT for them),
  the target's phi on Z; gamma = 1.

No offline attack reads a reference model, and none reads a signal of a model on a sample it trained
on. Budget: each attack runs with the first k of its models for k = 1, 2, 4, ... and all of them (the
shadows offline, the reference models online); online LiRA takes even k only (complementary pairs
give each sample k / 2 IN models). rmia_offline cannot calibrate a with one shadow: at k = 1 it uses
the a calibrated on all the shadows (the row says which a). The full budget's result is the unit's
row of the attack; every k is a line of its budget table (`<experiment>/budget/<unit_id>.parquet`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from miaray.attacks.lira import LiRAOffline, LiRAOnline
from miaray.attacks.metrics import evaluate_scores
from miaray.attacks.ratio_attack import RatioAttack, out_only
from miaray.attacks.rmia import RMIAOffline, RMIAOnline, calibrate_offline_a
from miaray.roles import role_kind
from miaray.unit.context import UnitContext
from miaray.unit.queries import stored_phi
from miaray.unit.scoring import scored
from miaray.vocabulary import ONLINE_ATTACKS, RATIO_ATTACKS

RMIA_GAMMA = 1.0  # RMIA's default: x dominates z when LR(x, z) >= 1


# The parameters every reference-attack row states (NaN / None where they do not apply).
PARAMETERS = ("models_used", "n_queries", "lira_variance", "rmia_a", "rmia_gamma", "n_population")


def _inside(samples: torch.Tensor, trained_on: list[torch.Tensor]) -> np.ndarray:
    """(n, M) bool: whether model m trained on sample i."""
    values = samples.numpy()
    return np.stack([np.isin(values, train.numpy()) for train in trained_on], axis=1) if trained_on \
        else np.zeros((len(values), 0), dtype=bool)


@dataclass(frozen=True)
class RatioPhi:
    """The phi a unit's likelihood-ratio attacks read, each (n_P + n_Z, A) (`query_indices`), and who
    trained on what: shadows on Z (`shadow_inside_z`, (n_Z, S)), reference models on P
    (`reference_inside_p`, (n_P, N)). `shadows` or `references` is empty when no attack reads them."""

    n_pool: int
    target: np.ndarray
    shadows: list[np.ndarray]
    references: list[np.ndarray]
    shadow_inside_z: np.ndarray
    reference_inside_p: np.ndarray

    @classmethod
    def of(cls, ctx: "UnitContext", models: Mapping[str, torch.nn.Module], *, attacks: tuple[str, ...],
           model_key: Callable[[str], dict[str, Any]]) -> "RatioPhi | None":
        """The stored phi of the roles `attacks` read (`UnitConfig.phi_roles`), `models[role]` under
        `model_key(role)`; None when no likelihood-ratio attack is asked for. Raises RuntimeError if a
        shadow trained on a target sample (its signal there would be IN, and offline attacks read it)."""
        roles = ctx.config.phi_roles(attacks)
        if not roles:
            return None
        phi = {role: stored_phi(ctx, models[role], model_key(role)) for role in roles}
        splits, pool = ctx.splits, ctx.splits.target_pool()
        shadows = [role for role in roles if role_kind(role) == "shadow"]
        references = [role for role in roles if role_kind(role) == "reference"]
        if _inside(pool, [splits.role(role).train for role in shadows]).any():
            raise RuntimeError("a shadow model trained on the target's pool: offline attacks would read IN signals")
        return cls(n_pool=len(pool), target=phi["target"], shadows=[phi[role] for role in shadows],
                   references=[phi[role] for role in references],
                   shadow_inside_z=_inside(splits.shadow_half(), [splits.role(role).train for role in shadows]),
                   reference_inside_p=_inside(pool, [splits.role(role).train for role in references]))

    def on_pool(self, models: list[np.ndarray]) -> np.ndarray:
        """(n_P, M, A): the models' phi on the target's pool."""
        return np.stack([phi[:self.n_pool] for phi in models], axis=1)

    def on_population(self, models: list[np.ndarray]) -> np.ndarray:
        """(n_Z, M): the models' phi of the plain query on the shadow half (RMIA's population z)."""
        return np.stack([phi[self.n_pool:, 0] for phi in models], axis=1)


def budgets(total: int, *, even: bool = False) -> list[int]:
    """Numbers of models to run an attack with: 1, 2, 4, ... below `total`, then `total`; even ones
    only with `even`."""
    ks = [2 ** i for i in range(max(total, 1).bit_length()) if 2 ** i < total] + [total]
    return [k for k in ks if k % 2 == 0] if even else ks


def fit_ratio_attack(name: str, phi: RatioPhi, k: int, *, calibrated_a: float | None = None
                         ) -> tuple[RatioAttack, np.ndarray]:
    """Attack `name` fitted with the first `k` of its models (module docstring), and the target's
    phi it scores (row i: sample i of the pool). `calibrated_a`: rmia_offline's a when k < 2."""
    target_pool, target_population = phi.target[:phi.n_pool], phi.target[phi.n_pool:, 0]
    if name == "lira_offline":
        return LiRAOffline().fit(phi.on_pool(phi.shadows[:k])), target_pool
    if name == "rmia_offline":
        population, inside = phi.on_population(phi.shadows[:k]), phi.shadow_inside_z[:, :k]
        attack = RMIAOffline(gamma=RMIA_GAMMA, a=calibrated_a if k < 2 else None)
        return attack.fit(phi.on_pool(phi.shadows[:k])[:, :, 0], out_only(population, inside), target_population,
                          calibration=population, calibration_inside=inside), target_pool[:, 0]
    if name == "lira":
        return LiRAOnline().fit(phi.on_pool(phi.references[:k]), phi.reference_inside_p[:, :k]), target_pool
    if name == "rmia":
        attack = RMIAOnline(gamma=RMIA_GAMMA).fit(phi.on_pool(phi.references[:k])[:, :, 0],
                                                  phi.on_population(phi.references[:k]), target_population)
        return attack, target_pool[:, 0]
    raise ValueError(f"{name!r} is not a likelihood-ratio attack; choose one of: {', '.join(RATIO_ATTACKS)}")


def parameters(attack: RatioAttack, *, n_queries: int) -> dict[str, Any]:
    """What a row states about a fitted likelihood-ratio attack (`PARAMETERS`)."""
    lira = isinstance(attack, (LiRAOnline, LiRAOffline))
    return {"models_used": int(attack.n_models_), "n_queries": n_queries if lira else 1,
            "lira_variance": ("global" if attack.global_variance_ else "per_sample") if lira else None,
            "rmia_a": float(getattr(attack, "a_", math.nan)),
            "rmia_gamma": math.nan if lira else float(attack.gamma_),
            "n_population": math.nan if lira else int(attack.n_population_)}


def run_ratio_attack(name: str, phi: RatioPhi, membership: np.ndarray) -> dict[str, Any]:
    """Attack `name` at every budget: the full budget's result as `miaray.unit.scoring.scored` keeps it
    (`metrics`, ROC, per-sample `scores`, `collapsed`) with its `params`, and `budget`, one dict of metrics
    and parameters per k, the full budget's last (the shape `miaray.unit.attacks.attack_rows` stores and
    turns into rows)."""
    online = name in ONLINE_ATTACKS
    total = len(phi.references if online else phi.shadows)
    calibrated_a = None
    if name == "rmia_offline":  # for k = 1, which cannot calibrate a by itself
        calibrated_a, _ = calibrate_offline_a(phi.on_population(phi.shadows), phi.shadow_inside_z)
    *smaller, full = budgets(total, even=name == "lira")
    lines = []
    for k in smaller:
        attack, target = fit_ratio_attack(name, phi, k, calibrated_a=calibrated_a)
        lines.append({**evaluate_scores(attack, attack.predict_proba(target), membership),
                      **parameters(attack, n_queries=phi.target.shape[1])})
    attack, target = fit_ratio_attack(name, phi, full, calibrated_a=calibrated_a)
    result = scored(attack, attack.predict_proba(target), membership)
    params = parameters(attack, n_queries=phi.target.shape[1])
    return {**result, "params": params, "budget": [*lines, {**result["metrics"], **params}]}
