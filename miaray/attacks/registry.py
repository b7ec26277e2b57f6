"""Attack classes by name: the paper's nine (in the order of miaray.vocabulary.ATTACKS), the likelihood-ratio
attacks (LiRA, RMIA; miaray.vocabulary.RATIO_ATTACKS), and any attack registered at run time
(`register_attack`, docs/architecture.md)."""

from __future__ import annotations

import inspect
from typing import Any

from miaray.attacks.base import Attack
from miaray.attacks.blindmi import BlindMIAttack
from miaray.attacks.lira import LiRAOffline, LiRAOnline
from miaray.attacks.nn import NNAttack, NNClsAttack, Top3NNAttack
from miaray.attacks.pair import PAIR_ATTACK_CLASSES
from miaray.attacks.ratio_attack import RatioAttack
from miaray.attacks.rmia import RMIAOffline, RMIAOnline
from miaray.attacks.samia import SAMIAAttack
from miaray.attacks.threshold import ConfAttack, MentrAttack, Top1ConfAttack, XentAttack
from miaray.config import ConfigError
from miaray.vocabulary import ATTACKS, PAIR_ATTACKS, RATIO_ATTACKS, add_attack_name, remove_attack_name


def _agree(classes: dict[str, type], names: tuple[str, ...], vocabulary_name: str) -> None:
    """One list of attack names, the vocabulary's: refuse to load where the implemented classes differ."""
    if tuple(classes) != names:
        raise ImportError(f"attack classes {tuple(classes)} disagree with miaray.vocabulary.{vocabulary_name} {names}")


ATTACK_CLASSES: dict[str, type[Attack]] = {cls.name: cls for cls in (
    ConfAttack, XentAttack, MentrAttack, Top1ConfAttack, NNAttack, Top3NNAttack, NNClsAttack,
    BlindMIAttack, SAMIAAttack)}
ATTACK_NAMES: tuple[str, ...] = tuple(ATTACK_CLASSES)
RATIO_ATTACK_CLASSES: dict[str, type[RatioAttack]] = {cls.name: cls for cls in (
    LiRAOffline, RMIAOffline, LiRAOnline, RMIAOnline)}
_agree(ATTACK_CLASSES, ATTACKS, "ATTACKS")
_agree(RATIO_ATTACK_CLASSES, RATIO_ATTACKS, "RATIO_ATTACKS")
_agree(PAIR_ATTACK_CLASSES, PAIR_ATTACKS, "PAIR_ATTACKS")


def make_attack(name: str, *, seed: int = 0, **params: Any) -> Attack:
    """A new, unfitted attack by paper name; params go to its constructor. The seed goes to the
    attacks that use randomness (the threshold attacks are deterministic and take none)."""
    if name not in ATTACK_CLASSES:
        raise ConfigError(f"attack {name!r} is not valid; choose one of: {', '.join(ATTACK_CLASSES)}")
    cls = ATTACK_CLASSES[name]
    if "seed" in inspect.signature(cls).parameters:
        params["seed"] = seed
    return cls(**params)


def make_ratio_attack(name: str, **params: Any) -> RatioAttack:
    """A new, unfitted likelihood-ratio attack by name (``lira_offline``, ``rmia_offline``, ``lira``,
    ``rmia``); params go to its constructor (e.g. ``gamma``, ``a``, ``global_variance_below``)."""
    if name not in RATIO_ATTACK_CLASSES:
        raise ConfigError(f"attack {name!r} is not valid; choose one of: {', '.join(RATIO_ATTACKS)}")
    return RATIO_ATTACK_CLASSES[name](**params)


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Make `cls`, an `Attack` fitted on the shadows' signals, an attack of every unit this process runs:
    its `name` becomes valid in `attacks` (after the built-in names in tables) and a unit fits and scores
    it like the paper's attacks, on the pruned and the unpruned target. Returns `cls` (a class decorator).

    Registration lives in this process: a sweep's Ray workers are other processes, so a registered
    attack runs in `python -m miaray.unit`-style code (`miaray.unit.unit_result`) and in local scripts;
    for sweeps, add the class to the tuple of ATTACK_CLASSES above and its name to
    miaray.vocabulary.ATTACKS, or import its module in the workers."""
    if not (isinstance(cls, type) and issubclass(cls, Attack)) or not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls!r} is not an Attack subclass with a class attribute `name`")
    add_attack_name(cls.name)  # refuses a name taken by any attack
    ATTACK_CLASSES[cls.name] = cls
    return cls


def unregister_attack(name: str) -> None:
    """Undo `register_attack` (a built-in attack cannot be removed)."""
    if name in ATTACK_NAMES or name not in ATTACK_CLASSES:
        raise ValueError(f"{name!r} is not a registered attack")
    remove_attack_name(name)
    del ATTACK_CLASSES[name]
