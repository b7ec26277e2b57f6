"""The sweep scripts' command line: the options every sweep shares, the two mains, and what they
print at the end (the cell table, the unknown-pruning tables)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Sequence

import pandas as pd
import ray

from miaray import results
from miaray.cli import HelpFormatter, add_debug_option, check_writable_folder, entry_point
from miaray.config import ConfigError
from miaray.options import (SHARED_FIELDS, add_place_options, add_shared_options, comma_list, defense_settings,
                            int_at_least, number_in, parse_attacks, parse_name_value_lists, parse_original_attacks,
                            parse_split, with_options)
from miaray.store import default_root
from miaray.sweep.cluster import check_address, cluster_info, connect, default_gpus, resource_problems
from miaray.sweep.grid import PRESETS, UNKNOWN_PRESETS, GridSpec, check_axis, method_pairs, sparsity_matrix, unique
from miaray.sweep.plan import Plan
from miaray.sweep.settings import RunSettings, absolute
from miaray.sweep.shared import share
from miaray.sweep.trials import complete, headline, resume_refusal, run_sweep, started
from miaray.unknown_pruning import (PAIRS_COLUMNS, PAIRS_FILE, RANDOM_PAIRS, accuracy_loss_table, headline_attack,
                                    known_pruning, sparsity_matrix_table)
from miaray.vocabulary import ARCHS, DATASETS, DEFENSES, DEFENSE_PARAMS, METHODS, attack_names, defense_label

MAX_CPUS = 1024  # per trial: far above any node, a guard against typos
# The option that sets each UnitConfig and GridSpec field, for `with_options` (the shared ones: `miaray.options`).
SWEEP_OPTIONS: dict[str, str] = {
    **SHARED_FIELDS, "dataset": "--datasets", "arch": "--archs", "method": "--methods", "sparsity": "--sparsities",
    "seed": "--seeds", "width": "--widths", "split": "--splits", "defense": "--defenses",
    "datasets": "--datasets", "archs": "--archs", "methods": "--methods", "sparsities": "--sparsities",
    "seeds": "--seeds", "widths": "--widths", "splits": "--splits", "defenses": "--defenses", "finetune": "--finetune",
}


# ---- summaries -----------------------------------------------------------------------------------
def cell_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One line per cell: pruned target test accuracy, the best attack and its accuracy, the best attack on
    the original (the same attacks, unless the cell ran the paper's Conf-only baseline) and Conf (Org.)."""
    if df.empty:  # no cell left rows (e.g. every trial's node was lost)
        return pd.DataFrame()
    lines = []
    for _, rows in df.groupby("unit_id", sort=False):
        first = rows.iloc[0]
        line = {k: first[k] for k in ("dataset", "arch", "width", "method", "sparsity", "split_ratio",
                                      "shadow_method", "shadow_sparsity", "seed")}
        line["num_references"] = first.get("num_references", 0)  # rows from before reference models: none
        # The defense setting as people read it ('ppb lambda=4'), sorted by defense then its hyperparameters.
        params = {p: first.get(f"defense_{p}", math.nan) for p in DEFENSE_PARAMS.get(first["defense"], {})}
        params = {p: v for p, v in params.items() if not pd.isna(v)}
        # Rows from before the option were all fine-tuned.
        finetune = first.get("finetune", True)
        line.update(defense=defense_label(first["defense"], params), adaptive=bool(first.get("adaptive", False)),
                    finetune=True if pd.isna(finetune) else bool(finetune),
                    _defense=(DEFENSES.index(first["defense"]) if first["defense"] in DEFENSES else len(DEFENSES),
                              *params.values()))
        head = headline(rows.to_dict("records"))  # what the cell's trial reported to Tune
        if head["status"] != "ok":
            line.update(test_acc=math.nan, best_attack="FAILED", best_attack_acc=math.nan,
                        org_best_attack_acc=math.nan, conf_org_acc=math.nan, error=str(head["error"]))
        else:
            line.update(test_acc=head["target_test_acc"], best_attack=head["best_attack"],
                        best_attack_acc=head["best_attack_acc"],
                        org_best_attack_acc=head["original_best_attack_acc"], conf_org_acc=head["conf_org_acc"])
        lines.append(line)
    table = pd.DataFrame(lines)
    if table.empty:
        return table
    # Keep the four keys of a cell, and the others only where they say something.
    table["num_references"] = table["num_references"].fillna(0).astype(int)
    constant = [c for c in ("width", "split_ratio", "defense", "adaptive", "finetune", "seed", "num_references")
                if table[c].nunique() == 1]
    constant += ["shadow_method", "shadow_sparsity"] if len(known_pruning(table)) == len(table) else []
    if "error" in table:
        table["error"] = table["error"].fillna("")
    # Every key of a cell, so the order depends on the cells only, never on when each one finished.
    keys = ["dataset", "arch", "width", "method", "sparsity", "split_ratio", "shadow_method", "shadow_sparsity",
            "_defense", "adaptive", "finetune", "num_references", "seed"]
    return table.sort_values(keys, kind="stable", ignore_index=True).drop(columns=[*constant, "_defense"])


