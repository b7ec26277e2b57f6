"""Scheduling overhead of a whole sweep: wall time against the unit work it contains.

    python benchmarks/bench_grid.py                     # the quick preset on a private local Ray
    python benchmarks/bench_grid.py --attacks conf,nn --max-epochs 10   # a shorter variant

Runs `miaray.sweep.run_sweep` (what `sweeps/full_grid.py --preset quick` runs) into a temporary
storage and artifact store, on a Ray instance of its own (`address="local"`: never a cluster another
process started). Unit work is what the units themselves measured: the `build_seconds` of each original
and of its signals (the build trials, from the store's meta.json) and each cell's `time_total_s` (`run_unit`'s own
clock). With S parallel slots (CPUs / CPUs per trial) a perfect scheduler would need work / S; the
rest of the wall time is outside unit work: Ray start and stop, Tune's setup, trial processes
starting (imports), rows written and read back, and slots left idle at the end of the sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import add_out_argument, format_table, write_json  # noqa: E402
from miaray import sweep  # noqa: E402
from miaray.cli import HelpFormatter  # noqa: E402
from miaray.config import stable_hash  # noqa: E402
from miaray.store import Store  # noqa: E402


def store_builds(store: Path, kind: str) -> list[dict[str, Any]]:
    """meta.json of every entry of `kind` in the artifact store."""
    return [json.loads(p.read_text()) for p in sorted((store / kind).glob("*/meta.json"))]


def build_trial_work(store: Path) -> list[dict[str, Any]]:
    """meta.json of what the build trials built: the originals and their signals (signals keys without
    a pruning method; the cells build the pruned models and their signals)."""
    return store_builds(store, "original") + [m for m in store_builds(store, "signals")
                                              if "method" not in m["key"]]


def build_spans_of(store: Path, builds: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) wall-clock times of `builds`: the store's event log has the end, meta the duration."""
    ends = {e["hash"]: e["time"] for e in Store(store).events()}
    return [(ends[h] - m["build_seconds"], ends[h]) for m in builds if (h := stable_hash(m["key"])) in ends]


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Run the sweep, timing Ray start, the sweep and Ray shutdown; returns the breakdown."""
    overrides = {k: v for k, v in (("attacks", args.attacks), ("max_epochs", args.max_epochs),
                                   ("methods", args.methods), ("sparsities", args.sparsities),
                                   ("num_shadows", args.shadows)) if v is not None}
    spec = dataclasses.replace(sweep.PRESETS[args.preset], **overrides).validate()
    cells = spec.cells()
    settings = sweep.RunSettings(experiment=str(root / "experiment" / f"bench-{args.preset}"),
                                 store=str(root / "cache"), data_root=args.data_root,
                                 cpus_per_trial=args.cpus_per_trial, gpus_per_trial=0.0)
    num_cpus = args.num_cpus or os.cpu_count() or 1
    t_start = time.time()
    ray.init(address="local", num_cpus=num_cpus, num_gpus=0, include_dashboard=False, log_to_driver=args.verbose)
    t_ray = time.time()
    df = sweep.run_sweep(cells=cells, settings=settings, resume=False, retries=0)
    t_sweep = time.time()
    ray.shutdown()
    t_end = time.time()

    store = Path(settings.store)
    originals = store_builds(store, "original")
    builds = build_trial_work(store)
    build_work = sum(m["build_seconds"] for m in builds)
    per_cell = df.groupby("unit_id").first() if len(df) else df
    cell_work = float(per_cell["time_total_s"].sum()) if len(df) else 0.0
    build_spans = build_spans_of(store, builds)
    starts = list(per_cell["trial_start"]) if len(df) else []
    ends = list(per_cell["trial_end"]) if len(df) else []
    first_trial = min(starts + [start for start, _ in build_spans], default=t_sweep)
    last_trial = max(ends + [end for _, end in build_spans], default=t_ray)
    trial_overhead = float((per_cell["trial_end"] - per_cell["trial_start"] - per_cell["time_total_s"]).sum()) \
        if len(df) else 0.0
    slots = max(1, int(num_cpus // args.cpus_per_trial))
    wall, work = t_end - t_start, build_work + cell_work
    segments = [
        {"segment": "ray.init (local instance)", "wall_s": t_ray - t_start, "work_s": 0.0},
        {"segment": "sweep start -> first trial (Tune setup)", "wall_s": first_trial - t_ray, "work_s": 0.0},
        {"segment": f"trials: {len(originals)} originals + signals, {len(per_cell)} cells",
         "wall_s": last_trial - first_trial, "work_s": work},
        {"segment": "last trial -> rows loaded", "wall_s": t_sweep - last_trial, "work_s": 0.0},
        {"segment": "ray.shutdown", "wall_s": t_end - t_sweep, "work_s": 0.0},
    ]
    for seg in segments:
        seg["idle_slot_s"] = seg["wall_s"] * slots - seg["work_s"]
    status = df["status"].value_counts().to_dict() if len(df) else {}
    return {"preset": args.preset, "cells": len(cells), "slots": slots, "num_cpus": num_cpus,
            "cpus_per_trial": args.cpus_per_trial, "wall_s": wall, "work_s": work,
            "outside_fraction": 1 - work / (slots * wall), "trial_overhead_s": trial_overhead,
            "cell_originals_s": float(per_cell["time_originals_s"].sum()) if len(df) else 0.0,
            "segments": segments, "row_status": status, "loadavg": os.getloadavg()}


def _csv(kind: type) -> Any:
    return lambda text: tuple(kind(v) for v in text.split(",") if v)


def build_parser() -> argparse.ArgumentParser:
    csv = _csv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--preset", default="quick", choices=sorted(sweep.PRESETS), help="the sweep preset run")
    p.add_argument("--attacks", type=csv(str), default=None, help="comma list of attacks (default: the preset's)")
    p.add_argument("--methods", type=csv(str), default=None, help="comma list of pruning methods (default: the preset's)")
    p.add_argument("--sparsities", type=csv(float), default=None,
                   help="comma list of sparsities in (0, 1) (default: the preset's)")
    p.add_argument("--shadows", type=int, default=None, help="shadow models per cell, >= 1 (default: the preset's)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epoch cap, >= 1 (default: the preset's, else 100 images / 50 tabular)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray, >= 1 (default: all of this machine's)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial, > 0")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $MIARAY_DATA, else ~/.cache/miaray/data)")
    p.add_argument("--keep", default=None, help="folder for storage and store (default: a temporary one, removed)")
    p.add_argument("--verbose", action="store_true", help="show the workers' logs")
    add_out_argument(p, "bench_grid.json")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep:
        result = run(args, Path(args.keep).resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="miaray-bench-grid-") as root:
            result = run(args, Path(root))
    print(f"\n# preset {result['preset']}: {result['cells']} cells, {result['slots']} slots "
          f"({result['num_cpus']} CPUs / {result['cpus_per_trial']:g} per trial), load average "
          f"{result['loadavg'][0]:.1f}, rows {result['row_status']}")
    print(format_table(result["segments"], [("segment", ""), ("wall_s", ".1f"), ("work_s", ".1f"),
                                            ("idle_slot_s", ".1f")]))
    print(f"wall {result['wall_s']:.1f}s, unit work {result['work_s']:.1f}s over {result['slots']} slots "
          f"-> {100 * result['outside_fraction']:.1f}% of slot time outside unit work "
          f"(target < 10%); inside cell trials but outside run_unit: {result['trial_overhead_s']:.1f}s; "
          f"cells loading (or waiting for) originals: {result['cell_originals_s']:.1f}s")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
