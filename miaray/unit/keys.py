"""The store keys a unit computes beside the models' own (`UnitConfig.original_key`, `pruned_key`,
`phi_key`): the attacks on the unpruned target, shared by every cell of a (dataset, arch, seed)."""

from __future__ import annotations

from typing import Any

from miaray.attacks.metrics import METRICS
from miaray.config import ONLINE_ATTACKS, REFERENCE_ATTACKS, TRAINED_ATTACKS, UnitConfig
from miaray.unit.reference import PARAMETERS, RMIA_GAMMA


def original_attack_key(config: UnitConfig, attack: str) -> dict[str, Any]:
    """Cache key of one attack on the unpruned target: what its result depends on. The originals of
    the target and of every shadow (their keys: dataset, arch, width, seed, split, training), the
    attack, its training epochs (trained attacks only) and seed, and the metric names (a cached row
    holds exactly these). Not the pruning method, sparsity or defense: the 20 cells of a (dataset,
    arch, seed) share it. A reference attack (LiRA, RMIA) reads the originals of the models it
    reads instead of the shadows (the shadows offline, the reference models online: the number of
    them sets its budgets), its queries and the parameters its rows state. Results stored before they kept
    the per-sample scores (which per-sample exposure reads) lack `per_sample_scores` and are computed again."""
    key = {"kind": "original_attack", "target": config.original_key("target"),
           "shadows": [config.original_key(role) for role in config.shadow_roles()], "attack": attack,
           "attack_epochs": config.attack_epochs if attack in TRAINED_ATTACKS else None,
           "seed": config.seed, "metrics": list(METRICS), "per_sample_scores": True}
    if attack in REFERENCE_ATTACKS:
        online = attack in ONLINE_ATTACKS
        key.update(shadows=[] if online else key["shadows"],
                   references=[config.original_key(role) for role in config.reference_roles()] if online else [],
                   queries=config.phi_key({})["queries"], parameters=list(PARAMETERS), rmia_gamma=RMIA_GAMMA)
    return key
