"""Prediction sensitivity (eq. 2): batched (all directions stacked in one forward) vs loops.

    python benchmarks/bench_signals.py [--device cuda] [--batch-size 16384] [--out FILE]

Both loops use the same directions as compute_signals: "per sample" does one forward per sample
and direction (the naive implementation); "per direction" does one forward per direction over all
samples. The per-sample loop runs on at most 256 samples and is scaled linearly to n (marked *):
its cost per sample is constant. Models: a small CNN on 3x32x32 inputs and the paper's FC net on
600 binary features. Batched and per-direction times are the best of two runs (the first run at a
new size pays for memory allocation). Prints seconds, speed ratios and the largest difference
between the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import add_out_argument, machine_description, write_json  # noqa: E402
from miaray.cli import HelpFormatter  # noqa: E402
from miaray.attacks.signals import compute_signals, sensitivity_loop_reference  # noqa: E402

PER_SAMPLE_CAP = 256


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def fc_net() -> nn.Module:
    return nn.Sequential(nn.Linear(600, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 100))


def seconds(fn, device: torch.device, *, repeat: int = 1) -> tuple[float, torch.Tensor]:
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=1024, help="compute_signals batch_size in images, >= 1")
    add_out_argument(parser, "bench_signals.json")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = []
    device = torch.device(args.device)
    torch.manual_seed(0)
    cases = [("cnn 3x32x32", small_cnn(), lambda n: torch.randn(n, 3, 32, 32), (64, 256, 1024)),
             ("fc 600", fc_net(), lambda n: torch.randint(0, 2, (n, 600)).float(), (256, 1024, 4096))]
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch_size {args.batch_size}")
    print(f"{'model':<12} {'n':>6} {'batched s':>10} {'per-dir s':>10} {'per-sample s':>13} "
          f"{'x per-dir':>10} {'x per-sample':>13} {'max |diff|':>11}")
    for label, model, make_x, sizes in cases:
        model.to(device).eval()
        compute_signals(model, make_x(8).to(device), torch.zeros(8, dtype=torch.int64))  # warm-up
        for n in sizes:
            x = make_x(n).to(device)
            y = torch.zeros(n, dtype=torch.int64)
            t_batch, sig = seconds(lambda: compute_signals(model, x, y, batch_size=args.batch_size), device,
                                   repeat=2)
            t_dir, per_dir = seconds(lambda: sensitivity_loop_reference(model, x, samples_per_forward=n), device,
                                     repeat=2)
            m = min(n, PER_SAMPLE_CAP)
            t_one, per_one = seconds(lambda: sensitivity_loop_reference(model, x[:m], samples_per_forward=1), device)
            t_one *= n / m
            diff = max((sig.sensitivity - per_dir).abs().max().item(),
                       (sig.sensitivity[:m] - per_one).abs().max().item())
            star = "*" if m < n else " "
            print(f"{label:<12} {n:>6} {t_batch:>10.3f} {t_dir:>10.3f} {t_one:>12.3f}{star} "
                  f"{t_dir / t_batch:>9.1f}x {t_one / t_batch:>12.1f}x {diff:>11.2e}")
            rows.append({"model": label, "n": n, "batched_s": t_batch, "per_dir_s": t_dir, "per_sample_s": t_one,
                         "per_sample_scaled": m < n, "x_per_dir": t_dir / t_batch, "x_per_sample": t_one / t_batch,
                         "max_abs_diff": diff})
    write_json(args.out, {"machine": machine_description(device), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
