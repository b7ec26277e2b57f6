"""How many trials per GPU pay off: one real sweep per --gpus-per-trial value, each from an empty store.

    python benchmarks/bench_packing.py                                   # 1, 0.5, 0.25 on this machine's GPU
    python benchmarks/bench_packing.py --fractions 0.5,0.25 --deadline 200 --max-epochs 3

Each run is `sweeps/full_grid.py --preset quick` (8 cells on digits) with its epochs capped, on a private
Ray instance, with its own storage and store, so no run loads what another built. Per run: the wall time of
the whole sweep; cells per hour over the cells' phase (first cell trial started to last one ended, from the
rows' trial_start / trial_end, so that Ray's start and the originals' builds do not blur it); the GPU's
utilisation and memory in use, sampled every second by nvidia-smi; and each cell's peak CUDA memory
(`trial_peak_gpu_mb` in the rows). A run that would start after --deadline seconds is left out, and said.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import add_out_argument, format_table, write_json  # noqa: E402
from miaray import results  # noqa: E402
from miaray.cli import HelpFormatter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class GpuSampler:
    """nvidia-smi's utilisation and memory in use, every second, while the `with` block runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []

    def __enter__(self) -> GpuSampler:
        self.process = None
        if shutil.which("nvidia-smi") is None:  # a CPU run (--fractions 0) has no samples
            return self
        self.process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-l", "1"],
            stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            utilisation, memory = (float(v) for v in line.split(",")[:2])  # the first GPU
            self.samples.append((utilisation, memory))

    def __exit__(self, *exc) -> None:
        if self.process is None:
            return
        self.process.terminate()
        self.process.wait()
        self.reader.join(timeout=5)


def run(fraction: float, *, max_epochs: int, cpus: float, folder: Path) -> dict:
    storage = folder / f"gpus-{fraction:g}"
    command = [sys.executable, str(ROOT / "sweeps" / "full_grid.py"), "--preset", "quick", "--address", "local",
               "--max-epochs", str(max_epochs), "--attack-epochs", str(max_epochs), "--storage", str(storage),
               "--name", "packing", "--gpus-per-trial", f"{fraction:g}", "--cpus-per-trial", f"{cpus:g}"]
    print(f"== --gpus-per-trial {fraction:g}: {' '.join(command[1:])}", flush=True)
    start = time.monotonic()
    with GpuSampler() as gpu, open(storage.with_suffix(".log"), "w") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - start
    rows = results.load(storage / "packing") if status == 0 else None
    if rows is None:
        print(f"   failed (exit {status}); its log: {storage.with_suffix('.log')}", flush=True)
        return {"gpus_per_trial": fraction, "exit": status, "wall_s": wall}
    cells = rows.drop_duplicates("unit_id")
    span = cells["trial_end"].max() - cells["trial_start"].min()
    utilisation = [u for u, _ in gpu.samples]
    result = {"gpus_per_trial": fraction, "exit": status, "wall_s": wall, "cells": len(cells),
              "cells_per_hour": 3600 * len(cells) / span, "cell_phase_s": span,
              "gpu_util_mean": statistics.fmean(utilisation) if utilisation else float("nan"),
              "gpu_util_max": max(utilisation, default=float("nan")),
              "gpu_mem_used_max_mb": max((m for _, m in gpu.samples), default=float("nan")),
              "cell_peak_mb_max": cells["trial_peak_gpu_mb"].max(),
              "cell_peak_mb_median": cells["trial_peak_gpu_mb"].median(),
              "cell_accuracy_mean": cells["target_test_acc"].mean()}
    print(f"   {len(cells)} cells in {wall:.0f} s: {result['cells_per_hour']:.0f} cells/h over the cells' "
          f"{span:.0f} s, GPU {result['gpu_util_mean']:.0f}% on average, cell peak "
          f"{result['cell_peak_mb_max']:.0f} MB", flush=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--fractions", default="1,0.5,0.25", help="the --gpus-per-trial values, in the order run")
    p.add_argument("--max-epochs", type=int, default=5, help="epochs of every model and attack model")
    p.add_argument("--cpus-per-trial", type=float, default=2, help="CPUs of each trial (the sweep's option)")
    p.add_argument("--deadline", type=float, default=240, help="seconds after which no further run starts")
    add_out_argument(p, "bench_packing.json")
    return p


def main() -> None:
    args = build_parser().parse_args()
    start = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="packing-") as folder:
        for fraction in (float(f) for f in args.fractions.split(",")):
            if time.monotonic() - start > args.deadline:
                print(f"== --gpus-per-trial {fraction:g}: not run, past --deadline {args.deadline:g} s", flush=True)
                continue
            rows.append(run(fraction, max_epochs=args.max_epochs, cpus=args.cpus_per_trial, folder=Path(folder)))
    print(format_table(rows, [("gpus_per_trial", "g"), ("cells", "d"), ("wall_s", ".0f"), ("cells_per_hour", ".0f"),
                              ("gpu_util_mean", ".0f"), ("gpu_util_max", ".0f"), ("gpu_mem_used_max_mb", ".0f"),
                              ("cell_peak_mb_median", ".0f"), ("cell_peak_mb_max", ".0f"),
                              ("cell_accuracy_mean", ".3f")]))
    write_json(args.out, {"runs": rows, "max_epochs": args.max_epochs, "cpus_per_trial": args.cpus_per_trial})


if __name__ == "__main__":
    main()
