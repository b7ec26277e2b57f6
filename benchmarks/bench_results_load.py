#!/usr/bin/env python
"""How long `miaray.results.load` takes on a big experiment (target: 100,000 rows in under 2 s).

    python benchmarks/bench_results_load.py                    # 100,000 rows = 10,000 unit files
    python benchmarks/bench_results_load.py --rows 20000 --repeat 5 --keep /tmp/exp --out load.json

Writes the rows in the real layout (`<experiment>/rows/<unit_id>.parquet`, one file per unit with
one row per attack plus the Conf (Org.) row, as `--original-attacks conf` writes them, every result
column) through
`miaray.results.write_unit_rows`, then times `load` (best and median of `--repeat` cold-ish reads;
the OS page cache is warm after the write, as it is on the machine that ran the sweep).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import add_out_argument, write_json  # noqa: E402
from miaray import results  # noqa: E402
from miaray.cli import HelpFormatter  # noqa: E402
from miaray.vocabulary import ATTACKS, DEFENSE_PARAMS  # noqa: E402

TARGET_S = 2.0
ROWS_PER_UNIT = len(ATTACKS) + 1   # every attack on the pruned target + the Conf (Org.) row


def unit_rows(index: int, rng: np.random.Generator) -> list[dict]:
    """The rows of one fake unit with the columns and types `run_unit` writes."""
    params = sorted({p for ps in DEFENSE_PARAMS.values() for p in ps})
    base = {"unit_id": f"{index:020x}", "dataset": "cifar10", "arch": "resnet18", "method": "l1_unstructured",
            "sparsity": 0.5 + 0.1 * (index % 5), "seed": index // 5, "width": 1.0,
            "shadow_method": "l1_unstructured", "shadow_sparsity": 0.5 + 0.1 * (index % 5), "defense": "basic",
            "adaptive": False, **{f"defense_{p}": math.nan for p in params}, "status": "ok", "error": "",
            "original_train_acc": 1.0, "original_test_acc": 0.8, "epsilon": math.nan, "delta": math.nan,
            "achieved_sparsity": 0.7, "finetune_epochs": 20, "original_epochs": 40, "time_originals_s": 100.0,
            "time_prune_finetune_s": 50.0, "time_signals_s": 5.0}
    rows = []
    for target_model, attack in [("pruned", a) for a in ATTACKS] + [("original", "conf")]:
        metrics = rng.random(10)
        tpr, fpr = metrics[5], metrics[6]
        rows.append({**base, "target_model": target_model, "target_train_acc": metrics[0],
                     "target_test_acc": metrics[1], "confidence_gap": metrics[2], "sensitivity_gap": metrics[3],
                     "generalization_gap": metrics[4], "attack": attack, "attack_acc": 0.5 * (tpr + 1 - fpr),
                     "tpr": tpr, "fpr": fpr, "advantage": tpr - fpr, "max_advantage": max(0.0, tpr - fpr),
                     "attack_auc": metrics[7], "tpr_at_fpr_0.01": metrics[8], "tpr_at_fpr_0.001": metrics[9],
                     "n_members": 13500, "n_nonmembers": 13500, "time_attack_s": 1.0, "time_total_s": 160.0})
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="result rows in total, >= 1")
    p.add_argument("--repeat", type=int, default=3, help="timed loads, >= 1")
    p.add_argument("--keep", type=Path, help="write the experiment here and keep it (default: a temporary folder, "
                                             "removed)")
    add_out_argument(p, "bench_results_load.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    units = math.ceil(args.rows / ROWS_PER_UNIT)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_results_load_"))
    experiment = root / "experiment"
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for index in range(units):
        results.write_unit_rows(experiment=experiment, unit_id=f"{index:020x}", rows=unit_rows(index, rng))
    write_s = time.perf_counter() - start
    print(f"wrote {units:,} unit files ({units * ROWS_PER_UNIT:,} rows) in {write_s:.1f}s "
          f"({write_s / units * 1e3:.2f} ms per unit)")

    start = time.perf_counter()
    loose = results.load(experiment)
    loose_s = time.perf_counter() - start
    print(f"results.load before compaction (every unit file read): {loose_s:.2f}s")
    start = time.perf_counter()
    results.compact(experiment)  # what run_sweep does when a sweep ends
    compact_s = time.perf_counter() - start
    print(f"results.compact (the end of a sweep): {compact_s:.2f}s")
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        df = results.load(experiment)
        times.append(time.perf_counter() - start)
    assert len(df) == len(loose) == units * ROWS_PER_UNIT, (len(df), units * ROWS_PER_UNIT)
    best, median = min(times), statistics.median(times)
    print(f"results.load after compaction: {len(df):,} rows x {df.shape[1]} columns from {units:,} files: "
          f"best {best:.2f}s, median {median:.2f}s over {args.repeat} (target < {TARGET_S:.0f}s: "
          f"{'met' if median < TARGET_S else 'NOT met'})")
    write_json(args.out, {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                          "units": units, "rows": len(df), "columns": df.shape[1], "write_s": write_s,
                          "load_before_compact_s": loose_s, "compact_s": compact_s, "load_after_compact_s": times,
                          "load_best_s": best, "load_median_s": median, "target_s": TARGET_S})
    if args.keep is None:
        shutil.rmtree(root)
    return 0 if median < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
