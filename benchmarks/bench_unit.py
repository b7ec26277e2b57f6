"""Wall time and peak memory of every phase of one unit, from a fresh (empty) artifact store.

    python benchmarks/bench_unit.py               # digits, resnet18, width 0.125; cuda when available, else CPU
    python benchmarks/bench_unit.py --dataset cifar10 --arch resnet18 --width 1 --device cuda --max-epochs 20

The phases are the public steps `miaray.unit.run_unit` composes, called one by one on a context from
`make_context` (originals, prune alone, prune + fine-tune, signals, each attack on its own), then
`run_unit` itself on the now warm store, which is what a sweep cell costs once its models exist.
Peak memory: CUDA max_memory_allocated per phase on a GPU; on the CPU the peak resident set size
sampled every 10 ms during the phase. The last section projects the quick preset (or `--grid`) from
these measurements with the same function as bench_gpu.py's GPU projection. The width follows
the quick preset and `python -m miaray.unit` (`miaray.vocabulary.default_width`: 0.125 on the embedded
image sets, 1 otherwise); the
trained attacks follow the `--grid` preset's `attack_epochs` (20 for quick), unlike `python -m
miaray.unit` (`--attack-epochs 0` runs each attack's own schedule, as does `--grid ''`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable, TypeVar

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import (PairPlan, Rates, add_out_argument, format_projection, format_table,  # noqa: E402
                     machine_description, peak_memory_mb, reset_peak_memory, write_json)
from miaray.cli import HelpFormatter  # noqa: E402
from miaray.config import TrainConfig, UnitConfig  # noqa: E402
from miaray.prune import prune  # noqa: E402
from miaray.store import Store  # noqa: E402
from miaray.unit import attack_rows, make_context, model_signals, original_model, pruned_model, run_unit  # noqa: E402
from miaray.vocabulary import ATTACKS, default_width  # noqa: E402

T = TypeVar("T")


class PeakRss:
    """Peak resident set size of this process while the block runs (sampled, Linux /proc)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "PeakRss":
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


class Phases:
    """Runs named phases, recording wall seconds and peak memory of each."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.rows = device, []

    def run(self, name: str, fn: Callable[[], T], **extra: Any) -> T:
        reset_peak_memory(self.device)
        with PeakRss() as rss:
            start = time.perf_counter()
            result = fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
        peak = peak_memory_mb(self.device) if self.device.type == "cuda" else rss.peak / 2**20
        self.rows.append({"phase": name, "seconds": seconds, "peak_mb": peak, **extra})
        print(f"  {name}: {seconds:.2f}s", file=sys.stderr, flush=True)
        return result


def measure(config: UnitConfig, *, store: Store, device: str | None, data_root: str | None) -> dict[str, Any]:
    """Every phase of one unit on an empty `store`; returns rows, run_unit's timing and the rates."""
    ctx = make_context(config, store=store, data_root=data_root, device=device)
    phases = Phases(ctx.device)
    roles = config.roles()
    originals = phases.run(f"train originals ({len(roles)} models)",
                           lambda: {role: original_model(ctx, role) for role in roles})
    original_epochs = sum(meta["epochs_run"] for _, meta in originals.values())
    phases.rows[-1].update(epochs=original_epochs, fit_s=sum(meta["seconds"] for _, meta in originals.values()))
    # Pruning alone, on a copy of the target original (pruned_model below prunes inside its build).
    target_copy, _ = original_model(ctx, "target")
    phases.run(f"prune alone ({config.method} {config.sparsity:g}, target)",
               lambda: prune(target_copy, method=config.method, sparsity=config.sparsity))
    pruned = phases.run(f"prune + fine-tune ({len(roles)} models)",
                        lambda: {role: pruned_model(ctx, role) for role in roles})
    finetune_epochs = sum(meta["epochs_run"] for _, meta in pruned.values())
    phases.rows[-1].update(epochs=finetune_epochs, fit_s=sum(meta["seconds"] for _, meta in pruned.values()))
    signals = phases.run(f"signals, pruned ({len(roles)} models)", lambda: {
        role: model_signals(ctx, model, config.model_key(role), role) for role, (model, _) in pruned.items()})
    queried = sum(len(s.labels) for s in signals.values())
    signal_row = phases.rows[-1]
    signal_row.update(images=queried)
    phases.run(f"signals, originals ({len(roles)} models)", lambda: {
        role: model_signals(ctx, model, config.original_key(role), role) for role, (model, _) in originals.items()})
    shadows = {role: signals[role] for role in config.shadow_roles()}
    for name in config.attacks:
        phases.run(f"attack {name}", lambda name=name: attack_rows(ctx, target=signals["target"], shadows=shadows,
                                                                   attacks=(name,)))
    attack_s = sum(row["seconds"] for row in phases.rows if row["phase"].startswith("attack "))
    rows = phases.run("run_unit, warm store (cache hits)",
                      lambda: run_unit(config, store=store, data_root=data_root, device=ctx.device))
    unit_timing = {k: v for k, v in rows[0].items() if k.startswith("time_") and k != "time_attack_s"}
    unit_timing["time_attacks_s"] = sum(row.get("time_attack_s", 0.0) for row in rows)
    n_train = len(ctx.split("target").train)
    train_rows = [r for r in phases.rows if "fit_s" in r]
    rate = Rates(epoch_s_per_image=sum(r["fit_s"] for r in train_rows) / sum(r["epochs"] for r in train_rows) / n_train,
                 signal_s_per_image=signal_row["seconds"] / queried)
    return {"phases": phases.rows, "unit_timing": unit_timing, "rate": rate, "n_train": n_train,
            "original_epochs": original_epochs / len(roles), "finetune_epochs": finetune_epochs / len(roles),
            "attack_s": attack_s, "status": Counter(row["status"] for row in rows), "device": ctx.device}


