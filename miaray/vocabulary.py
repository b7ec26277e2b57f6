"""The names miaray runs, in the order tables show them: datasets, architectures, pruning methods,
attacks, defenses with their hyperparameters and valid ranges, and the splits of each half.

Plain data, no torch: the analysis scripts read it too. `miaray.attacks.registry` refuses to load when its
classes and these attack names disagree; the builders of models, pruning masks and defenses refuse a
name that is not here. The words, one per concept (docs/architecture.md): a *shadow* is the attacker's
model on the other half of the data; a *reference model* is trained on a random half of the target's
pool and read by the online *likelihood-ratio attacks* (LiRA, RMIA); the paper's hyperparameters are its
*defaults*, and the public code of its authors is *the authors' code*.
"""

from __future__ import annotations

from typing import Mapping, Sequence

DATASETS = ("cifar10", "cifar100", "svhn", "chmnist", "purchase", "texas", "location",
            "digits", "mnist5k", "synthetic_tabular")
IMAGE_DATASETS = ("cifar10", "cifar100", "svhn", "chmnist", "digits", "mnist5k")
ARCHS = ("resnet18", "vgg16", "densenet121", "fc")
IMAGE_ARCHS = ("resnet18", "vgg16", "densenet121")
METHODS = ("l1_unstructured", "l1_structured", "l2_structured", "slimming")
STRUCTURED_METHODS = ("l1_structured", "l2_structured", "slimming")

# The paper's nine attacks, fitted on the shadows' signals ('all' on the command line).
ATTACKS = ("conf", "xent", "mentr", "top1_conf", "nn", "top3_nn", "nncls", "blindmi", "samia")
# Beyond the paper (docs/science.md, LiRA and RMIA): the likelihood-ratio attacks, which score each sample
# against the same sample's phi on other models. Offline ones read the shadows (OUT models only); online ones
# read reference models trained on halves of the target's pool.
RATIO_ATTACKS = ("lira_offline", "rmia_offline", "lira", "rmia")
ONLINE_ATTACKS = ("lira", "rmia")  # the likelihood-ratio attacks that read reference models (the others: shadows)
# Beyond the paper: attacks that query both the original and the pruned model (miaray.attacks.pair); their rows
# say target_model 'both'. They attack the pair, so never the unpruned target alone (original_attacks).
PAIR_ATTACKS = ("pair_diff", "pair_lr")
TRAINED_ATTACKS = ("nn", "top3_nn", "nncls", "samia")  # attack models with a training schedule
# Attacks registered at run time (`miaray.attacks.register_attack`), after the built-in ones.
_REGISTERED_ATTACKS: list[str] = []


def attack_names() -> tuple[str, ...]:
    """Every name `attacks` takes, in the order tables show them: the paper's, the likelihood-ratio and the
    two-model attacks, then any registered at run time."""
    return ATTACKS + RATIO_ATTACKS + PAIR_ATTACKS + tuple(_REGISTERED_ATTACKS)


def add_attack_name(name: str) -> None:
    """Make `name` a valid attack (`miaray.attacks.register_attack` calls this with its class)."""
    if name in attack_names():
        raise ValueError(f"attack {name!r} is already registered")
    _REGISTERED_ATTACKS.append(name)


def remove_attack_name(name: str) -> None:
    _REGISTERED_ATTACKS.remove(name)


DEFENSES = ("basic", "ppb", "dp", "adv")
# Hyperparameters each defense takes, with the paper's defaults (docs/science.md, Defenses).
DEFENSE_PARAMS: dict[str, dict[str, float]] = {
    "basic": {},
    "ppb": {"lambda": 4.0},
    "dp": {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5},
    "adv": {"alpha": 4.0, "k": 1.0},
}
# The hyperparameter the paper's grid varies per defense: always named in a setting's label.
PRIMARY_DEFENSE_PARAM = {"ppb": "lambda", "dp": "noise_multiplier", "adv": "alpha"}
# A defense setting: the defense and its hyperparameters over the defaults, e.g. ("ppb", (("lambda", 4.0),)).
DefenseSetting = tuple[str, tuple[tuple[str, float], ...]]
BASIC: DefenseSetting = ("basic", ())
# The valid values of each defense hyperparameter: (lowest, lowest included, integer). All must be
# finite. DP's noise_multiplier may be 0: DP-SGD with clipping and no noise (epsilon is then infinite),
# the ablation that separates clipping from noise; delta must also lie below 1.
DEFENSE_PARAM_RANGES: dict[str, tuple[float, bool, bool]] = {
    "lambda": (0.0, True, False), "alpha": (0.0, True, False), "k": (1.0, True, True),
    "noise_multiplier": (0.0, True, False), "max_grad_norm": (0.0, False, False), "delta": (0.0, False, False),
}

# Channel multipliers of `default_width` (the datasets not named run at 1.0).
DEFAULT_WIDTHS: dict[str, float] = {"digits": 0.125, "mnist5k": 0.125, "synthetic_tabular": 1.0}
MAX_QUERY_SHIFT = 4  # pixels; LiRA's code shifts CIFAR-10 queries by up to 4, and digits are 8 x 8
# Train / test / validation percent of each half (members / non-members / early stopping): the paper's
# split (docs/science.md, Splits and sizes), and the four of its Table 2 (appendix A.5).
PAPER_SPLIT = (45, 45, 10)
TABLE2_SPLITS = (PAPER_SPLIT, (50, 40, 10), (60, 30, 10), (70, 20, 10))


def default_width(dataset: str) -> float:
    """The channel multiplier a unit of `dataset` runs at when none is given: narrow ResNets on the
    embedded image sets (minutes on a CPU), the full (256, 128) fc net on synthetic_tabular (seconds on
    a CPU; narrower ones barely learn its 100 classes: `miaray.data.embedded.load_synthetic_tabular`),
    the paper's width elsewhere."""
    return DEFAULT_WIDTHS.get(dataset, 1.0)


def format_split(split: Sequence[int]) -> str:
    """A split as people and result rows write it: (45, 45, 10) -> '45/45/10'."""
    return "/".join(map(str, split))


def defense_of(param: str) -> str | None:
    """The defense that takes hyperparameter `param` (each belongs to one), or None."""
    return next((d for d, params in DEFENSE_PARAMS.items() if param in params), None)


def defense_label(defense: str, params: Mapping[str, float] | Sequence[tuple[str, float]] = ()) -> str:
    """A defense setting for people: 'basic', 'ppb lambda=4', 'dp noise_multiplier=0.5 max_grad_norm=2':
    the hyperparameter the paper varies always, the others where they differ from their defaults."""
    if defense not in PRIMARY_DEFENSE_PARAM:
        return defense
    resolved = {**DEFENSE_PARAMS[defense], **dict(params)}
    primary = PRIMARY_DEFENSE_PARAM[defense]
    shown = [primary] + [n for n in DEFENSE_PARAMS[defense] if n != primary and resolved[n] != DEFENSE_PARAMS[defense][n]]
    return " ".join([defense, *(f"{n}={resolved[n]:g}" for n in shown)])
