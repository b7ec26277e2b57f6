"""The command line's side of the configuration: the options a unit (`python -m miaray.unit`) and the
sweeps (`sweeps/*.py`) both take, defined once; the parsers of their values; and `with_options`, which
puts the option a user typed in place of the field name in a `ConfigError`.

A unit takes one value per option; a sweep takes the same option with its preset's value as the
default, and a comma list where the option is an axis of the grid (`--references 4,8`).
"""

from __future__ import annotations

import argparse
import itertools
import re
from typing import Any, Callable, Mapping, Sequence

from miaray.config import ConfigError, check_split
from miaray.vocabulary import ATTACKS, DEFENSE_PARAMS, DefenseSetting, attack_names, defense_of

# The configuration fields (UnitConfig's, GridSpec's) that the shared options set, by option: the rest of
# each command's map is its own (`miaray.unit.cli.UNIT_OPTIONS`, `miaray.sweep.cli.SWEEP_OPTIONS`).
SHARED_FIELDS: dict[str, str] = {
    "num_shadows": "--shadows", "num_references": "--references", "references": "--references",
    "attacks": "--attacks", "original_attacks": "--original-attacks", "attack_epochs": "--attack-epochs",
    "defense_params": "--defense-param", "adaptive": "--adaptive", "train.max_epochs": "--max-epochs",
    "max_epochs": "--max-epochs", "train.slimming_l1": "--slimming-l1", "slimming_l1": "--slimming-l1",
}


def with_options(error: ConfigError, options: Mapping[str, str]) -> ConfigError:
    """`error` with each configuration field it names replaced by the option in `options` that sets it.

    A field is replaced where it is a name, not a word of the sentence: an identifier (num_references,
    train.max_epochs) wherever it stands, a plain word (sparsity, seed, attacks) only right before '='
    or ' or '; `defense_params[ppb].lambda` becomes `--defense-param lambda`. The one place that
    turns fields into options, so every command's messages stay in step with its options."""
    text, param = str(error), options.get("defense_params", "defense_params")
    text = re.sub(r"defense_params\[(\w+)\]\.", f"{param} ", text)
    text = re.sub(r"defense_params\[(\w+)\]=(\S+) is not valid",
                  lambda m: f"{param} {m.group(2)} is not valid for {m.group(1)}", text)
    for field_name in sorted(options, key=len, reverse=True):  # train.max_epochs before max_epochs
        plain = re.fullmatch(r"[a-z]+", field_name) is not None
        follow = r"(?==| or )" if plain else r"(?![\w\[])"
        text = re.sub(rf"(?<![\w.\-\[]){re.escape(field_name)}{follow}", options[field_name], text)
    return ConfigError(text)


