"""The store entries of a unit beyond the configuration's own keys (`UnitConfig.original_key`, `pruned_key`,
`model_key`, `phi_key`): what a model's build leaves (its signals and phi, `role_entries`: the sweep plans its
builds by these), and the attacks on the unpruned target, shared by every cell of a (dataset, arch, seed)."""

from __future__ import annotations

from typing import Any

from miaray.attacks.metrics import METRICS
from miaray.config import UnitConfig
from miaray.results import RENAMED_COLUMNS
from miaray.roles import role_kind
from miaray.unit.queries import signals_key
from miaray.unit.ratio import PARAMETERS, RMIA_GAMMA
from miaray.vocabulary import ONLINE_ATTACKS, RATIO_ATTACKS, TRAINED_ATTACKS


def role_model_key(config: UnitConfig, role: str, *, pruned: bool) -> dict[str, Any]:
    """The store key of the model of `role`: its pruned model (`UnitConfig.model_key`), or its original."""
    return config.model_key(role) if pruned else config.original_key(role)


def role_queries(config: UnitConfig, role: str, *, pruned: bool) -> tuple[bool, bool]:
    """What the unit's attacks read from the model of `role`: (its signals: the target's and the shadows',
    for the paper's and the two-model attacks; its phi: for the likelihood-ratio attacks that read the role)."""
    attacks = config.attacks if pruned else config.resolved_original_attacks
    return role_kind(role) != "reference", role in config.phi_roles(attacks)


def role_entries(config: UnitConfig, role: str, *, pruned: bool) -> list[dict[str, Any]]:
    """The store entries a build of the model of `role` leaves: the model, and what `role_queries` says."""
    key = role_model_key(config, role, pruned=pruned)
    signals, phi = role_queries(config, role, pruned=pruned)
    return [key, *([signals_key(key)] if signals else []), *([config.phi_key(key)] if phi else [])]


def stored_parameter_names() -> list[str]:
    """The parameters a likelihood-ratio result states, under the names the store has always keyed them by
    (a renamed column keeps its old name here, so that results stored before the rename are found;
    `miaray.unit.attacks.attack_rows` gives them the current names when it loads them)."""
    old_name = {new: old for old, new in RENAMED_COLUMNS.items()}
    return [old_name.get(name, name) for name in PARAMETERS]


def original_attack_key(config: UnitConfig, attack: str) -> dict[str, Any]:
    """Cache key of one attack on the unpruned target: what its result depends on. The originals of
    the target and of every shadow (their keys: dataset, arch, width, seed, split, training), the
    attack, its training epochs (trained attacks only) and seed, and the metric names (a cached row
    holds exactly these). Not the pruning method, sparsity or defense: the 20 cells of a (dataset,
    arch, seed) share it. A likelihood-ratio attack (LiRA, RMIA) reads the originals of the models it
    reads instead of the shadows (the shadows offline, the reference models online: the number of
    them sets its budgets), its queries and the parameters its rows state. Results stored before they kept
    the per-sample scores (which per-sample exposure reads) lack `per_sample_scores` and are computed again."""
    key = {"kind": "original_attack", "target": config.original_key("target"),
           "shadows": [config.original_key(role) for role in config.shadow_roles()], "attack": attack,
           "attack_epochs": config.attack_epochs if attack in TRAINED_ATTACKS else None,
           "seed": config.seed, "metrics": list(METRICS), "per_sample_scores": True}
    if attack in RATIO_ATTACKS:
        online = attack in ONLINE_ATTACKS
        key.update(shadows=[] if online else key["shadows"],
                   references=[config.original_key(role) for role in config.reference_roles()] if online else [],
                   queries=config.phi_key({})["queries"], parameters=stored_parameter_names(), rmia_gamma=RMIA_GAMMA)
    return key
