"""Training cost of the trained attacks (NN, Top3-NN, NNCls, SAMIA) and their share of the paper grid.

    python benchmarks/bench_attacks.py                         # cuda if available, else the CPU
    python benchmarks/bench_attacks.py --device cpu --threads 1 --rows 1024

Each trained attack is fitted through the product path (`make_attack(name, epochs=E).fit`) on random
shadow signals of `--rows` pooled rows, for every number of classes the paper's datasets have (8, 10,
30, 100): after a warm-up fit, seconds per step = (time of a 1 + `--epochs` epoch fit - time of a
1-epoch fit) / the extra steps (batches of 128), so that building the network and capturing its
graphs, once per fit, cancel out. On CUDA each is timed twice: `graph` (the product path: full batches replay
the network's forward and backward as CUDA graphs) and `eager` (`cuda_graph = False`), after a
`check` that fits every attack both ways on learnable signals (members more confident) and fails
loudly if the graphed fit's attack accuracy is below 0.8 or 0.03 from the eager one's, or if it
changed its input signals.

With `--gpu-json` (default: `$OUT/bench_gpu.json` when it exists, as `gpu_session.sh` leaves it) it
also prints the paper grid's grand total: bench_gpu.py's training + signals (its `fit` rows, typical
early stopping) + this attack training, each with the machine it was measured on.

The projection multiplies by the paper grid's attack steps. Per cell and trained attack:
own epochs (SAMIA 100, the MLPs 30) x ceil(pooled rows / 128), where the pooled shadow rows are
shadows x (members + non-members) = 5 x 2 n_train (45/45/10 split), e.g. 1,055 steps per epoch for
CIFAR10. The threshold attacks and BlindMI train nothing and are left out (milliseconds per cell).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import (PairPlan, add_out_argument, default_out, format_table, machine_description,  # noqa: E402
                     paper_classes, paper_grid, project, write_json)
from bench_gpu import fit_rates  # noqa: E402
from miaray.attacks import make_attack  # noqa: E402
from miaray.attacks.signals import Signals  # noqa: E402
from miaray.cli import HelpFormatter  # noqa: E402
from miaray.vocabulary import TRAINED_ATTACKS  # noqa: E402

BATCH = 128  # every trained attack's batch size (docs/science.md, Attack definitions)


def random_signals(rows: int, classes: int, device: torch.device, seed: int = 0) -> tuple[Signals, Any]:
    """Pooled shadow signals of the right shapes and a 0/1 membership vector (values do not matter)."""
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(rows, classes, generator=gen), dim=1)
    signals = Signals(probs=probs, labels=torch.randint(0, classes, (rows,), generator=gen),
                      sensitivity=torch.rand(rows, classes, generator=gen))
    return signals.to(device), torch.randint(0, 2, (rows,), generator=gen).numpy()


def learnable_signals(rows: int, classes: int, device: torch.device, seed: int) -> tuple[Signals, Any]:
    """Half members (confident, insensitive), half non-members: an attack should reach ~100%."""
    signals, _ = random_signals(rows, classes, torch.device("cpu"), seed)
    member = torch.arange(rows) < rows // 2
    logits = torch.randn(rows, classes, generator=torch.Generator().manual_seed(seed + 1))
    logits += torch.where(member, 6.0, 1.0).unsqueeze(1) * torch.nn.functional.one_hot(signals.labels, classes)
    sensitivity = signals.sensitivity * torch.where(member, 0.5, 2.0).unsqueeze(1)
    learnable = Signals(probs=logits.softmax(1), labels=signals.labels, sensitivity=sensitivity)
    return learnable.to(device), member.long().numpy()


def fitted(name: str, *, epochs: int, graph: bool, signals: Signals, membership: Any) -> Any:
    attack = make_attack(name, epochs=epochs)
    attack.cuda_graph = graph
    return attack.fit(signals, membership)


def check_graph(name: str, device: torch.device) -> dict[str, Any]:
    """Attack accuracy of the graphed and the eager fit on held-out learnable signals, and whether the
    graphed fit left its input signals untouched."""
    shadow, shadow_membership = learnable_signals(2000, 10, device, seed=0)  # 2000 % 128 != 0: a short batch
    target, target_membership = learnable_signals(2000, 10, device, seed=10)
    probs = shadow.probs.clone()
    try:
        acc = {graph: fitted(name, epochs=3, graph=graph, signals=shadow, membership=shadow_membership)
               .score(target, target_membership) for graph in (True, False)}
    except Exception as error:  # noqa: BLE001 - one attack's failure must not lose the others' numbers
        return {"attack": name, "status": f"FAIL {type(error).__name__}: {error}"[:200]}
    untouched = torch.equal(shadow.probs, probs)
    ok = acc[True] > 0.8 and abs(acc[True] - acc[False]) <= 0.03 and untouched
    return {"attack": name, "graph_acc": acc[True], "eager_acc": acc[False], "inputs_untouched": untouched,
            "status": "ok" if ok else "FAIL"}


def seconds_per_step(name: str, *, rows: int, classes: int, epochs: int, graph: bool,
                     device: torch.device) -> float:
    """(time of a (1 + epochs)-epoch fit - time of a 1-epoch fit) / the extra steps: building the network
    and capturing its graphs happen once per fit and cancel out."""
    signals, membership = random_signals(rows, classes, device)

    def seconds(fit_epochs: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fitted(name, epochs=fit_epochs, graph=graph, signals=signals, membership=membership)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    seconds(1)  # warm-up: the kernels' first calls
    return (seconds(1 + epochs) - seconds(1)) / (epochs * math.ceil(rows / BATCH))


def own_epochs(name: str) -> int:
    return make_attack(name).epochs


def attack_steps(plan: PairPlan, name: str, *, shadows: int = 5) -> int:
    """Training steps of one attack in one cell of `plan`'s pair (own schedule)."""
    pooled = shadows * 2 * plan.n_train
    return own_epochs(name) * math.ceil(pooled / BATCH)


