"""Shared helpers of the benchmarks: tables, peak memory, JSON output and the GPU-hours projection.

The projection turns measured per-epoch times into the cost of a whole grid:

    training  = (originals x original_epochs + cells x models_per_cell x finetune_epochs)
                x n_train x (seconds per epoch per training image)
                + (originals + cells x models_per_cell) x (seconds per fit call: its graph capture)
    signals   = (originals + cells x models_per_cell) x 2 n_train x (seconds per queried image)

Epoch time is assumed to scale linearly with the number of training images (batches of 128 are
index slices of a resident tensor, so there is no per-dataset loader cost). Attack training is
projected by `bench_attacks.py` (per trained attack and number of classes), whose `--gpu-json`
adds this projection to it for the grand total.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

# Forward + backward FLOPs per 32x32 image at width 1 (docs/science.md, Training and models); bench_gpu.py counts
# them again with torch.utils.flop_counter and prints both.
REFERENCE_TRAIN_GFLOP = {"resnet18": 3.33, "vgg16": 1.88, "densenet121": 5.33}

# Training-set (member) sizes per model, docs/science.md, Splits and sizes.
PAPER_TRAIN_SIZES = {"cifar10": 13_500, "cifar100": 13_500, "svhn": 22_340, "chmnist": 1_125,
                     "purchase": 44_398, "texas": 15_148, "location": 1_126}
PAPER_IMAGE_DATASETS = ("cifar10", "cifar100", "svhn", "chmnist")
PAPER_TABULAR_DATASETS = ("purchase", "texas", "location")
PAPER_IMAGE_ARCHS = ("resnet18", "vgg16", "densenet121")


# ---- tables and output --------------------------------------------------------------------------
def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A fixed-width text table of `rows`; `columns` are (key, format spec) pairs, '' for str()."""
    def cell(value: Any, spec: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return format(value, spec) if spec and isinstance(value, (int, float)) else str(value)

    body = [[cell(row.get(key), spec) for key, spec in columns] for row in rows]
    widths = [max([len(key)] + [len(line[i]) for line in body]) for i, (key, _) in enumerate(columns)]
    lines = ["  ".join(key.rjust(w) for (key, _), w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(text.rjust(w) for text, w in zip(line, widths)) for line in body]
    return "\n".join(lines)


def write_json(path: str | Path | None, payload: Mapping[str, Any]) -> None:
    """Write `payload` as indented JSON (NaN becomes null) if a path is given."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(payload), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def default_out(name: str) -> str | None:
    """`$OUT/<name>` when the device runner sets $OUT, else None (print only)."""
    return str(Path(os.environ["OUT"]) / name) if os.environ.get("OUT") else None


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """`--out FILE`, the JSON output of every benchmark (default `$OUT/<name>` when $OUT is set)."""
    parser.add_argument("--out", default=default_out(name),
                        help=f"JSON output file (default: $OUT/{name} when $OUT is set, else print only)")


def machine_description(device: torch.device) -> str:
    """One line naming the accelerator (or the CPU), for the report header."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{os.cpu_count()}-core {os.uname().machine} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"


# ---- peak memory --------------------------------------------------------------------------------
def paper_classes() -> dict[str, int]:
    """Classes of each paper dataset (the trained attacks' input width), from miaray's loaders."""
    from miaray.data.registry import real_datasets

    return {name: dataset.num_classes for name, dataset in real_datasets().items()}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max_memory_allocated since the last reset; on the CPU the process's peak RSS (ru_maxrss,
    which only grows, so it bounds every phase run so far in this process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ---- projection ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairPlan:
    """The planned work of one (dataset, arch) pair of a grid."""

    dataset: str
    arch: str
    n_train: int           # member (training) images of one model
    originals: int         # target + shadows, trained once per pair
    cells: int             # grid cells sharing those originals
    models_per_cell: int   # pruned + fine-tuned models per cell (target + shadows)
    original_epochs: int   # epochs an original trains for (assumed early-stopping epoch)
    finetune_epochs: int   # epochs a pruned model fine-tunes for


@dataclass(frozen=True)
class StopAssumption:
    """Assumed early-stopping epochs (patience 5 on validation loss), not measured: the assumption
    is that Adam at lr 1e-3 without augmentation overfits CIFAR-sized data within about 10 epochs,
    so validation loss bottoms out early, and that a pruned model starts close to its optimum, so
    fine-tuning stops sooner still. `python benchmarks/bench_unit.py --dataset cifar10 --width 1
    --device cuda` prints measured mean stopping epochs to replace it. The only ones measured so far
    are on digits (`python benchmarks/bench_unit.py`, 2026-11-29): 151 epochs / 6 originals = 25,
    108 / 6 = 18 per fine-tune."""

    image_original: int = 15
    image_finetune: int = 8
    tabular_original: int = 20
    tabular_finetune: int = 8


NO_EARLY_STOP = StopAssumption(image_original=100, image_finetune=50, tabular_original=50, tabular_finetune=25)


def paper_grid(stop: StopAssumption = StopAssumption(), *, shadows: int = 5) -> list[PairPlan]:
    """The paper's 15 (dataset, arch) pairs: 20 cells (4 methods x 5 sparsities) per image pair,
    5 (L1 unstructured x 5 sparsities) per tabular pair; target + `shadows` models each."""
    models = 1 + shadows
    plans = [PairPlan(d, a, PAPER_TRAIN_SIZES[d], models, 20, models, stop.image_original, stop.image_finetune)
             for d in PAPER_IMAGE_DATASETS for a in PAPER_IMAGE_ARCHS]
    plans += [PairPlan(d, "fc", PAPER_TRAIN_SIZES[d], models, 5, models, stop.tabular_original,
                       stop.tabular_finetune) for d in PAPER_TABULAR_DATASETS]
    return plans


@dataclass(frozen=True)
class Rates:
    """Measured costs of one architecture, per image so they scale to any dataset size."""

    epoch_s_per_image: float    # one training epoch (with its validation pass) / training images
    signal_s_per_image: float   # softmax + sensitivity + reference query of one image
    fit_s: float = 0.0          # once per fit call: the CUDA-graph capture (fit's `capture_seconds`)


def project(plans: Iterable[PairPlan], rates: Mapping[str, Rates]) -> tuple[list[dict[str, Any]], float]:
    """Per-pair projected hours (training, signals) and the grand total in hours. A pair whose arch
    has no measured rate gets NaN, which makes the total NaN too (never a silent under-count)."""
    rows = []
    for plan in plans:
        rate = rates.get(plan.arch, Rates(math.nan, math.nan))
        epochs = plan.originals * plan.original_epochs + plan.cells * plan.models_per_cell * plan.finetune_epochs
        queried = (plan.originals + plan.cells * plan.models_per_cell) * 2 * plan.n_train
        fits = plan.originals + plan.cells * plan.models_per_cell
        train_h = (epochs * plan.n_train * rate.epoch_s_per_image + fits * rate.fit_s) / 3600
        signal_h = queried * rate.signal_s_per_image / 3600
        rows.append({**asdict(plan), "model_epochs": epochs, "train_h": train_h, "signals_h": signal_h,
                     "total_h": train_h + signal_h})
    return rows, sum(row["total_h"] for row in rows)


PROJECTION_COLUMNS = [("dataset", ""), ("arch", ""), ("n_train", "d"), ("model_epochs", "d"),
                      ("train_h", ".3f"), ("signals_h", ".3f"), ("total_h", ".3f")]


def format_projection(title: str, plans: Sequence[PairPlan], rates: Mapping[str, Rates]) -> str:
    """The projection table with its assumptions and total, ready to print."""
    rows, total = project(plans, rates)
    rate_lines = [f"  {arch:12s} {r.epoch_s_per_image * 1e3:.4f} ms/img/epoch (train)   "
                  f"{r.signal_s_per_image * 1e3:.4f} ms/img (signals)" for arch, r in sorted(rates.items())]
    first = plans[0] if plans else None
    stops = sorted({(p.arch == "fc", p.original_epochs, p.finetune_epochs) for p in plans})
    stop_text = "; ".join(f"{'tabular' if tab else 'images'}: originals stop at epoch {o}, fine-tunes at {f}"
                          for tab, o, f in stops)
    return "\n".join([f"== {title} ==", "measured rates:", *rate_lines,
                      f"assumed: {stop_text}" + (f"; {first.originals} models per pair and per cell" if first else ""),
                      format_table(rows, PROJECTION_COLUMNS),
                      f"TOTAL {total:.2f} h ({len(plans)} pairs, "
                      f"{sum(p.originals + p.cells * p.models_per_cell for p in plans)} models)"])
