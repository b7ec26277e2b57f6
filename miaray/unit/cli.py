"""`python -m miaray.unit`: one unit from the command line, its rows printed for people (pruned next to
original), optionally written to a file and, with --artifacts, as an experiment directory."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from miaray.attacks.metrics import METRICS
from miaray.cli import HelpFormatter, add_debug_option, check_output_file, check_writable_folder, entry_point
from miaray.config import ConfigError, TrainConfig, UnitConfig
from miaray.options import (SHARED_FIELDS, add_place_options, add_shared_options, parse_attacks, parse_name_values,
                            parse_original_attacks, parse_split, with_options)
from miaray.results import GAPS, write_unit_rows
from miaray.store import Store
from miaray.unit.run import unit_result
from miaray.vocabulary import ARCHS, DATASETS, DEFENSES, METHODS, PAPER_SPLIT, attack_names, default_width, format_split


# ---- command line -----------------------------------------------------------------------------
# The option that sets each UnitConfig field, for `with_options` (the shared ones: `miaray.options`).
UNIT_OPTIONS: dict[str, str] = {
    **SHARED_FIELDS, "dataset": "--dataset", "arch": "--arch", "method": "--method", "sparsity": "--sparsity",
    "seed": "--seed", "width": "--width", "shadow_method": "--shadow-method", "shadow_sparsity": "--shadow-sparsity",
    "query_mirror": "--query-mirror", "query_shift": "--query-shift", "defense": "--defense", "split": "--split",
    "train.patience": "--patience",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m miaray.unit", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--arch", required=True, help=f"one of {', '.join(ARCHS)}")
    p.add_argument("--method", default="l1_unstructured", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--sparsity", type=float, default=0.7, help="fraction of weights pruned, in (0, 1)")
    p.add_argument("--seed", type=int, default=0, help="integer seed in [0, 2^32 - shadows)")
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier > 0 (default: 0.125 on the embedded image sets digits and mnist5k, so "
                        "the unit runs in minutes on a CPU; 1.0 otherwise, synthetic_tabular included)")
    p.add_argument("--split", default=format_split(PAPER_SPLIT), metavar="TRAIN/TEST/VAL",
                   help="percent of each half for members / non-members / early stopping, summing to 100 (paper Table 2)")
    p.add_argument("--shadow-method", default=None, help=f"one of {', '.join(METHODS)} (default: the target's method)")
    p.add_argument("--shadow-sparsity", type=float, default=None, help="in [0, 1) (default: the target's; 0 = unpruned shadows)")
    p.add_argument("--defense", default="basic", help=f"one of {', '.join(DEFENSES)}")
    p.add_argument("--no-finetune", dest="finetune", action="store_false",
                   help="prune without fine-tuning: every pruned model (target, shadows, references) is its original "
                        "with the masks applied, nothing trained after pruning (defense basic only)")
    p.add_argument("--query-mirror", action="store_true",
                   help="LiRA's query augmentation: also query the mirrored image (lira, lira_offline)")
    p.add_argument("--query-shift", type=int, default=0, metavar="PIXELS",
                   help="LiRA's query augmentation: also query the image moved by up to PIXELS, in [0, 4], each way (0: off)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs, >= 1")
    add_shared_options(p, sweep=False)
    add_place_options(p, cache_default="$MIARAY_CACHE or ~/.cache/miaray/store")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default=None, help="also write the rows to this .csv or .parquet file (default: print only)")
    p.add_argument("--artifacts", default=None, metavar="DIR",
                   help="write what a sweep cell writes into DIR: rows/<unit_id>.parquet (read by "
                        "miaray.results.load and analysis/), signals/ and roc/ (per-sample signals, ROC curves); default: none")
    return add_debug_option(p)


OUT_SUFFIXES = (".csv", ".parquet")


def check_out(path: str) -> None:
    """Reject an --out that could not be written after the unit ran: its suffix, its folder."""
    target = Path(path).expanduser()
    if target.suffix not in OUT_SUFFIXES:
        raise ConfigError(f"--out {path!r}: the file must end in {' or '.join(OUT_SUFFIXES)}")
    check_output_file(path, option="--out", folder_must_exist=True)  # main writes it without making a folder


def check_device(device: str) -> None:
    """Refuse a --device torch cannot use, before any work (a tiny allocation there tells)."""
    try:
        torch.empty(1, device=torch.device(device))
    except (RuntimeError, AssertionError) as error:  # AssertionError: a torch built without that device
        raise ConfigError(f"--device {device!r}: torch {torch.__version__} cannot use it "
                          f"({' '.join(str(error).split())[:160]}); give cpu, or cuda on a machine with a "
                          "CUDA build of torch and a GPU (default: cuda when available)") from None


def config_from_args(args: argparse.Namespace) -> UnitConfig:
    width = args.width if args.width is not None else default_width(args.dataset)
    attacks = parse_attacks(args.attacks, option="--attacks")
    original_attacks = parse_original_attacks(args.original_attacks, option="--original-attacks")
    return UnitConfig(dataset=args.dataset, arch=args.arch, method=args.method, sparsity=args.sparsity,
                      seed=args.seed, width=width, num_shadows=args.shadows, num_references=args.references,
                      query_mirror=args.query_mirror, query_shift=args.query_shift, shadow_method=args.shadow_method,
                      shadow_sparsity=args.shadow_sparsity, attacks=attacks, original_attacks=original_attacks,
                      attack_epochs=args.attack_epochs, defense=args.defense,
                      defense_params=parse_name_values(args.defense_param, option="--defense-param"), adaptive=args.adaptive,
                      finetune=args.finetune, split=parse_split(args.split, option="--split"),
                      train=TrainConfig(max_epochs=args.max_epochs, patience=args.patience,
                                        slimming_l1=args.slimming_l1)).validate()


# The columns `format_rows` shows per attack, pruned next to original (the counts are in the header).
SHOWN_METRICS = tuple(m for m in METRICS if not m.startswith("n_"))


def format_rows(rows: list[dict[str, Any]], *, budget: pd.DataFrame | None = None) -> str:
    """For people: each target's accuracy and gaps, then per attack every metric on the pruned target
    next to the same attack on the unpruned one ('-' where it did not run there, 'nan' where the set
    cannot measure it); then, given the `budget` lines, the likelihood-ratio attacks per number of models."""
    df = pd.DataFrame(rows)
    if (df["status"] != "ok").any():
        return f"FAILED: {df['error'].iloc[0]}"
    first = df.iloc[0]
    lines = []
    for target_model, title in (("original", "original target"), ("pruned", "pruned target")):
        model = df[df["target_model"] == target_model].iloc[0]
        extra = ""
        if target_model == "pruned":
            extra = f"  achieved sparsity {model['achieved_sparsity']:.3f}" + (
                f", epsilon {model['epsilon']:.3g}" if math.isfinite(model["epsilon"]) else "")
        lines.append(f"{title + ':':17s}train acc {model['target_train_acc']:.4f}  test acc "
                     f"{model['target_test_acc']:.4f}  gaps: " + "  ".join(
                         f"{gap.removesuffix('_gap')} {model[gap]:.4f}" for gap in GAPS) + extra)
    lines.append(f"attacks fitted on the shadows, scored on {int(first['n_members'])} members and "
                 f"{int(first['n_nonmembers'])} non-members of the target; advantage = tpr - fpr at the attack's "
                 "own decision, max_advantage = best threshold chosen with the target's labels (an oracle bound)")
    lines.append("")
    order = [a for a in attack_names() if a in set(df["attack"])]
    models = [m for m in ("pruned", "original", "both") if m in set(df["target_model"])]
    table = (df.set_index(["attack", "target_model"])[list(SHOWN_METRICS)].unstack("target_model")
             .reindex(index=order, columns=pd.MultiIndex.from_product([SHOWN_METRICS, models])))
    ran = df.assign(ran=True).pivot(index="attack", columns="target_model", values="ran").reindex(
        index=order, columns=models).fillna(False).astype(bool)
    # NaN that ran is a metric the set cannot measure (TPR at an FPR below 1 / n_nonmembers): "nan".
    text = table.map(lambda v: "nan" if pd.isna(v) else f"{v:.4f}")
    for metric in SHOWN_METRICS:
        for model in models:
            text.loc[~ran[model], (metric, model)] = "-"
    text.columns = pd.MultiIndex.from_tuples([(metric, "org." if model == "original" else model)
                                              for metric, model in text.columns])
    lines.append(text.to_string())
    if budget is not None and len(budget):
        lines += ["", "likelihood-ratio attacks by number of models (shadows offline, reference models online; "
                  "the last line of each attack is its row above):", format_budget(budget)]
    return "\n".join(lines)


BUDGET_METRICS = ("attack_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001")


def format_budget(budget: pd.DataFrame) -> str:
    """The budget lines for people: per likelihood-ratio attack and number of models, AUC and TPR at low FPR
    on the pruned target next to the unpruned one."""
    models = [m for m in ("pruned", "original") if m in set(budget["target_model"])]
    table = budget.set_index(["attack", "models_used", "target_model"])[list(BUDGET_METRICS)].unstack("target_model")
    order = [(a, k) for a in attack_names() for k in sorted(set(budget.loc[budget["attack"] == a, "models_used"]))]
    table = table.reindex(index=order, columns=pd.MultiIndex.from_product([BUDGET_METRICS, models]))
    table.columns = pd.MultiIndex.from_tuples([(metric, "org." if model == "original" else model)
                                              for metric, model in table.columns])
    return table.to_string(float_format=lambda v: f"{v:.4f}", na_rep="nan")


@entry_point(prog="python -m miaray.unit", resume="the models built so far are cached")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.out:
            check_out(args.out)
        if args.device:
            check_device(args.device)
        for option, folder in (("--cache", args.cache), ("--artifacts", args.artifacts)):
            if folder:
                check_writable_folder(folder, option=option)
    except ConfigError as error:  # exits 2 before any training, naming the option and the choices
        parser.error(str(with_options(error, UNIT_OPTIONS)))
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    store = Store(args.cache)
    result = unit_result(config, store=store, data_root=args.data_root, device=args.device, log=log)
    rows = result.rows
    print(format_rows(rows, budget=result.budget))
    print(f"\nfinished in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    if args.artifacts:
        result.write_artifacts(args.artifacts, config.unit_id())
        print(f"rows: {write_unit_rows(experiment=args.artifacts, unit_id=config.unit_id(), rows=rows)}",
              file=sys.stderr)
    if args.out:
        df = pd.DataFrame(rows)
        out = Path(args.out).expanduser()
        df.to_parquet(out, index=False) if out.suffix == ".parquet" else df.to_csv(out, index=False)
    return 0 if all(row["status"] == "ok" for row in rows) else 1
