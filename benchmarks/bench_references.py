"""What the reference models of LiRA / RMIA cost per cell: seconds per model and per attack, from an empty store.

    python benchmarks/bench_references.py                           # the lira preset's first cell, CPU
    OMP_NUM_THREADS=1 python benchmarks/bench_references.py --threads 1 --max-epochs 2   # a quick look
    python benchmarks/bench_references.py --device cuda             # on a GPU (gpu_session.sh; not yet run)

One cell (default: the first of `sweeps/full_grid.py --preset lira`: mnist5k, ResNet18 width 0.125, L1
unstructured 0.5, 2 shadows, 8 reference models, 8 epochs), built phase by phase on a fresh store with
the public steps `miaray.unit.run_unit` composes: per role kind (target, shadow, reference), the mean
seconds per model of training the original, pruning + fine-tuning it, its signals (target and shadows:
what the paper's attacks read) and its phi (`miaray.unit.queries.stored_phi`, on the target's pool
and the shadow half); then each likelihood-ratio attack on the pruned models at its full budget and every
budget (`run_ratio_attack`). Both wall seconds and CPU seconds of this process (all its threads:
`time.process_time`) are shown; on a shared machine the CPU seconds are the ones to trust. The last
lines add up what the reference models cost: per (dataset, arch, seed) their originals and phi, per
cell their pruned models and phi, next to what the cell's target and shadows cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any, Callable, TypeVar

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import add_out_argument, format_table, machine_description, write_json  # noqa: E402
from miaray.cli import HelpFormatter  # noqa: E402
from miaray.config import TrainConfig  # noqa: E402
from miaray.roles import role_kind  # noqa: E402
from miaray.store import Store  # noqa: E402
from miaray.sweep import PRESETS  # noqa: E402
from miaray.unit import make_context, membership, model_signals, original_model, pruned_model  # noqa: E402
from miaray.unit.queries import stored_phi  # noqa: E402
from miaray.unit.ratio import RatioPhi, run_ratio_attack  # noqa: E402
from miaray.vocabulary import RATIO_ATTACKS  # noqa: E402

T = TypeVar("T")
STEPS = ("train original", "prune + fine-tune", "signals (pruned)", "phi (original)", "phi (pruned)")


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(config, *, store: Store, device: str | None, data_root: str | None) -> dict[str, Any]:
    """Every model of one cell, step by step, then the likelihood-ratio attacks; per-step lists of (wall, cpu)."""
    ctx = make_context(config, store=store, data_root=data_root, device=device)
    steps: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    originals, pruned = {}, {}
    for role in config.roles():
        kind = role_kind(role)
        originals[role], wall, cpu = timed(lambda: original_model(ctx, role)[0], ctx.device)
        steps[(kind, "train original")].append((wall, cpu))
        pruned[role], wall, cpu = timed(lambda: pruned_model(ctx, role, (originals[role], {}))[0], ctx.device)
        steps[(kind, "prune + fine-tune")].append((wall, cpu))
        if kind != "reference":
            _, wall, cpu = timed(lambda: model_signals(ctx, pruned[role], config.model_key(role), role), ctx.device)
            steps[(kind, "signals (pruned)")].append((wall, cpu))
        for name, models, key in (("phi (original)", originals, config.original_key),
                                  ("phi (pruned)", pruned, config.model_key)):
            _, wall, cpu = timed(lambda: stored_phi(ctx, models[role], key(role)), ctx.device)
            steps[(kind, name)].append((wall, cpu))
        print(f"  {role}: done", file=sys.stderr, flush=True)
    phi = RatioPhi.of(ctx, pruned, attacks=config.attacks, model_key=config.model_key)  # loaded from the store
    truth = membership(ctx, "target")
    attacks = []
    for name in [a for a in RATIO_ATTACKS if a in config.attacks]:
        result, wall, cpu = timed(lambda: run_ratio_attack(name, phi, truth), ctx.device)
        attacks.append({"attack": name, "budgets": " ".join(str(p["models_used"]) for p in result["budget"]),
                        "wall_s": wall, "cpu_s": cpu, "attack_auc": result["metrics"]["attack_auc"]})
    return {"steps": steps, "attacks": attacks, "device": ctx.device}


def per_model(steps: dict) -> list[dict[str, Any]]:
    """One line per (role kind, step): models, mean wall and CPU seconds per model."""
    return [{"role": kind, "step": step, "models": len(values), "wall_s": sum(w for w, _ in values) / len(values),
             "cpu_s": sum(c for _, c in values) / len(values)} for (kind, step), values in steps.items()]


def totals(lines: list[dict[str, Any]], config) -> str:
    """What the reference models add, in CPU seconds: once per (dataset, arch, seed), and per cell."""
    cpu = {(line["role"], line["step"]): line["cpu_s"] for line in lines}
    n = config.num_references
    per_seed = n * (cpu[("reference", "train original")] + cpu[("reference", "phi (original)")])
    per_cell = n * (cpu[("reference", "prune + fine-tune")] + cpu[("reference", "phi (pruned)")])
    others = sum(line["cpu_s"] * line["models"] for line in lines if line["role"] != "reference")
    return (f"{n} reference models: {per_seed:.0f} CPU-s per (dataset, arch, seed) (originals + their phi), "
            f"{per_cell:.0f} CPU-s per cell (pruned + fine-tuned + phi); the cell's target and "
            f"{config.num_shadows} shadows, every step: {others:.0f} CPU-s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--preset", default="lira", help="sweep preset whose first cell is measured, one of miaray.sweep.PRESETS")
    p.add_argument("--references", type=int, default=None, help="reference models, >= 1 (default: the preset's)")
    p.add_argument("--shadows", type=int, default=None, help="shadow models, >= 1 (default: the preset's)")
    p.add_argument("--max-epochs", type=int, default=None, help="epoch cap, >= 1 (default: the preset's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $MIARAY_DATA, else ~/.cache/miaray/data)")
    p.add_argument("--threads", type=int, default=None, help="torch threads, >= 1 (default: torch's choice)")
    add_out_argument(p, "bench_references.json")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PRESETS[args.preset].cells()[0]
    changes = {"num_references": args.references, "num_shadows": args.shadows}
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
    if args.max_epochs:
        config = dataclasses.replace(config, train=TrainConfig(max_epochs=args.max_epochs))
    config.validate()
    with tempfile.TemporaryDirectory(prefix="miaray-bench-store-") as root:  # nothing cached
        start = time.perf_counter()
        result = measure(config, store=Store(root), device=args.device, data_root=args.data_root)
        total = time.perf_counter() - start
    lines = per_model(result["steps"])
    epochs, _ = config.train.epochs(tabular=config.tabular)
    print(f"# {machine_description(result['device'])}; load average {os.getloadavg()[0]:.1f}")
    print(f"# {config.dataset}/{config.arch} width {config.width:g}, {config.method} {config.sparsity:g}, "
          f"{config.num_shadows} shadows, {config.num_references} reference models, up to {epochs} epochs")
    print(format_table(lines, [("role", ""), ("step", ""), ("models", "d"), ("wall_s", ".2f"), ("cpu_s", ".2f")]))
    print()
    print(format_table(result["attacks"], [("attack", ""), ("budgets", ""), ("wall_s", ".2f"), ("cpu_s", ".2f"),
                                           ("attack_auc", ".3f")]))
    print(totals(lines, config))
    print(f"total {total:.0f}s wall")
    write_json(args.out, {"machine": machine_description(result["device"]), "loadavg": os.getloadavg(),
                          "args": vars(args), "per_model": lines, "attacks": result["attacks"], "total_s": total})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