def project_attacks(plans: Sequence[PairPlan], step_s: Mapping[tuple[str, int], float],
                    attacks: Sequence[str]) -> tuple[list[dict[str, Any]], float]:
    """Per-pair hours of attack training (cells x steps x measured seconds per step) and the total."""
    rows, classes_of = [], paper_classes()
    for plan in plans:
        classes = classes_of[plan.dataset]
        hours = {a: plan.cells * attack_steps(plan, a) * step_s[(a, classes)] / 3600 for a in attacks}
        rows.append({"dataset": plan.dataset, "arch": plan.arch, "classes": classes, "cells": plan.cells,
                     **{f"{a}_h": h for a, h in hours.items()}, "attacks_h": sum(hours.values())})
    return rows, sum(row["attacks_h"] for row in rows)


def grand_total(gpu_json: str, *, attacks_h: float, mode: str, machine: str) -> str:
    """The paper grid's hours: training and signals from bench_gpu.py's fit rows plus attack training."""
    with open(gpu_json) as handle:
        run = json.load(handle)
    rows, _ = project(paper_grid(), fit_rates(run["rows"]))
    train_h, signals_h = (sum(row[k] for row in rows) for k in ("train_h", "signals_h"))
    return (f"\n== paper grid, grand total (assumed early stopping) ==\n"
            f"training {train_h:.2f} h + signals {signals_h:.2f} h ({run['machine']}, {gpu_json})\n"
            f"+ attack training {attacks_h:.2f} h ({machine}, {mode})\n"
            f"= {train_h + signals_h + attacks_h:.2f} h")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available, else cpu)")
    parser.add_argument("--rows", type=int, default=4096, help="pooled shadow rows per fit, >= 128 (one batch)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per fit, >= 1 (after a 1-epoch warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU, >= 1 (default: torch's)")
    parser.add_argument("--attacks", default=",".join(TRAINED_ATTACKS),
                        help=f"comma list of {', '.join(TRAINED_ATTACKS)}")
    parser.add_argument("--gpu-json", default=default_out("bench_gpu.json"),
                        help="bench_gpu.py's JSON, for the grand total (default: $OUT/bench_gpu.json when $OUT is "
                             "set, else no grand total)")
    add_out_argument(parser, "bench_attacks.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = sorted(set(attacks) - set(TRAINED_ATTACKS))
    if unknown:
        parser.error(f"--attacks {','.join(unknown)}: not a trained attack; choose from {', '.join(TRAINED_ATTACKS)}")
    print(f"{machine_description(device)}; {args.rows} rows, {args.epochs} timed epochs, batch {BATCH}")
    checks = [check_graph(name, device) for name in attacks] if device.type == "cuda" else []
    if checks:
        print(format_table(checks, [("attack", ""), ("graph_acc", ".3f"), ("eager_acc", ".3f"),
                                    ("inputs_untouched", ""), ("status", "")]))
    modes = {"graph": True, "eager": False} if device.type == "cuda" else {"eager": False}
    measured, step_s = [], {mode: {} for mode in modes}
    for name in attacks:
        for classes in sorted(set(paper_classes().values())):
            row = {"attack": name, "classes": classes, "own_epochs": own_epochs(name)}
            for mode, graph in modes.items():
                try:
                    step_s[mode][(name, classes)] = seconds_per_step(name, rows=args.rows, classes=classes,
                                                                     epochs=args.epochs, graph=graph, device=device)
                except Exception as error:  # noqa: BLE001 - recorded; the projection of this mode becomes NaN
                    step_s[mode][(name, classes)] = math.nan
                    row[f"{mode}_error"] = f"{type(error).__name__}: {error}"[:200]
                row[f"{mode}_ms_per_step"] = step_s[mode][(name, classes)] * 1e3
            measured.append(row)
            print("  " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
    print("\n" + format_table(measured, [("attack", ""), ("classes", "d"), ("own_epochs", "d"),
                                         *[(f"{mode}_ms_per_step", ".3f") for mode in modes]]))
    plans = paper_grid()
    projections = {}
    for mode in modes:
        rows, total = project_attacks(plans, step_s[mode], attacks)
        projections[mode] = {"rows": rows, "total_h": total}
        columns = [("dataset", ""), ("arch", ""), ("classes", "d"), ("cells", "d"),
                   *[(f"{a}_h", ".3f") for a in attacks], ("attacks_h", ".3f")]
        print(f"\n== paper grid: attack training, {device.type} {mode} (own schedules, 5 shadows) ==")
        print(format_table(rows, columns))
        print(f"TOTAL {total:.2f} h of attack training ({sum(p.cells for p in plans)} cells)")
    if args.gpu_json and os.path.exists(args.gpu_json):
        print(grand_total(args.gpu_json, attacks_h=projections[next(iter(modes))]["total_h"],
                          mode=next(iter(modes)), machine=machine_description(device)))
    write_json(args.out, {"machine": machine_description(device), "args": vars(args), "checks": checks,
                          "steps": measured, "projection": projections})
    return 1 if any(c["status"] != "ok" for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