def _format(table: pd.DataFrame) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.3f}") if not table.empty else "(no rows)"


def record_pairs(experiment: str, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Add the drawn (known, unknown) unit-id pairs to the experiment's PAIRS_FILE (earlier draws kept:
    a rerun with another --pair-seed adds to the study); returns all the pairs recorded there."""
    path = f"{experiment.rstrip('/')}/{PAIRS_FILE}"
    drawn = pd.DataFrame(list(pairs), columns=PAIRS_COLUMNS)
    recorded = pd.concat([results.read_parquet(path), drawn], ignore_index=True).drop_duplicates(ignore_index=True)
    results.write_parquet(recorded, path)
    return recorded


def unknown_pruning_summary(df: pd.DataFrame, *, matrix: bool, pairs: pd.DataFrame | None = None) -> str:
    """What `unknown_pruning_main` prints after the sweep, from its own rows: the sparsity matrix of the
    headline attack (when the matrix study ran) and Table 1 over the drawn `pairs` and per study,
    both as `miaray.unknown_pruning` (and so the analysis scripts) compute them."""
    attack = headline_attack(df) if not df.empty else None
    if attack is None:
        return "no attack on a pruned target succeeded: no unknown-pruning tables"
    lines = []
    if matrix:
        lines += [f"attack accuracy of {attack}, target sparsity (rows) x shadow sparsity (columns):",
                  _format(sparsity_matrix_table(df, attack=attack)), ""]
    table = accuracy_loss_table(df, pairs=pairs)
    lines += ["attack accuracy loss (acc_known - acc_unknown) / acc_known, one column per attack, mean per study: "
              f"'{RANDOM_PAIRS}' over the drawn pairs (the paper's Table 1), 'method' over every unit whose shadows "
              "used another method, 'sparsity' over same method, another sparsity:",
              _format(table) if not table.empty else
              "(no successful unit with differently pruned shadows has its known-pruning unit in this sweep)"]
    return "\n".join(lines)


# ---- command line --------------------------------------------------------------------------------
def experiment_name(text: str) -> str:
    """An argparse type: one folder name, so the experiment stays inside --storage."""
    if not text or "/" in text or "\\" in text or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r}: an experiment name is one folder name under --storage "
                                         "(no '/', not '.' or '..')")
    return text


def ray_address(text: str) -> str:
    """An argparse type: 'auto', 'local', HOST:PORT or a ray:// address (whether it answers is checked
    when the sweep connects)."""
    try:
        check_address(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--address {text!r}: ")) from None
    return text


def build_parser(*, prog: str, description: str, presets: dict[str, GridSpec]) -> argparse.ArgumentParser:
    """The options every sweep script shares."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=HelpFormatter)
    g = p.add_argument_group("grid (a preset, narrowed or changed by the filters)")
    g.add_argument("--preset", choices=sorted(presets), default="quick",
                   help="the grid the filters below narrow or change")
    g.add_argument("--datasets", type=comma_list(str), help=f"comma list of {', '.join(DATASETS)} (default: the preset's)")
    g.add_argument("--archs", type=comma_list(str), help=f"comma list of {', '.join(ARCHS)} (default: the preset's)")
    g.add_argument("--methods", type=comma_list(str), help=f"comma list of {', '.join(METHODS)} (default: the preset's)")
    g.add_argument("--sparsities", type=comma_list(float), help="comma list of target sparsities in (0, 1), e.g. 0.5,0.9 (default: the preset's)")
    g.add_argument("--seeds", type=comma_list(int), help="comma list of integer seeds in [0, 2^32 - shadows) (default: the preset's)")
    g.add_argument("--splits", type=comma_list(str), metavar="TRAIN/TEST/VAL,...",
                   help="comma list of train/test/validation percentages of each half, e.g. 45/45/10,60/30/10 "
                        "(paper Table 2; default: the preset's)")
    g.add_argument("--widths", "--width", type=comma_list(float), dest="widths",
                   help="comma list of channel multipliers > 0 (< 1: narrow models), e.g. 0.125,0.5 (default: the preset's)")
    g.add_argument("--defenses", "--defense", type=comma_list(str), dest="defenses", metavar="DEFENSE,...",
                   help=f"comma list of {', '.join(DEFENSES)}, applied while fine-tuning the pruned target, an axis: e.g. "
                        "basic,ppb,dp,adv (default: the preset's, basic; a listed defense keeps the preset's settings "
                        "unless --defense-param names its hyperparameters)")
    g.add_argument("--finetune", type=comma_list(str), metavar="yes,no",
                   help="fine-tune the pruned models (yes), prune only: the original's weights with the masks applied, "
                        "nothing trained (no), or both as an axis (yes,no: Basic's cells run once more without "
                        "fine-tuning; shadows and reference models alike) (default: the preset's, yes)")
    add_shared_options(g, sweep=True)
    r = p.add_argument_group("run")
    r.add_argument("--storage", default="~/miaray-results",
                   help="results and Tune state: a local folder or a URI such as s3://bucket/prefix (default: %(default)s)")
    r.add_argument("--name", type=experiment_name,
                   help="experiment folder name under --storage, one path component (default: <script>-<preset>)")
    add_place_options(r, cache_default="<storage>/cache for a local --storage, else $MIARAY_CACHE or "
                                        "~/.cache/miaray/store; on a cluster a shared mount")
    r.add_argument("--address", default="auto", type=ray_address,
                   help="Ray to use: 'auto' (a cluster started as one: $RAY_ADDRESS, else a `ray start` node on this "
                        "machine such as a cluster's head; else a new private instance), 'local' (always a new "
                        "private instance) or the host:port of a cluster (default: %(default)s)")
    r.add_argument("--cpus-per-trial", type=number_in(0, MAX_CPUS, low_open=True), default=1.0,
                   help="CPUs each trial and model build takes, in (0, %d] (default: %%(default)s)" % MAX_CPUS)
    r.add_argument("--gpus-per-trial", type=number_in(0, 1, low_open=False),
                   help="GPUs each trial and model build takes, in [0, 1]; e.g. 0.25 packs four trials on a GPU (default: 1 if a node or autoscaler node "
                        "type has a GPU, else 0)")
    r.add_argument("--retries", type=int_at_least(0), default=2,
                   help="times a failed trial or model build is retried, >= 0 (spot nodes get interrupted; a retried "
                        "cell loads the models the store holds; default: %(default)s)")
    r.add_argument("--resume", action="store_true",
                   help="continue the experiment --storage/--name (which must exist): cells with ok rows are "
                        "kept, the others run; a plain rerun does the same")
    r.add_argument("--dry-run", action="store_true", help="print the plan and exit; trains nothing")
    add_debug_option(r)
    return p


