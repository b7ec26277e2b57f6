"""Frozen configuration of one unit of work, its validation, and stable content hashes.

A unit is one grid cell: (dataset, arch, seed) originals -> prune (method, sparsity) -> fine-tune
(defense) -> attack. Every cache key is a hash of exactly the fields that determine the artifact,
so the twenty cells of one (dataset, arch, seed) share their originals.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from miaray import roles
from miaray.roles import MAX_REFERENCES, MAX_SEED, MAX_SHADOWS, role_kind
from miaray.vocabulary import (ARCHS, ATTACKS, DATASETS, DEFENSES, DEFENSE_PARAMS, DEFENSE_PARAM_RANGES, IMAGE_ARCHS,
                               IMAGE_DATASETS, MAX_QUERY_SHIFT, METHODS, ONLINE_ATTACKS, PAIR_ATTACKS, PAPER_SPLIT,
                               RATIO_ATTACKS, STRUCTURED_METHODS, attack_names, format_split)


class ConfigError(ValueError):
    """A configuration field holds a value miaray cannot run; the message names field and choices."""


def _choice(field_name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{field_name}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_number(field_name: str, value: Any, *, low: float | None = None, low_inclusive: bool = True,
                 high: float | None = None, high_inclusive: bool = True, integer: bool = False,
                 why: str = "") -> None:
    """Raise ConfigError naming `field_name` and the valid range (and `why`, when given) unless
    `value` is a finite real number (a Python or numpy integer with `integer`) within the bounds
    given (included or not). NaN, infinities, booleans and strings are never valid."""
    if low is not None and high is not None:
        where = f" in {'[' if low_inclusive else '('}{_bound(low)}, {_bound(high)}{']' if high_inclusive else ')'}"
    elif low is not None:
        where = f" {'>=' if low_inclusive else '>'} {_bound(low)}"
    else:
        where = f" {'<=' if high_inclusive else '<'} {_bound(high)}" if high is not None else ""
    kind = (numbers.Integral if integer else numbers.Real)
    valid = (isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
             and (low is None or (value >= low if low_inclusive else value > low))
             and (high is None or (value <= high if high_inclusive else value < high)))
    if not valid:
        raise ConfigError(f"{field_name}={value!r} is not valid: give {'an integer' if integer else 'a finite number'}"
                          f"{where}{f' ({why})' if why else ''}")


def check_split(split: Any, *, name: str = "split") -> None:
    """Raise ConfigError, naming `name`, unless `split` is three positive integers summing to 100."""
    parts = tuple(split) if isinstance(split, (tuple, list)) else ()
    if (len(parts) != 3 or not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in parts)
            or sum(parts) != 100):
        shown = format_split(parts) if parts else repr(split)
        raise ConfigError(f"{name}={shown} is not valid: give train/test/validation as three positive "
                          f"integer percentages of each half summing to 100, e.g. {format_split(PAPER_SPLIT)}")


def stable_hash(payload: Mapping[str, Any]) -> str:
    """A short, stable hex digest of a JSON-able mapping (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and early stopping; defaults are the paper's (docs/science.md, Training and models)."""

    lr: float = 1e-3                 # Adam learning rate
    batch_size: int = 128            # samples per step
    weight_decay: float = 5e-4       # L2 penalty (Adam's coupled weight decay)
    max_epochs: int | None = None    # None: 100 for images, 50 for tabular
    finetune_epochs: int | None = None  # None: max_epochs // 2
    patience: int = 5                # epochs without improvement before stopping
    monitor: str = "val_loss"        # early-stopping criterion: val_loss (paper) or val_acc (ref. code)
    slimming_l1: float = 0.0         # L1 on BN gammas while training originals (Liu et al.; 0 = off)

    def validate(self) -> None:
        _choice("train.monitor", self.monitor, ("val_loss", "val_acc"))
        check_number("train.lr", self.lr, low=0.0, low_inclusive=False)
        for name in ("batch_size", "patience"):
            check_number(f"train.{name}", getattr(self, name), low=1, integer=True)
        for name in ("max_epochs", "finetune_epochs"):
            if getattr(self, name) is not None:  # None: the default
                check_number(f"train.{name}", getattr(self, name), low=1, integer=True)
        for name in ("weight_decay", "slimming_l1"):
            check_number(f"train.{name}", getattr(self, name), low=0.0)

    def epochs(self, *, tabular: bool) -> tuple[int, int]:
        """(original training epochs, fine-tuning epochs) after defaults are filled in."""
        max_epochs = self.max_epochs or (50 if tabular else 100)
        return max_epochs, self.finetune_epochs or max(1, max_epochs // 2)


# The result-row columns of `UnitConfig.result_settings`: every setting that changes a result and is
# not one of the cell's axes. Rows written before they existed lack them (analysis reads them as not
# recorded); analysis/data.py makes each part of a cell's identity.
RESULT_SETTINGS = ("max_epochs", "finetune", "finetune_max_epochs", "patience", "num_shadows", "attack_epochs",
                   "query_mirror", "query_shift", "lr", "batch_size", "weight_decay", "monitor", "slimming_l1")


# UnitConfig fields that came after results were stored (issue 14): their defaults leave unit ids as they were.
ADDED_FIELD_DEFAULTS: dict[str, Any] = {"num_references": 0, "query_mirror": False, "query_shift": 0, "finetune": True}


@dataclass(frozen=True)
class UnitConfig:
    """One grid cell. Target and shadows are built by the same code with a different role."""

    dataset: str
    arch: str
    method: str = "l1_unstructured"
    sparsity: float = 0.7
    seed: int = 0
    width: float = 1.0               # channel multiplier; < 1 makes narrow models for tests
    num_shadows: int = 5
    # Reference models of the online attacks (lira, rmia): trained on halves of the target's pool,
    # pruned and fine-tuned like the target. 0: none.
    num_references: int = 0
    shadow_method: str | None = None     # None: same as method (known pruning)
    shadow_sparsity: float | None = None  # None: same as sparsity; 0.0: unpruned shadows
    attacks: tuple[str, ...] = ATTACKS
    # Attacks on the unpruned target (fitted on the unpruned shadows). None: the same as `attacks`, so
    # the original and the pruned target are compared attack by attack; ("conf",): the paper's baseline.
    original_attacks: tuple[str, ...] | None = None
    attack_epochs: int | None = None  # None: each attack's own schedule (SAMIA 100, MLPs 30)
    # LiRA's query augmentations (docs/science.md, LiRA and RMIA): phi also of the mirrored image and of the image
    # moved by -shift..shift pixels in each direction, averaged by lira and lira_offline. Off: the paper
    # trains without augmentation, and digits are not mirror-symmetric.
    query_mirror: bool = False
    query_shift: int = 0
    defense: str = "basic"
    defense_params: tuple[tuple[str, float], ...] = ()  # overrides of DEFENSE_PARAMS[defense]
    adaptive: bool = False           # shadows fine-tuned with the target's defense too
    # False: the pruned models (target, shadows, references) are the originals with the masks applied,
    # nothing trained after pruning (the arm that tells pruning's effect from fine-tuning's).
    finetune: bool = True
    split: tuple[int, int, int] = PAPER_SPLIT  # train / test / validation % of each half (Table 2)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ---- derived -------------------------------------------------------------------------
    @property
    def resolved_shadow_method(self) -> str:
        return self.shadow_method or self.method

    @property
    def resolved_shadow_sparsity(self) -> float:
        return self.sparsity if self.shadow_sparsity is None else self.shadow_sparsity

    @property
    def resolved_original_attacks(self) -> tuple[str, ...]:
        """The attacks on the unpruned target: `original_attacks`, else `attacks` without the two-model ones."""
        if self.original_attacks is None:
            return tuple(a for a in self.attacks if a not in PAIR_ATTACKS)
        return self.original_attacks

    @property
    def resolved_defense_params(self) -> dict[str, float]:
        return {**DEFENSE_PARAMS[self.defense], **dict(self.defense_params)}

    @property
    def tabular(self) -> bool:
        return self.dataset not in IMAGE_DATASETS

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> "UnitConfig":
        _choice("dataset", self.dataset, DATASETS)
        _choice("arch", self.arch, ARCHS)
        image = self.dataset in IMAGE_DATASETS
        if image and self.arch == "fc":
            raise ConfigError(f"arch='fc' is for tabular data; dataset {self.dataset!r} is images: "
                              f"choose one of {', '.join(IMAGE_ARCHS)}")
        if not image and self.arch != "fc":
            raise ConfigError(f"dataset {self.dataset!r} is tabular: arch must be 'fc'")
        for name, method in (("method", self.method), ("shadow_method", self.resolved_shadow_method)):
            _choice(name, method, METHODS)
            if method in STRUCTURED_METHODS and not image:
                raise ConfigError(f"{name}={method!r} prunes conv filters; tabular models take "
                                  "only 'l1_unstructured'")
        check_number("sparsity", self.sparsity, low=0.0, low_inclusive=False, high=1.0, high_inclusive=False)
        if self.shadow_sparsity is not None:
            check_number("shadow_sparsity", self.shadow_sparsity, low=0.0, high=1.0, high_inclusive=False)
        check_number("width", self.width, low=0.0, low_inclusive=False)
        check_number("num_shadows", self.num_shadows, low=1, high=MAX_SHADOWS, integer=True,
                     why="role seeds keep shadows and reference models apart")
        check_number("num_references", self.num_references, low=0, high=MAX_REFERENCES, integer=True,
                     why="role seeds keep reference models apart from the fine-tunings")
        check_number("seed", self.seed, low=0, high=MAX_SEED - (self.num_shadows - 1), integer=True,
                     why=f"shadow i splits with seed + i, and sklearn takes seeds up to {MAX_SEED}")
        for name, attacks in (("attacks", self.attacks), ("original_attacks", self.resolved_original_attacks)):
            if not attacks:
                raise ConfigError(f"{name} is empty; choose at least one of: {', '.join(ATTACKS)}")
            for attack in attacks:
                _choice(name, attack, attack_names())
            if len(set(attacks)) != len(attacks):
                raise ConfigError(f"{name}={', '.join(attacks)} names an attack twice")
        paired = set(self.resolved_original_attacks) & set(PAIR_ATTACKS)
        if paired:
            raise ConfigError(f"original_attacks={', '.join(self.resolved_original_attacks)}: {', '.join(sorted(paired))} "
                              "query both the original and the pruned model; give them in attacks (their rows say "
                              "target_model 'both')")
        if not isinstance(self.finetune, bool):
            raise ConfigError(f"finetune={self.finetune!r} is not valid: give True or False")
        if not self.finetune and self.defense != "basic":
            raise ConfigError(f"defense={self.defense!r} without fine-tuning: a defense acts while the pruned model "
                              "is fine-tuned, and without fine-tuning nothing is trained after pruning; use defense "
                              "'basic' there")
        self._validate_ratio_attacks(image=image)
        if self.attack_epochs is not None:
            check_number("attack_epochs", self.attack_epochs, low=1, integer=True)
        _choice("defense", self.defense, DEFENSES)
        for key, _ in self.defense_params:
            _choice(f"defense_params[{self.defense}]", key, tuple(DEFENSE_PARAMS[self.defense]))
        for key, value in self.resolved_defense_params.items():
            low, inclusive, integer = DEFENSE_PARAM_RANGES[key]
            if integer and isinstance(value, float) and value.is_integer():
                value = int(value)  # command-line values are floats: k=2 arrives as 2.0
            high = 1.0 if key == "delta" else None
            check_number(f"defense_params[{self.defense}].{key}", value, low=low, low_inclusive=inclusive,
                         high=high, high_inclusive=False, integer=integer)
        check_split(self.split)
        self.train.validate()
        return self

    def _validate_ratio_attacks(self, *, image: bool) -> None:
        """What LiRA and RMIA need (docs/science.md, LiRA and RMIA), in `attacks` or `original_attacks`."""
        requested = set(self.attacks) | set(self.resolved_original_attacks)
        n = self.num_references
        if "lira" in requested and (n < 2 or n % 2):
            raise ConfigError(f"attack 'lira' (online LiRA) needs an even num_references >= 2, got {n}: reference "
                              "models come in complementary pairs, so every target sample has as many IN as OUT models")
        if "rmia" in requested and n < 1:
            raise ConfigError("attack 'rmia' (online RMIA) needs num_references >= 1, got 0")
        if n and not requested & set(ONLINE_ATTACKS):
            raise ConfigError(f"num_references={n}, but no online attack ({', '.join(ONLINE_ATTACKS)}) in attacks or "
                              "original_attacks reads reference models: add one, or set num_references=0")
        if "rmia_offline" in requested and self.num_shadows < 2:
            raise ConfigError("attack 'rmia_offline' calibrates its a by attacking one shadow with the others: "
                              f"it needs num_shadows >= 2, got {self.num_shadows}")
        if not isinstance(self.query_mirror, bool):
            raise ConfigError(f"query_mirror={self.query_mirror!r} is not valid: give True or False")
        check_number("query_shift", self.query_shift, low=0, high=MAX_QUERY_SHIFT, integer=True)
        if self.query_mirror or self.query_shift:
            if not image:
                raise ConfigError(f"query_mirror / query_shift augment images; dataset {self.dataset!r} is tabular")
            if not requested & {"lira", "lira_offline"}:
                raise ConfigError("query_mirror / query_shift are LiRA's query augmentations: they need 'lira' or "
                                  "'lira_offline' in attacks or original_attacks")

    # ---- cache keys ----------------------------------------------------------------------
    def original_key(self, role: str) -> dict[str, Any]:
        """What determines an original (unpruned) model: role is 'target', 'shadow<i>' or 'reference<j>'
        (the number of reference models is left out: reference j is the same whatever it is). The split
        decides its training data; the fine-tuning budget is left out (only pruned models use it)."""
        train = {k: v for k, v in dataclasses.asdict(self.train).items() if k != "finetune_epochs"}
        train["max_epochs"] = self.train.epochs(tabular=self.tabular)[0]  # the default filled in: same model
        return {"kind": "original", "dataset": self.dataset, "arch": self.arch, "width": self.width,
                "seed": self.seed, "role": role, "split": self.split, "train": train}

    def pruned_key(self, role: str) -> dict[str, Any]:
        """What determines a pruned + fine-tuned model. Reference models are pruned and fine-tuned exactly
        like the target (method, sparsity, defense); shadows use the shadow method/sparsity and, unless
        the attack is adaptive, no defense."""
        like_target = role_kind(role) != "shadow"
        defended = like_target or self.adaptive
        defense = self.defense if defended else "basic"
        # DP re-estimates batch norm on the validation split before freezing it (miaray.defenses.dp): models
        # built before that carry stale statistics, so the key says which ones a DP model has.
        dp_norm = {"dp_batchnorm": "validation"} if defense == "dp" else {}
        # Prune-only models are told apart; the fine-tuned ones keep the keys they had before the option.
        prune_only = {} if self.finetune else {"finetune": False}
        return {**self.original_key(role), "kind": "pruned", **dp_norm, **prune_only,
                # The epochs that run, default filled in: an explicit max_epochs // 2 is the same model.
                "finetune_epochs": self.train.epochs(tabular=self.tabular)[1],
                "method": self.method if like_target else self.resolved_shadow_method,
                "sparsity": self.sparsity if like_target else self.resolved_shadow_sparsity,
                "defense": defense,
                "defense_params": self.resolved_defense_params if defended else {}}

    def model_key(self, role: str) -> dict[str, Any]:
        """Cache key of the model that `role` is attacked through: the pruned one, or the original itself
        when it is not pruned (an unpruned shadow in the unknown-sparsity study)."""
        key = self.pruned_key(role)
        return self.original_key(role) if key["sparsity"] == 0.0 else key

    def phi_key(self, model_key: Mapping[str, Any]) -> dict[str, Any]:
        """Cache key of a model's phi (`miaray.unit.queries`): the model's key and the queries."""
        return {**model_key, "kind": "phi", "queries": {"mirror": self.query_mirror, "shift": self.query_shift}}

    def phi_roles(self, attacks: Sequence[str]) -> list[str]:
        """The roles whose phi `attacks` read: none without a likelihood-ratio attack; else the target, the
        shadows (offline attacks) and the reference models (online attacks)."""
        wanted = set(attacks) & set(RATIO_ATTACKS)
        if not wanted:
            return []
        return ["target", *(self.shadow_roles() if wanted - set(ONLINE_ATTACKS) else []),
                *(self.reference_roles() if wanted & set(ONLINE_ATTACKS) else [])]

    # ---- roles (miaray.roles) ---------------------------------------------------------------
    def roles(self) -> list[str]:
        """Every model of the unit: the target, the shadows, the reference models."""
        return roles.roles(self.num_shadows, self.num_references)

    def shadow_roles(self) -> list[str]:
        return roles.shadow_roles(self.num_shadows)

    def reference_roles(self) -> list[str]:
        return roles.reference_roles(self.num_references)

    def unit_id(self) -> str:
        """Content hash of the configuration. Fields added after results existed are left out while
        they hold their defaults, so the units that do not use them keep their ids (and their rows)."""
        fields = dataclasses.asdict(self)
        for name, default in ADDED_FIELD_DEFAULTS.items():
            if fields[name] == default:
                del fields[name]
        return stable_hash(fields)

    def result_settings(self) -> dict[str, Any]:
        """The settings that change a unit's results beside its cell's axes (dataset, arch, width,
        method, sparsity, seed, shadows' pruning, defense, split, references), as result-row columns
        (RESULT_SETTINGS, in that order): two grids run under one experiment name with another
        --max-epochs, --shadows or --attack-epochs leave rows that differ only here, and analysis keeps
        them apart by these columns. Epoch caps are written with their defaults filled in (the epochs
        that run); `attack_epochs` None means each trained attack's own schedule."""
        max_epochs, finetune_epochs = self.train.epochs(tabular=self.tabular)
        return {"max_epochs": max_epochs, "finetune": self.finetune, "finetune_max_epochs": finetune_epochs,
                "patience": self.train.patience,
                "num_shadows": self.num_shadows, "attack_epochs": self.attack_epochs,
                "query_mirror": self.query_mirror, "query_shift": self.query_shift, "lr": self.train.lr,
                "batch_size": self.train.batch_size, "weight_decay": self.train.weight_decay,
                "monitor": self.train.monitor, "slimming_l1": self.train.slimming_l1}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UnitConfig":
        data = dict(data)
        data["train"] = TrainConfig(**data.get("train", {}))
        data["attacks"] = tuple(data.get("attacks", ATTACKS))
        if data.get("original_attacks") is not None:
            data["original_attacks"] = tuple(data["original_attacks"])
        data["split"] = tuple(data.get("split", PAPER_SPLIT))  # JSON gives a list
        data["defense_params"] = tuple((k, float(v)) for k, v in dict(data.get("defense_params", ())).items())
        return cls(**data)
