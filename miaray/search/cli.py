"""The command line of `sweeps/defense_search.py`: the search presets, the grid's options (one cell) and
run options plus the search's own, the cells the filters leave, what a search trains, and
`defense_search_main`, which searches, confirms and writes the outputs."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Sequence

import ray

from miaray.cli import entry_point
from miaray.config import ConfigError, UnitConfig
from miaray.options import int_at_least, parse_name_values, with_options
from miaray.search.confirm import run_confirmation
from miaray.search.outputs import write_outputs
from miaray.search.space import DEFAULT_PRIVACY_METRIC, PRIVACY_METRICS, SEARCH_SPACES, TPR_METRIC
from miaray.search.spec import DEFAULT_CONFIRM_SEEDS, DEFAULT_CONFIRM_TOP, Search
from miaray.search.study import budget_used
from miaray.search.trials import run_search
from miaray.sweep import GridSpec, RunSettings, build_parser, connect, parse_args, settings_from_args
from miaray.sweep.cli import SWEEP_OPTIONS, check_resume
from miaray.vocabulary import TRAINED_ATTACKS, defense_label


SEARCH_PRESETS: dict[str, GridSpec] = {
    # The paper's question on embedded data: the regime where pruning raises leakage (the claims preset's
    # C1 'holds' cell: digits, ResNet18 at width 0.5, L1 unstructured at 0.9; the same models as the grid's
    # `defenses` preset, so they share the store), two search seeds per trial, 2 shadows, at most 30 epochs,
    # the trained attacks at a fifth of their own schedules. Sized for at most 30 minutes on 2 CPU
    # cores with the default confirmation (docs/defense_search.md).
    "quick": GridSpec(datasets=("digits",), archs=("resnet18",), methods=("l1_unstructured",), sparsities=(0.9,),
                      seeds=(0, 1), widths=(0.5,), attacks=("conf", "mentr", "nn", "samia"), num_shadows=2,
                      max_epochs=30, attack_epochs=20, adaptive=(True,)),
    # The paper's defense setting (section 6): CIFAR10 ResNet18, L1 unstructured at sparsity 0.7.
    "paper": GridSpec(datasets=("cifar10",), archs=("resnet18",), methods=("l1_unstructured",),
                      sparsities=(0.7,), adaptive=(True,)),
}


# The default budget per preset: quick's fits its 30 minutes with the confirmation (docs/defense_search.md).
PRESET_TRIALS = {"quick": 10, "paper": 16}


def _points(items: Sequence[str]) -> tuple[tuple[tuple[str, float], ...], ...]:
    return tuple(tuple(sorted(dict(parse_name_values(item.split(","), option="--point")).items()))
                 for item in items)


def _seed_list(text: str) -> tuple[int, ...]:
    return tuple(int(item.strip()) for item in text.split(",") if item.strip())


_seed_list.__name__ = "comma list of integers"  # argparse's message for a malformed value


def _attack_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def build_search_parser() -> argparse.ArgumentParser:
    """The grid's options (one cell) and run options, plus the search's own."""
    p = build_parser(prog="defense_search.py", presets=SEARCH_PRESETS, description=(
        "Search defense hyperparameters for one cell with Optuna (maximise test accuracy, minimise the "
        "strongest attack's advantage, AUC or TPR at low FPR; means over --seeds), trials on Ray, then re-run "
        "the front on held-out seeds and attacks. The grid filters must leave one cell; --defense may list "
        "several defenses (one study, the defense a parameter). The attack is always adaptive, and the same "
        "command resumes the study it finds in --storage/--name (--adaptive and --resume are implied)."))
    s = p.add_argument_group("search")
    s.add_argument("--trials", type=int_at_least(1),
                   help="total budget in trials (each runs every --seeds seed), >= 1, the paper-grid points included "
                        f"(default: {', '.join(f'{n} with --preset {p}' for p, n in PRESET_TRIALS.items())})")
    s.add_argument("--concurrency", type=int_at_least(1),
                   help="trials at once, >= 1 (default: as many as the cluster fits at the per-trial resources, "
                        "divided by the number of seeds)")
    s.add_argument("--point", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                   help="a point to evaluate before the paper grid, repeatable, e.g. noise_multiplier=3,max_grad_norm=0.5 "
                        "(its names say its defense; unnamed parameters at their defaults; may lie outside the "
                        "search space)")
    s.add_argument("--sampler-seed", type=int, default=0, help="integer seed of the TPE sampler")
    s.add_argument("--privacy-metric", choices=tuple(PRIVACY_METRICS), default=DEFAULT_PRIVACY_METRIC,
                   help="the privacy objective, per seed the strongest attack's: advantage (TPR - FPR at its own "
                        "decision), auc, or TPR at 1%% / 0.1%% FPR (refused where the dataset's non-members cannot "
                        "measure it)")
    c = p.add_argument_group("confirmation (after the budget)")
    c.add_argument("--confirm-top", type=int_at_least(0), default=DEFAULT_CONFIRM_TOP,
                   help="front points re-run on the held-out seeds with the held-out attacks, at most K, spread "
                        "along the front when it is longer; 0: no confirmation")
    c.add_argument("--confirm-seeds", type=_seed_list, metavar="SEED,...",
                   help=f"held-out seeds, at least 2, disjoint from --seeds (default: the {DEFAULT_CONFIRM_SEEDS} "
                        "seeds after the largest search seed)")
    c.add_argument("--confirm-attacks", type=_attack_list, metavar="ATTACK,...",
                   help="held-out attacks, run beside the searched ones (default: the paper's attacks not in "
                        "--attacks, and lira_offline and rmia_offline; rmia_offline needs 2 shadows)")
    return p


def _default_concurrency(settings: RunSettings, *, seeds: int = 1) -> int:
    if not ray.is_initialized():  # a dry run: no cluster to measure
        return 1
    resources = ray.cluster_resources()
    fits = resources.get("CPU", 1) / max(settings.cpus_per_trial, 1e-9)
    if settings.gpus_per_trial > 0:
        fits = min(fits, resources.get("GPU", 0) / settings.gpus_per_trial)
    return max(1, int(fits) // max(1, seeds))


def search_cells(spec: GridSpec) -> tuple[list[UnitConfig], str]:
    """The cells of a search grid at its first seed, one per defense, or ('', why not)."""
    cells = dataclasses.replace(spec, adaptive=(True,)).cells()
    first = [c for c in cells if c.seed == spec.seeds[0]]
    place = {(c.dataset, c.arch, c.width, c.method, c.sparsity, c.split, c.num_references) for c in first}
    defenses = [c.defense for c in first]
    if len(place) != 1 or len(set(defenses)) != len(defenses) or len(cells) != len(first) * len(spec.seeds):
        settings = ", ".join(defense_label(c.defense, c.defense_params) for c in first)
        return [], (f"the grid filters leave {len(first)} cells per seed ({len(place)} "
                    f"cell{'s' if len(place) != 1 else ''} times the defense settings {settings}); a search takes one "
                    "cell (pass one value each to --datasets, --archs, --methods, --sparsities, --splits, --widths, "
                    "--references) and at most one setting per defense "
                    "(one value per --defense-param); --seeds and --defense may list several")
    return first, ""


# The options the search's errors name: the sweep's, with --defense as the README writes it for a search.
SEARCH_OPTIONS = {**SWEEP_OPTIONS, "defense": "--defense", "defenses": "--defense", "trials": "--trials",
                  "concurrency": "--concurrency", "sampler_seed": "--sampler-seed"}


def search_trainings(search: Search) -> list[str]:
    """What a search trains, for its plan (and --dry-run), and the cost warning past the thresholds of
    `miaray.sweep.plan.cost_warning`: the originals of every search and held-out seed, then per unit (a
    trial's seed, the undefended unit of each seed, a confirmation) the target and every shadow pruned
    and fine-tuned (adaptive: each unit's own) and its trained attacks. Upper bounds: every trial runs,
    every model at its epoch cap."""
    from miaray.sweep.plan import cost_warning

    c = search.cell
    epochs, finetune = c.train.epochs(tabular=c.tabular)
    seeds, held_out = len(search.search_seeds), len(search.held_out_seeds) if search.confirm_top else 0
    per_unit = 1 + c.num_shadows
    searched = search.trials * seeds + seeds
    confirming = search.confirm_top * held_out + held_out
    originals = (seeds + held_out) * per_unit
    models = originals + (searched + confirming) * per_unit
    total = originals * epochs + (searched + confirming) * per_unit * finetune
    attacks = (searched * len(set(c.attacks) & set(TRAINED_ATTACKS))
               + confirming * len(set(search.confirm_attack_list) & set(TRAINED_ATTACKS)))
    warning = cost_warning(models=models, epochs=total, epoch_cap=epochs,
                           cpus_at_once=min(search.concurrency, search.trials) * seeds * search.settings.cpus_per_trial)
    return [f"trainings: at most {models:,} models ({originals:,} originals, then {per_unit} pruned and fine-tuned "
            f"per unit: {search.trials:,} trials x {seeds} seeds, the undefended unit of each seed"
            + (", the confirmations" if held_out else "") + f"), at most {total:,} epochs in all; {attacks:,} attack "
            "models trained", *([warning] if warning else [])]


@entry_point(prog="defense_search.py", resume="finished trials are kept; rerun the same command to resume")
def defense_search_main(argv: list[str] | None = None) -> int:
    """`sweeps/defense_search.py`: one search, its confirmation, then the Pareto table, files and plot."""
    parser = build_search_parser()
    args, spec = parse_args(argv, parser, SEARCH_PRESETS)
    if args.defenses is None:  # else the preset's Basic would be refused: a defense nobody typed
        parser.error(f"--defense is required: the defense whose hyperparameters to search, one or several of "
                     f"{', '.join(SEARCH_SPACES)} (e.g. --defense ppb)")
    cells, why = search_cells(spec)
    if not cells:
        parser.error(why)
    try:
        points = _points(args.point)
    except ConfigError as error:
        parser.error(str(error))
    cell = cells[0]
    name = (f"defense_search-{cell.dataset}-{cell.arch}-{cell.method}-{cell.sparsity:g}-"
            f"{'+'.join(c.defense for c in cells)}")
    check_resume(args, parser, name=name)  # --resume of a search that never ran: refused before Ray starts
    if not args.dry_run:
        connect(address=args.address)  # first: the default --gpus-per-trial depends on the cluster
    try:
        settings = settings_from_args(args, name=name)  # checked against the cluster once connected
        search = Search(cells=tuple(cells), trials=args.trials or PRESET_TRIALS[args.preset], settings=settings,
                        seeds=tuple(spec.seeds),
                        privacy_metric=args.privacy_metric, confirm_top=args.confirm_top,
                        confirm_seeds=tuple(args.confirm_seeds or ()), confirm_attacks=args.confirm_attacks,
                        points=points, sampler_seed=args.sampler_seed, retries=args.retries,
                        concurrency=args.concurrency or _default_concurrency(settings, seeds=len(spec.seeds))
                        ).validate()
    except ConfigError as error:
        parser.error(str(with_options(error, SEARCH_OPTIONS)))
    print("\n".join([search.describe(), *search_trainings(search)]), flush=True)
    if args.dry_run:
        return 0
    study = run_search(search, log=lambda m: print(m, flush=True))
    run_confirmation(search, study, log=lambda m: print(m, flush=True))
    front = write_outputs(search, study=study)
    column = search.column
    shown = ["trial", *(["defense"] if search.multi else []), "setting", "target_test_acc", column,
             "strongest_attack", "epsilon"]
    if search.confirm_top:
        shown += ["confirmed_target_test_acc", f"confirmed_{column}", f"confirmed_all_{column}",
                  "confirmed_best_tpr_attack", f"confirmed_best_{TPR_METRIC}", "flagged"]
    print(f"\nPareto front ({len(front)} of {budget_used(study)} trials; search-time values are means over seeds "
          f"{', '.join(map(str, search.search_seeds))}"
          + (f", confirmed ones over held-out seeds {', '.join(map(str, search.held_out_seeds))} with every "
             "confirming attack in confirmed_all" if search.confirm_top else "")
          + f") in {settings.experiment}/pareto.parquet:")
    print(front[[c for c in shown if c in front]].to_string(index=False, float_format=lambda v: f"{v:.4g}")
          if len(front) else "(empty)")
    if search.confirm_top and len(front) and front["flagged"].any():
        flagged = front.loc[front["flagged"], ["trial", "flag_reason"]].itertuples(index=False)
        print(f"flagged: {', '.join(f'trial {t} ({why})' for t, why in flagged)}: a confirmed 95% interval "
              "excludes the search-time value")
    return 0 if len(front) else 1