def spec_from_args(args: argparse.Namespace, presets: dict[str, GridSpec]) -> GridSpec:
    """The preset with the command-line overrides, validated (raises ConfigError)."""
    spec = presets[args.preset]
    overrides = {field: getattr(args, field) for field in
                 ("datasets", "archs", "methods", "sparsities", "seeds", "widths", "references", "max_epochs",
                  "attack_epochs", "slimming_l1") if getattr(args, field) is not None}
    if args.attacks is not None:
        overrides["attacks"] = parse_attacks(args.attacks, option="--attacks")
    if args.original_attacks is not None:
        overrides["original_attacks"] = parse_original_attacks(args.original_attacks, option="--original-attacks")
    if args.shadows is not None:
        overrides["num_shadows"] = args.shadows
    if args.splits is not None:
        overrides["splits"] = tuple(parse_split(text, option="--splits") for text in args.splits)
    if args.adaptive is not None:
        check_axis("--adaptive", args.adaptive, ("no", "yes"))
        overrides["adaptive"] = tuple(dict.fromkeys(value == "yes" for value in args.adaptive))
    if args.finetune is not None:
        check_axis("--finetune", args.finetune, ("yes", "no"))
        overrides["finetune"] = tuple(dict.fromkeys(value == "yes" for value in args.finetune))
    if args.defenses is not None or args.defense_param:
        names = args.defenses if args.defenses is not None else tuple(dict.fromkeys(d for d, _ in spec.defenses))
        check_axis("--defenses", names, DEFENSES)
        overrides["defenses"] = defense_settings(
            names, parse_name_value_lists(args.defense_param, option="--defense-param"), fallback=spec.defenses)
    spec = dataclasses.replace(spec, **overrides)
    for name, values, choices in (("datasets", spec.datasets, DATASETS), ("archs", spec.archs, ARCHS),
                                  ("methods", spec.methods, METHODS), ("attacks", spec.attacks, attack_names())):
        check_axis(name, values, choices)
    return spec.validate()


