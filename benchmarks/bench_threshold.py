"""Threshold search: sort-and-scan (miaray) vs the exhaustive search of the authors' code.

    python benchmarks/bench_threshold.py [--max-exhaustive 100000] [--out FILE]

Scores are half members, half non-members (shifted normals), rounded to 4 decimals so that there
are many ties, as with float32 softmax outputs. Prints the thresholds' agreement and the speed ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import add_out_argument, write_json  # noqa: E402
from miaray.attacks.threshold import best_threshold, best_threshold_exhaustive  # noqa: E402
from miaray.cli import HelpFormatter  # noqa: E402


def scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(0.5, 1.0, n // 2), 4), np.round(rng.normal(0.0, 1.0, n - n // 2), 4)


def timed(fn, *args, repeat: int = 1) -> tuple[float, tuple[float, float]]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--max-exhaustive", type=int, default=100_000,
                        help="largest number of scores the exhaustive reference search runs on (it is quadratic)")
    add_out_argument(parser, "bench_threshold.json")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = []
    print(f"{'n':>9} {'scan s':>9} {'exhaustive s':>13} {'ratio':>9} {'same threshold':>15}")
    for n in (1_000, 10_000, 100_000, 1_000_000):
        a, b = scores(n)
        t_scan, ours = timed(best_threshold, a, b, repeat=3)
        if n <= args.max_exhaustive:
            t_exh, ref = timed(best_threshold_exhaustive, a, b)
            print(f"{n:>9,} {t_scan:>9.4f} {t_exh:>13.3f} {t_exh / t_scan:>8.0f}x {str(ours == ref):>15}")
            rows.append({"n": n, "scan_s": t_scan, "exhaustive_s": t_exh, "ratio": t_exh / t_scan,
                         "same_threshold": ours == ref})
        else:
            print(f"{n:>9,} {t_scan:>9.4f} {'-':>13} {'-':>9} {'-':>15}")
            rows.append({"n": n, "scan_s": t_scan, "exhaustive_s": None, "ratio": None, "same_threshold": None})
    write_json(args.out, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