# ---- argparse types ------------------------------------------------------------------------------
def comma_list(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    """An argparse type: a comma list of `kind` values (an axis of a grid)."""
    def parse(text: str) -> tuple:
        return tuple(kind(item.strip()) for item in text.split(",") if item.strip())
    parse.__name__ = f"comma list of {getattr(kind, '__name__', 'value')}"
    return parse


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low` (argparse names the option in its error)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give an integer >= {low}")
        return value
    parse.__name__ = "integer"  # argparse's message for a non-number: "invalid integer value"
    return parse


def number_in(low: float, high: float, *, low_open: bool) -> Callable[[str], float]:
    """An argparse type: a number in (low, high] (`low_open`) or [low, high]; NaN is refused."""
    def parse(text: str) -> float:
        value = float(text)
        if not (low < value <= high if low_open else low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a number in "
                                             f"{'(' if low_open else '['}{low:g}, {high:g}]")
        return value
    parse.__name__ = "number"
    return parse


# ---- the shared options --------------------------------------------------------------------------
def add_shared_options(group: argparse._ActionsContainer, *, sweep: bool) -> None:
    """The options a unit and every sweep take, each with one help text: on a unit with the unit's
    default, on a sweep defaulting to its preset's value (None here; `GridSpec` fills it in), and
    the axes of a grid as comma lists."""
    def add(flag: str, help: str, *, type: Callable[[str], Any] | None = str, default: Any = None,
            shown: str = "", unset: bool = False, axis: str = "", metavar: str | None = None) -> None:
        """`shown`: the default for people; `unset`: a preset may leave the option unset, and `shown`
        is then what runs on a sweep too."""
        if sweep:
            help += (f"; a comma list is an axis of the grid, e.g. {axis}" if axis else "") + \
                    f" (default: the preset's{f', else {shown}' if unset else ''})"
            type, default = (comma_list(type) if axis else type), None
            metavar = f"{metavar},..." if axis and metavar else metavar
        elif shown:
            help += f" (default: {shown})"
        group.add_argument(flag, type=type, default=default, metavar=metavar, help=help)

    add("--attacks", f"'all' (the paper's nine) or a comma list of {', '.join(attack_names())}; lira_offline and "
        "rmia_offline read the shadows, lira and rmia need --references",
        default="conf", shown="conf, the cheapest: SAMIA's 100-epoch schedule costs minutes on a CPU")
    add("--original-attacks", "attacks on the unpruned target, fitted on the unpruned shadows: 'same' as --attacks "
        "(compared attack by attack; computed once per dataset, arch and seed, then loaded from the cache), 'conf' "
        "(the paper's Conf (Org.) baseline, cheapest), 'all', or a comma list", default="same", shown="same",
        metavar="same|conf|all|LIST")
    add("--shadows", "shadow models per cell, >= 1", type=int, default=5, shown="5")
    add("--references", "reference models of the online attacks lira (an even number >= 2) and rmia (>= 1): each "
        "trains on a random half of the target's members and non-members and is pruned and fine-tuned like the "
        "target; 0 = none", type=int, default=0, shown="0", axis="4,8", metavar="N")
    add("--attack-epochs", "epochs of the trained attacks (nn, top3_nn, nncls, samia), >= 1", type=int,
        shown="each attack's own schedule: SAMIA 100, MLPs 30", unset=True)
    add("--max-epochs", "epoch cap of the originals' training, >= 1; fine-tuning after pruning gets half of it "
        "(at least 1)", type=int, shown="100 images / 50 tabular", unset=True)
    add("--slimming-l1", "network slimming's L1 penalty on the batch-norm scales while training the originals, >= 0 "
        "(Liu et al. use about 1e-4; 0, off: the paper describes no such phase)", type=float, default=0.0,
        shown="0")
    group.add_argument("--defense-param", action="append", default=[],
                       metavar="NAME=VALUE[,VALUE...]" if sweep else "NAME=VALUE",
                       help="a defense hyperparameter, repeatable: lambda=4 (ppb, >= 0), noise_multiplier=1 (dp, "
                            ">= 0), max_grad_norm=1 (dp, > 0), alpha=4 (adv, >= 0); unnamed ones keep their defaults"
                            + ("; a comma list of values is an axis of its defense, e.g. lambda=1,4,16, and the "
                               "defense must be in --defenses" if sweep else ""))
    if sweep:
        group.add_argument("--adaptive", nargs="?", const="yes", type=comma_list(str), metavar="no,yes",
                           help="shadows fine-tuned with the target's defense too (the adaptive attacker): no, yes, "
                                "or both as an axis (no,yes); --adaptive alone is yes (default: the preset's, no)")
    else:
        group.add_argument("--adaptive", action="store_true",
                           help="shadows fine-tuned with the target's defense too (the adaptive attacker)")


def add_place_options(group: argparse._ActionsContainer, *, cache_default: str) -> None:
    """Where the artifact store and the datasets live: both commands' --cache and --data-root."""
    group.add_argument("--cache", help=f"artifact store (default: {cache_default})")
    group.add_argument("--data-root", help="dataset folder (default: $MIARAY_DATA, else ~/.cache/miaray/data on "
                                           "each machine)")


# ---- values ----------------------------------------------------------------------------------------
def parse_name_values(items: Sequence[str], *, option: str) -> tuple[tuple[str, float], ...]:
    """`NAME=VALUE` command-line items (e.g. `lambda=4`) as (name, number) pairs; a malformed item
    raises ConfigError naming the option."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        try:
            pairs.append((name.strip(), float(value)))
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"{option} {item!r}: expected NAME=VALUE with a number, e.g. lambda=4")
    return tuple(pairs)


def parse_name_value_lists(items: Sequence[str], *, option: str) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """`NAME=VALUE[,VALUE...]` command-line items (e.g. `lambda=1,4,16`) as (name, values) pairs: a grid
    axis per hyperparameter. A malformed item, or a name given twice, raises ConfigError naming the option."""
    pairs: dict[str, tuple[float, ...]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        try:
            values = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            values = ()
        if not sep or not name or not values:
            raise ConfigError(f"{option} {item!r}: expected NAME=VALUE[,VALUE...] with numbers, e.g. lambda=1,4,16")
        if name in pairs:
            raise ConfigError(f"{option} names {name!r} twice: give its values once, as a comma list "
                              f"({name}={','.join(f'{v:g}' for v in (*pairs[name], *values))})")
        pairs[name] = tuple(dict.fromkeys(values))
    return tuple(pairs.items())


def defense_settings(defenses: Sequence[str], params: Sequence[tuple[str, Sequence[float]]], *,
                     fallback: Sequence[DefenseSetting] = (), option: str = "--defense-param",
                     defenses_option: str = "--defenses") -> tuple[DefenseSetting, ...]:
    """The defense settings of a grid: per defense in `defenses`, every combination of the values its
    hyperparameters take in `params` (the others at their defaults); a defense none of whose
    hyperparameters is in `params` keeps its settings in `fallback` (a preset's), else its defaults.
    A hyperparameter no defense takes, or one whose defense is not listed, raises ConfigError naming
    the options."""
    for name, values in params:
        owner = defense_of(name)
        if owner is None:
            takes = "; ".join(f"{', '.join(p)} ({d})" for d, p in DEFENSE_PARAMS.items() if p)
            raise ConfigError(f"{option} {name}=...: no defense takes {name!r}; the hyperparameters are {takes}")
        if owner not in defenses:
            raise ConfigError(f"{option} {name}={','.join(f'{v:g}' for v in values)} belongs to {owner}, which "
                              f"{defenses_option} ({', '.join(defenses) or 'none'}) does not list: add {owner} to it")
    settings: list[DefenseSetting] = []
    for defense in dict.fromkeys(defenses):
        mine = [(name, values) for name, values in params if defense_of(name) == defense]
        if mine:
            settings += [(defense, tuple(zip([n for n, _ in mine], combo)))
                         for combo in itertools.product(*[values for _, values in mine])]
        else:
            settings += [s for s in fallback if s[0] == defense] or [(defense, ())]
    return tuple(settings)


def parse_attacks(text: str, *, option: str) -> tuple[str, ...]:
    """A command-line attack list: 'all' (the paper's nine) or a comma list (names are checked by
    `UnitConfig.validate`); an empty one raises ConfigError naming the option."""
    attacks = ATTACKS if text.strip() == "all" else tuple(a.strip() for a in text.split(",") if a.strip())
    if not attacks:
        raise ConfigError(f"{option} {text!r} is empty: give 'all' or a comma list of {', '.join(attack_names())}")
    return attacks


def parse_original_attacks(text: str, *, option: str) -> tuple[str, ...] | None:
    """The command-line value of `UnitConfig.original_attacks`: 'same' (None: the unit's attack list),
    'conf' (the paper's Conf (Org.) baseline), 'all' or a comma list, as `parse_attacks`."""
    return None if text.strip() == "same" else parse_attacks(text, option=option)


def parse_split(text: str, *, option: str) -> tuple[int, int, int]:
    """A `TRAIN/TEST/VAL` command-line value (e.g. `50/40/10`) as a checked split; a malformed or
    invalid one raises ConfigError naming the option."""
    try:
        split = tuple(int(part) for part in text.split("/"))
    except ValueError:
        split = text  # not integers: check_split names the option and the valid form
    check_split(split, name=option)
    return split