def experiment_path(args: argparse.Namespace, *, name: str) -> str:
    """The experiment folder --storage/--name (`name`: the script's default for --name), absolute."""
    return f"{absolute(args.storage).rstrip('/')}/{args.name or name}"


def check_resume(args: argparse.Namespace, parser: argparse.ArgumentParser, *, name: str) -> None:
    """--resume continues an experiment: where none ever ran (a typo in --name or --storage), it is the
    parser's error (one line naming the experiments --storage holds, exit 2), before Ray starts and in a
    dry run alike, so that nothing is planned for nothing and no empty experiment folder is left behind.
    A sweep ran where the folder holds rows/ or Tune's state; a defense search, where it holds its study."""
    if not args.resume:
        return
    experiment = experiment_path(args, name=name)
    study = "://" not in experiment and os.path.isfile(f"{experiment}/study.db")
    if not (started(experiment) or study):
        parser.error(resume_refusal(experiment))


def settings_from_args(args: argparse.Namespace, *, name: str) -> RunSettings:
    """Where results, Tune state, cache and data live, and the resources per trial. Once connected, it
    also checks them (raises ConfigError naming each option that cannot work): a local --storage or
    --cache this machine cannot write or some node does not see, resources no node can give. One check
    writes: whether every node sees a local folder is told by a marker written into it (`share`, which
    creates the folder), before any refusal, so that a refusal names every option at once."""
    storage = absolute(args.storage)
    experiment = experiment_path(args, name=name)
    cache = absolute(args.cache) if args.cache else str(default_root()) if "://" in storage else f"{storage}/cache"
    data_root = args.data_root or os.environ.get("MIARAY_DATA")
    settings = RunSettings(experiment=experiment, store=cache, data_root=absolute(data_root) if data_root else None,
                           cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial or 0.0)
    if not ray.is_initialized():  # a dry run: no cluster to check against, no folder to create
        return settings
    for option, folder in (("--storage", storage), ("--storage/--name", experiment), ("--cache", cache)):
        check_writable_folder(folder, option=option)  # here, before any trial writes there
    info = cluster_info()
    if args.gpus_per_trial is None:
        gpus, why = default_gpus(info)
        print(why, flush=True)
        settings = dataclasses.replace(settings, gpus_per_trial=gpus)
    settings, unshared = share(settings, folders={"--storage": experiment, "--cache": cache})
    problems = resource_problems(settings, info) + unshared
    if problems:
        raise ConfigError("this run cannot work on this Ray cluster:\n  " + "\n  ".join(problems))
    return settings


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser,
           presets: dict[str, GridSpec]) -> tuple[argparse.Namespace, GridSpec]:
    args = parser.parse_args(argv)
    try:
        spec = spec_from_args(args, presets)
    except ConfigError as error:  # exits with status 2 before Ray starts, naming the options
        parser.error(str(with_options(error, SWEEP_OPTIONS)))
    return args, spec