def quick_preset_projection(result: dict[str, Any], config: UnitConfig, grid: str) -> str:
    """Project a sweep preset from this unit: its cells x this unit's epochs, rates and attack time.
    Only the (dataset, arch) pairs of the preset that match the measured unit are projected."""
    from miaray.sweep import PRESETS

    cells = [c for c in PRESETS[grid].cells() if (c.dataset, c.arch) == (config.dataset, config.arch)]
    if not cells:
        return f"(preset {grid!r} has no {config.dataset}/{config.arch} cells to project)"
    models = 1 + config.num_shadows
    plan = [PairPlan(config.dataset, config.arch, result["n_train"], models, len(cells), models,
                     round(result["original_epochs"]), round(result["finetune_epochs"]))]
    attack_h = len(cells) * result["attack_s"] / 3600
    return (format_projection(f"{grid} preset on this machine ({len(cells)} cells), serial", plan,
                              {config.arch: result["rate"]})
            + f"\n+ attacks: {len(cells)} cells x {result['attack_s']:.1f}s = {attack_h:.3f} h")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="digits", help="a dataset of miaray.vocabulary.DATASETS")
    p.add_argument("--arch", default="resnet18", help="resnet18, vgg16, densenet121 or fc")
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier > 0 (default: miaray.vocabulary.default_width, as python -m miaray.unit: 0.125 on "
                        "digits and mnist5k, else 1)")
    p.add_argument("--method", default="l1_unstructured",
                   help="l1_unstructured, l1_structured, l2_structured or slimming")
    p.add_argument("--sparsity", type=float, default=0.7, help="fraction of weights pruned, in (0, 1)")
    p.add_argument("--shadows", type=int, default=5, help="shadow models, >= 1")
    p.add_argument("--attacks", default=",".join(ATTACKS), help="comma list of attacks")
    p.add_argument("--max-epochs", type=int, default=None, help="epoch cap, >= 1 (default: 100 images / 50 tabular)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $MIARAY_DATA, else ~/.cache/miaray/data)")
    p.add_argument("--threads", type=int, default=None, help="torch threads, >= 1 (default: torch's choice)")
    p.add_argument("--grid", default="quick", help="sweep preset to project from this unit, one of miaray.sweep.PRESETS ('' = none)")
    p.add_argument("--attack-epochs", type=int, default=None,
                   help="epochs of the trained attacks, >= 0 (default: the --grid preset's attack_epochs, e.g. 20 "
                        "for quick, or with --grid '' 0: each attack's own schedule)")
    add_out_argument(p, "bench_unit.json")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.attack_epochs is None and args.grid:
        from miaray.sweep import PRESETS

        args.attack_epochs = PRESETS[args.grid].attack_epochs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width = args.width if args.width is not None else default_width(args.dataset)
    config = UnitConfig(dataset=args.dataset, arch=args.arch, method=args.method, sparsity=args.sparsity,
                        width=width, num_shadows=args.shadows, attacks=tuple(args.attacks.split(",")),
                        attack_epochs=args.attack_epochs or None,  # 0 / None: own schedules
                        train=TrainConfig(max_epochs=args.max_epochs)).validate()
    with tempfile.TemporaryDirectory(prefix="miaray-bench-store-") as root:  # nothing cached
        start = time.perf_counter()
        result = measure(config, store=Store(root), device=args.device, data_root=args.data_root)
        total = time.perf_counter() - start
    device = result["device"]
    print(f"# {machine_description(device)}; load average {os.getloadavg()[0]:.1f}")
    print(f"# {config.dataset}/{config.arch} width {width:g}, {config.method} {config.sparsity:g}, "
          f"{config.num_shadows} shadows, attack epochs {config.attack_epochs or 'reference'}, "
          f"{result['n_train']} training images per model, "
          f"mean epochs: originals {result['original_epochs']:.1f}, fine-tunes {result['finetune_epochs']:.1f}")
    print(format_table(result["phases"], [("phase", ""), ("seconds", ".2f"), ("peak_mb", ".0f"),
                                          ("epochs", "d"), ("fit_s", ".2f"), ("images", "d")]))
    print(f"total {total:.1f}s; run_unit timing columns on the warm store: "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["unit_timing"].items())
          + f"; row status {dict(result['status'])}")
    projection = quick_preset_projection(result, config, args.grid) if args.grid else ""
    print(projection)
    write_json(args.out, {"machine": machine_description(device), "loadavg": os.getloadavg(), "args": vars(args),
                          "phases": result["phases"], "unit_timing": result["unit_timing"],
                          "rate": vars(result["rate"]), "total_s": total, "projection": projection})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
