"""The nine attacks under their paper names, in the order of miaray.config.ATTACKS; the reference-model
attacks (LiRA, RMIA) under theirs, in the order of miaray.config.REFERENCE_ATTACKS."""

from __future__ import annotations

import inspect
from typing import Any

from miaray.attacks.base import Attack
from miaray.attacks.blindmi import BlindMIAttack
from miaray.attacks.lira import LiRAOffline, LiRAOnline
from miaray.attacks.nn import NNAttack, NNClsAttack, Top3NNAttack
from miaray.attacks.reference_attack import ReferenceAttack
from miaray.attacks.rmia import RMIAOffline, RMIAOnline
from miaray.attacks.samia import SAMIAAttack
from miaray.attacks.threshold import ConfAttack, MentrAttack, Top1ConfAttack, XentAttack
from miaray.config import ATTACKS, REFERENCE_ATTACKS, ConfigError

ATTACK_CLASSES: dict[str, type[Attack]] = {cls.name: cls for cls in (
    ConfAttack, XentAttack, MentrAttack, Top1ConfAttack, NNAttack, Top3NNAttack, NNClsAttack,
    BlindMIAttack, SAMIAAttack)}
ATTACK_NAMES: tuple[str, ...] = tuple(ATTACK_CLASSES)
if ATTACK_NAMES != ATTACKS:  # one list of attacks: the config's
    raise ImportError(f"attack registry {ATTACK_NAMES} disagrees with miaray.config.ATTACKS {ATTACKS}")
REFERENCE_ATTACK_CLASSES: dict[str, type[ReferenceAttack]] = {cls.name: cls for cls in (
    LiRAOffline, RMIAOffline, LiRAOnline, RMIAOnline)}
if tuple(REFERENCE_ATTACK_CLASSES) != REFERENCE_ATTACKS:
    raise ImportError(f"reference attacks {tuple(REFERENCE_ATTACK_CLASSES)} disagree with "
                      f"miaray.config.REFERENCE_ATTACKS {REFERENCE_ATTACKS}")


def make_attack(name: str, *, seed: int = 0, **params: Any) -> Attack:
    """A new, unfitted attack by paper name; params go to its constructor. The seed goes to the
    attacks that use randomness (the threshold attacks are deterministic and take none)."""
    if name not in ATTACK_CLASSES:
        raise ConfigError(f"attack {name!r} is not valid; choose one of: {', '.join(ATTACK_NAMES)}")
    cls = ATTACK_CLASSES[name]
    if "seed" in inspect.signature(cls).parameters:
        params["seed"] = seed
    return cls(**params)


def make_reference_attack(name: str, **params: Any) -> ReferenceAttack:
    """A new, unfitted reference-model attack by name (``lira_offline``, ``rmia_offline``, ``lira``,
    ``rmia``); params go to its constructor (e.g. ``gamma``, ``a``, ``global_variance_below``)."""
    if name not in REFERENCE_ATTACK_CLASSES:
        raise ConfigError(f"attack {name!r} is not valid; choose one of: {', '.join(REFERENCE_ATTACKS)}")
    return REFERENCE_ATTACK_CLASSES[name](**params)