def _run_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, *, name: str) -> RunSettings:
    connect(address=args.address)
    try:
        return settings_from_args(args, name=name)
    except ConfigError as error:
        parser.error(str(error))  # before any trial


@entry_point(prog="full_grid.py", resume="cells with ok rows are kept; rerun the same command to run the others")
def full_grid_main(argv: list[str] | None = None) -> int:
    """`sweeps/full_grid.py`: the known-pruning grid (paper section 5.2)."""
    parser = build_parser(prog="full_grid.py", presets=PRESETS,
                          description="Train, prune, fine-tune and attack every cell of a grid on Ray Tune.")
    args, spec = parse_args(argv, parser, PRESETS)
    check_resume(args, parser, name=f"full_grid-{args.preset}")
    cells = spec.cells()
    plan = Plan.of(cells)
    print(plan.describe(), flush=True)
    if args.dry_run:
        return 0
    settings = _run_settings(args, parser, name=f"full_grid-{args.preset}")
    try:
        df = run_sweep(cells=cells, settings=settings, resume=args.resume, retries=args.retries)
    except ConfigError as error:  # --resume of an experiment that never ran
        parser.error(str(error))
    print("\n" + _format(cell_summary(df)))
    return 0 if complete(df, cells) else 1


@entry_point(prog="unknown_pruning.py", resume="cells with ok rows are kept; rerun the same command to run the others")
def unknown_pruning_main(argv: list[str] | None = None) -> int:
    """`sweeps/unknown_pruning.py`: unknown sparsity (matrix) and unknown method and sparsity (pairs)."""
    parser = build_parser(prog="unknown_pruning.py", presets=UNKNOWN_PRESETS,
                          description="Attack pruned targets with shadows pruned differently (paper 5.2.5).")
    parser.add_argument("--study", choices=("sparsity", "method", "both"), default="both",
                        help="sparsity: target x shadow sparsity matrix (l1_unstructured unless --methods); "
                             "method: random (method, sparsity) pairs; both: the two")
    parser.add_argument("--pairs", type=int_at_least(1), default=20, help="random pairs per dataset and arch, >= 1")
    parser.add_argument("--pair-seed", type=int, default=0, help="integer seed of the random pair draws")
    args, spec = parse_args(argv, parser, UNKNOWN_PRESETS)
    matrix_spec = spec if args.methods else dataclasses.replace(spec, methods=("l1_unstructured",))
    try:
        matrix = sparsity_matrix(matrix_spec) if args.study in ("sparsity", "both") else []
        pairs = method_pairs(spec, pairs=args.pairs, seed=args.pair_seed) if args.study in ("method", "both") else []
    except ConfigError as error:  # e.g. several --splits: this study runs one
        parser.error(str(with_options(error, SWEEP_OPTIONS)))
    cells = unique(matrix + [c for pair in pairs for c in pair])
    if not cells:  # --study method on one (method, sparsity) setting: no shadow can be pruned otherwise
        parser.error(f"--study {args.study}: the grid has one pruning setting per dataset and arch, so no shadow "
                     "can be pruned differently from its target; give several --sparsities or --methods")
    check_resume(args, parser, name=f"unknown_pruning-{args.preset}")
    print(Plan.of(cells).describe(), flush=True)
    if args.dry_run:
        return 0
    settings = _run_settings(args, parser, name=f"unknown_pruning-{args.preset}")
    # Recorded before the sweep, so that a killed and resumed study keeps them.
    recorded = record_pairs(settings.experiment, [(k.unit_id(), u.unit_id()) for k, u in pairs]) if pairs else None
    try:
        df = run_sweep(cells=cells, settings=settings, resume=args.resume, retries=args.retries)
    except ConfigError as error:  # --resume of an experiment that never ran
        parser.error(str(error))
    print("\n" + unknown_pruning_summary(df, matrix=bool(matrix), pairs=recorded))
    return 0 if complete(df, cells) else 1
