"""Training throughput of the image models on one GPU, and the GPU-hours projection of the paper grid.

    python benchmarks/bench_gpu.py                  # CUDA; items left 20 s before --deadline (420 s) are skipped
    python benchmarks/bench_gpu.py --device cpu --images 256 --width 0.25 --tabular-rows 512   # smoke test

Random CIFAR-shaped data (13,500 x 3x32x32, the CIFAR10 member-set size) lives on the device; batches
are index slices, as in `miaray.train`. Items below, each skipped cleanly once the global `--deadline`
is near. Run order (`plan()`): check; fit rows (image archs, then fc); fit eager rows; fp32 and bf16
per arch; packed x1 and xN; then bf16_async, cudagraph, compile and compile_cg per arch. The current
plan has not yet run to completion on a GPU (the 2026-11-28 H200 run, of an earlier plan without the
check and fit eager rows, hit its 300 s deadline).

0. `check`: `fit` with and without its CUDA graph on the same data, model, masks and seed; fails
   loudly if the weights differ beyond bf16 noise or a pruned weight is not zero.
1. `fit`: the product path, `miaray.train.fit` (Basic training on CUDA replays a captured CUDA graph
   per full batch; with its validation pass) plus `compute_signals` throughput, for resnet18, vgg16,
   densenet121 and the tabular fc net. The projection uses these. `fit eager` rows: the same with
   `cuda_graph=False` (one host sync per step): fit's eager loop, which PPB/DP/ADV always use.
2. synthetic training loops per arch and mode (full batches only, 1 warm-up + `--epochs` timed):
   fp32 (eager fp32), bf16 (bf16 autocast + channels_last, one loss sync per step: fit's eager step),
   bf16_async (no per-step sync, cudnn.benchmark, fused Adam), cudagraph (the whole step - gather,
   forward, backward, Adam - captured in one CUDA graph by `miaray.train.CapturedStep`), compile (torch.compile of forward+loss, inductor), compile_cg (the same with
   mode="reduce-overhead": CUDA graphs of the forward and backward graphs). Compile time is the
   warm-up epoch minus a steady epoch.
3. packed: 1 and 4 processes training resnet18 bf16 at once, aggregate images/s (run after the
   fp32/bf16 loops, before bf16_async and the isolated modes).

Isolated items (compiles, CUDA graphs, packed) run in their own process group, killed at the deadline.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import queue as queue_module
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from _common import (NO_EARLY_STOP, REFERENCE_TRAIN_GFLOP, Rates, StopAssumption, add_out_argument,  # noqa: E402
                     format_projection, format_table, machine_description, paper_grid, peak_memory_mb,
                     reset_peak_memory, write_json)
from miaray.attacks.blindmi import reference_transform  # noqa: E402
from miaray.cli import HelpFormatter  # noqa: E402
from miaray.attacks.signals import compute_signals  # noqa: E402
from miaray.models import build_model  # noqa: E402
from miaray.prune import prune  # noqa: E402
from miaray.train import CapturedStep, Defense, TensorSplit, fit  # noqa: E402

IMAGE_ARCHS = ("resnet18", "vgg16", "densenet121")
VAL_PER_TRAIN = 10 / 45  # docs/science.md, Splits and sizes: 45% train, 10% validation
TABULAR_FEATURES, TABULAR_CLASSES = 600, 100  # Purchase100, the largest tabular member set
MIN_ITEM_S = 20.0  # an item is not started with less time than this left before the deadline


@dataclass(frozen=True)
class Mode:
    """How a synthetic training loop runs."""

    bf16: bool            # bf16 autocast
    channels_last: bool   # NHWC activations and weights (tensor-core friendly)
    sync_per_step: bool   # loss.item() every step, as fit's eager loop (PPB/DP/ADV, cuda_graph=False)
    tuned: bool           # cudnn.benchmark, fused (or capturable) Adam
    runner: str           # eager | cudagraph | compile | compile_cg
    isolated: bool        # own process: compiles (compile_s 25.6-34.8 s on the H200) must be killable


MODES = {
    "fp32": Mode(False, False, True, False, "eager", False),
    "bf16": Mode(True, True, True, False, "eager", False),
    "bf16_async": Mode(True, True, False, True, "eager", False),
    "cudagraph": Mode(True, True, False, True, "cudagraph", True),
    "compile": Mode(True, True, False, True, "compile", True),
    "compile_cg": Mode(True, True, False, True, "compile_cg", True),
}


@dataclass(frozen=True)
class Spec:
    """What one measurement trains on (picklable: isolated items receive it in a child process)."""

    arch: str
    device: str
    images: int
    batch: int
    width: float
    input_shape: tuple[int, ...]
    num_classes: int
    warmup: int
    epochs: int
    deadline: float               # time.time() after which no further timed epoch starts
    seed: int = 0
    memory_fraction: float = 0.0  # > 0: cap this process's CUDA memory (packed trials)


# ---- data and models ----------------------------------------------------------------------------
def random_data(spec: Spec, n: int, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """n random inputs and labels, resident on the device (channels_last layout if asked)."""
    gen = torch.Generator().manual_seed(spec.seed)
    x = torch.randn((n, *spec.input_shape), generator=gen).to(spec.device)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, spec.num_classes, (n,), generator=gen).to(spec.device)


def new_model(spec: Spec, channels_last: bool) -> nn.Module:
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch, num_classes=spec.num_classes, input_shape=spec.input_shape,
                        width=spec.width).to(spec.device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def counted_train_gflop(spec: Spec) -> float:
    """Forward + backward GFLOP per input, counted by torch's FLOP counter on a CPU copy."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(spec.arch, num_classes=spec.num_classes, input_shape=spec.input_shape, width=spec.width)
    x, y = torch.randn(2, *spec.input_shape), torch.randint(0, spec.num_classes, (2,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / 2 / 1e9


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- synthetic training steps -------------------------------------------------------------------
def make_optimizer(model: nn.Module, mode: Mode, device: torch.device) -> torch.optim.Optimizer:
    """Adam as in miaray.train (lr 1e-3, weight decay 5e-4); fused when tuned, capturable for a
    CUDA-graph step (Adam's step counter must live on the device to be replayed)."""
    options: dict[str, Any] = {}
    if mode.runner == "cudagraph":
        options["capturable"] = device.type == "cuda"
    elif mode.tuned:
        options["fused"] = True
    return torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4, **options)


def make_loss(model: nn.Module, mode: Mode, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Forward + cross-entropy under the mode's precision, compiled for the compile runners."""
    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode.bf16):
            return F.cross_entropy(model(x), y)

    if mode.runner == "compile":
        return torch.compile(loss, dynamic=False)
    if mode.runner == "compile_cg":
        return torch.compile(loss, mode="reduce-overhead", dynamic=False)
    return loss


class TrainStep:
    """One optimiser step on the batch at `idx`; sums the loss on the device unless the mode syncs.
    The `cudagraph` mode on CUDA is the product's captured step (`miaray.train.CapturedStep`, without
    masks or defense); on the CPU it runs eagerly like the other modes."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: Mode, batch: int) -> None:
        self.device = x.device
        self.model, self.x, self.y, self.mode = model, x, y, mode
        self.optimizer = make_optimizer(model, mode, self.device)
        self.loss = make_loss(model, mode, self.device)
        self.total = torch.zeros((), device=self.device)
        self.captured: CapturedStep | None = None
        if mode.runner == "cudagraph" and self.device.type == "cuda":
            self.captured = CapturedStep(model, self.optimizer, TensorSplit(x, y, x[:0], y[:0]), batch_size=batch,
                                         defense=Defense(), masks=None, bn_l1=0.0)

    def __call__(self, idx: torch.Tensor) -> None:
        if self.captured is not None:
            self.captured(idx)
            return
        if self.mode.runner == "compile_cg":
            torch.compiler.cudagraph_mark_step_begin()
        loss = self.loss(self.x[idx], self.y[idx])
        if self.mode.sync_per_step:  # the one host sync per step of fit's eager loop
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.total += value if self.mode.sync_per_step else loss.detach()

    def epoch(self, n: int, batch: int, generator: torch.Generator) -> float:
        """One epoch over full batches; returns the wall seconds (device synchronised)."""
        synchronize(self.device)
        start = time.perf_counter()
        for idx in torch.randperm(n, generator=generator).split(batch):
            if len(idx) == batch:  # fixed shapes: no recompiles, one CUDA graph
                self(idx.to(self.device, non_blocking=True))
        synchronize(self.device)
        seconds = time.perf_counter() - start
        total = self.captured.take_total() if self.captured is not None else float(self.total)
        if not math.isfinite(total):
            raise FloatingPointError("non-finite loss in the epoch")
        self.total.zero_()
        return seconds


def dynamo_counters() -> dict[str, int]:
    """Graph breaks and skipped CUDA graphs so far in this process (0 when nothing was compiled)."""
    from torch._dynamo.utils import counters

    return {"graph_breaks": sum(counters["graph_break"].values()),
            "cudagraph_skips": counters["inductor"].get("cudagraph_skips", 0),
            "graphs": counters["stats"].get("unique_graphs", 0)}


def measure_training(spec: Spec, mode_name: str, barrier: Any = None) -> dict[str, Any]:
    """Warm-up then timed epochs of one synthetic loop; `barrier` lines up packed processes."""
    mode, device = MODES[mode_name], torch.device(spec.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = mode.tuned
        if spec.memory_fraction:
            torch.cuda.set_per_process_memory_fraction(spec.memory_fraction)  # current device; a bare "cuda" device has no index
    x, y = random_data(spec, spec.images, mode.channels_last)
    model = new_model(spec, mode.channels_last)
    reset_peak_memory(device)
    generator = torch.Generator().manual_seed(spec.seed)
    build_start = time.perf_counter()
    step = TrainStep(model, x, y, mode, spec.batch)
    warm = [time.perf_counter() - build_start + step.epoch(spec.images, spec.batch, generator)]
    warm += [step.epoch(spec.images, spec.batch, generator) for _ in range(spec.warmup - 1)]
    if barrier is not None:
        barrier.wait(timeout=max(1.0, spec.deadline - time.time()))
    timed, window_start = [], time.time()
    while len(timed) < spec.epochs and (not timed or time.time() + timed[-1] < spec.deadline):
        timed.append(step.epoch(spec.images, spec.batch, generator))
    window_end = time.time()
    seen = (spec.images // spec.batch) * spec.batch * len(timed)
    epoch_s = sum(timed) / len(timed) * spec.images / ((spec.images // spec.batch) * spec.batch)
    return {"item": "train", "arch": spec.arch, "mode": mode_name, "epoch_s": epoch_s,
            "img_s": seen / sum(timed), "warmup_s": warm[0],
            # compile (or capture) cost; an eager warm-up differs from a steady epoch only by noise
            "compile_s": warm[0] - sum(timed) / len(timed) if mode.runner != "eager" else math.nan,
            "timed_epochs": len(timed), "window": (window_start, window_end), "images_seen": seen,
            "peak_mb": peak_memory_mb(device), **dynamo_counters()}


# ---- the product path ---------------------------------------------------------------------------
def check_graph(spec: Spec) -> dict[str, Any]:
    """Does `fit`'s CUDA-graph step train like its eager loop? Same model, data, masks and seed, 2
    epochs each way (1,000 images: full batches replay the graph, the last short one runs eagerly).
    Fails on a weight difference beyond bf16 noise or a pruned weight that is not zero."""
    n = 1_000
    x, y = random_data(spec, n + 200, channels_last=spec.device.startswith("cuda"))
    data = TensorSplit(x[:n], y[:n], x[n:], y[n:])
    weights, masks = [], {}
    for cuda_graph in (False, True):
        model = new_model(spec, channels_last=spec.device.startswith("cuda"))
        masks = prune(model, method="l1_unstructured", sparsity=0.5)
        fit(model, data, epochs=2, lr=1e-3, weight_decay=5e-4, batch_size=spec.batch, patience=3,
            seed=spec.seed, masks=masks, cuda_graph=cuda_graph)
        weights.append({k: v.float() for k, v in model.state_dict().items()})
    eager, graphed = weights
    diff = max(((graphed[k] - eager[k]).abs().max() / eager[k].abs().max().clamp_min(1e-6)).item()
               for k in eager if eager[k].is_floating_point())
    pruned_nonzero = sum(int((graphed[k][m == 0] != 0).sum()) for k, m in masks.items())
    ok = diff < 0.05 and pruned_nonzero == 0
    return {"item": "check", "arch": spec.arch, "mode": "graph = eager", "max_rel_diff": diff,
            "status": "ok" if ok else f"FAIL: max relative weight difference {diff:.3g}, "
                                      f"{pruned_nonzero} pruned weights not zero"}


def measure_fit(spec: Spec, cuda_graph: bool = True) -> dict[str, Any]:
    """Epoch time of `miaray.train.fit` and throughput of `compute_signals`, as a unit runs them.
    The capture of fit's CUDA graph (once per fit call) is reported as `compile_s`, outside `epoch_s`."""
    device = torch.device(spec.device)
    image = len(spec.input_shape) == 3
    channels_last = device.type == "cuda" and image  # what miaray.unit.UnitContext does
    n_val = max(1, round(spec.images * VAL_PER_TRAIN))
    x, y = random_data(spec, spec.images + n_val, channels_last)
    data = TensorSplit(x[:spec.images], y[:spec.images], x[spec.images:], y[spec.images:])
    model = new_model(spec, channels_last)
    reset_peak_memory(device)
    options = dict(lr=1e-3, weight_decay=5e-4, batch_size=spec.batch, seed=spec.seed, cuda_graph=cuda_graph)
    warm = fit(model, data, epochs=spec.warmup, patience=spec.warmup + 1, **options)
    timed = fit(model, data, epochs=spec.epochs, patience=spec.epochs + 1, **options)
    train_peak = peak_memory_mb(device)
    loop_s = timed.seconds - timed.capture_seconds
    # Signals: members + non-members of one model; the unit's reference transform for BlindMI.
    synchronize(device)
    start = time.perf_counter()
    compute_signals(model, x, y, sensitivity=True, seed=spec.seed,
                    reference_transform=lambda v: reference_transform(v, is_image=image))
    synchronize(device)
    signal_s = time.perf_counter() - start
    return {"item": "fit", "arch": spec.arch, "mode": "fit" if cuda_graph else "fit eager",
            "epoch_s": loop_s / timed.epochs_run, "img_s": spec.images * timed.epochs_run / loop_s,
            "warmup_s": warm.seconds, "compile_s": timed.capture_seconds, "timed_epochs": timed.epochs_run,
            "signal_img_s": len(x) / signal_s, "peak_mb": train_peak}


# ---- isolated processes -------------------------------------------------------------------------
def _child(index: int, fn: Callable[..., dict], args: tuple, results: Any, barrier: Any) -> None:
    os.setpgrp()  # own process group: the parent can kill us together with inductor's compile workers
    try:
        result = fn(*args, barrier=barrier) if barrier is not None else fn(*args)
    except BaseException as error:  # noqa: BLE001 - reported as the item's status, never fatal
        result = {"error": f"{type(error).__name__}: {error}"[:300]}
    results.put((index, result))


def run_isolated(fn: Callable[..., dict], jobs: list[tuple], timeout: float, *, barrier: bool) -> list[dict]:
    """Run fn(*args) for every args in `jobs` at once, each in a fresh process; kill them all at
    `timeout`. With `barrier`, fn receives a Barrier shared by the jobs."""
    ctx = mp.get_context("spawn")  # a forked child would inherit the parent's CUDA context
    results = ctx.Queue()
    shared = ctx.Barrier(len(jobs)) if barrier else None
    procs = [ctx.Process(target=_child, args=(i, fn, args, results, shared)) for i, args in enumerate(jobs)]
    for proc in procs:
        proc.start()
    end, found = time.time() + timeout, {}
    while len(found) < len(procs) and time.time() < end:
        try:
            index, result = results.get(timeout=min(2.0, max(0.1, end - time.time())))
            found[index] = result
        except queue_module.Empty:
            if not any(proc.is_alive() for proc in procs) and results.empty():
                break
    for proc in procs:
        proc.join(timeout=2)
        if proc.is_alive():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.join()
    return [found.get(i, {"error": "timed out (killed at the deadline)" if time.time() >= end else
                          f"process died (exit code {procs[i].exitcode})"}) for i in range(len(jobs))]


def measure_packed(spec: Spec, procs: int, timeout: float) -> dict[str, Any]:
    """`procs` processes train resnet18 bf16 at once; aggregate images/s over their common window."""
    spec = replace(spec, memory_fraction=0.9 / procs if spec.device == "cuda" else 0.0)
    results = run_isolated(measure_training, [(spec, "bf16")] * procs, timeout, barrier=True)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"item": f"packed x{procs}", "arch": spec.arch, "mode": "bf16", "status": errors[0]}
    start = min(r["window"][0] for r in results)
    stop = max(r["window"][1] for r in results)
    return {"item": f"packed x{procs}", "arch": spec.arch, "mode": "bf16", "procs": procs,
            "img_s": sum(r["images_seen"] for r in results) / (stop - start),
            "epoch_s": max(r["epoch_s"] for r in results), "peak_mb": max(r["peak_mb"] for r in results),
            "timed_epochs": min(r["timed_epochs"] for r in results)}


# ---- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    kind: str    # fit | train | packed
    spec: Spec
    mode: str = ""
    procs: int = 1


def plan(args: argparse.Namespace, deadline: float) -> list[Item]:
    """All items in run order (the deadline cuts from the end): check, fit, fit eager, the cheap
    train modes (fp32, bf16), packed, then bf16_async and the isolated modes."""
    base = Spec(arch="resnet18", device=args.device, images=args.images, batch=args.batch, width=args.width,
                input_shape=(3, 32, 32), num_classes=10, warmup=1, epochs=args.epochs, deadline=deadline)
    archs = [a for a in IMAGE_ARCHS if a in args.archs]
    tabular = replace(base, arch="fc", images=args.tabular_rows, input_shape=(TABULAR_FEATURES,),
                      num_classes=TABULAR_CLASSES)
    items = [Item("check", base)]
    items += [Item("fit", replace(base, arch=a)) for a in archs]
    items += [Item("fit", tabular)] if "fc" in args.archs else []
    items += [Item("fit", replace(base, arch=a), "eager") for a in archs]
    modes = [m for m in MODES if m in args.modes]
    cheap = [m for m in modes if not MODES[m].isolated]
    items += [Item("train", replace(base, arch=a), m) for a in archs for m in cheap if m != "bf16_async"]
    if "resnet18" in archs and args.packed > 1:
        items += [Item("packed", base, "bf16", 1), Item("packed", base, "bf16", args.packed)]
    items += [Item("train", replace(base, arch=a), m) for a in archs for m in modes
              if m == "bf16_async" or MODES[m].isolated]
    return items


def run_item(item: Item, flops: dict[str, float]) -> dict[str, Any]:
    remaining = item.spec.deadline - time.time()
    if item.kind == "check":
        row = check_graph(item.spec)
    elif item.kind == "fit":
        row = measure_fit(item.spec, cuda_graph=item.mode != "eager")
    elif item.kind == "packed":
        row = measure_packed(item.spec, item.procs, remaining)
    elif MODES[item.mode].isolated:
        row = run_isolated(measure_training, [(item.spec, item.mode)], remaining, barrier=False)[0]
        row = {"item": "train", "arch": item.spec.arch, "mode": item.mode, "status": row.pop("error"), **row} \
            if "error" in row else row
    else:
        row = measure_training(item.spec, item.mode)
    if "img_s" in row and item.spec.arch in flops:
        row["tflop_s"] = row["img_s"] * flops[item.spec.arch] / 1e3
    row.setdefault("status", "ok")
    row.pop("window", None)
    return row


COLUMNS = [("item", ""), ("arch", ""), ("mode", ""), ("max_rel_diff", ".1e"), ("img_s", ".0f"), ("epoch_s", ".3f"),
           ("tflop_s", ".1f"), ("warmup_s", ".2f"), ("compile_s", ".1f"), ("signal_img_s", ".0f"), ("peak_mb", ".0f"),
           ("graph_breaks", "d"), ("cudagraph_skips", "d"), ("status", "")]


def fit_rates(rows: list[dict[str, Any]]) -> dict[str, Rates]:
    """Projection rates from the fit rows: seconds per training image per epoch, per queried image."""
    return {r["arch"]: Rates(r["epoch_s"] / r["images"], 1 / r["signal_img_s"], r.get("compile_s") or 0.0)
            for r in rows if r["item"] == "fit" and r["mode"] == "fit" and r["status"] == "ok"}


def print_projections(rates: dict[str, Rates], header: str) -> str:
    """The paper-grid projection under the typical-stopping assumption and without early stopping."""
    text = "\n\n".join([format_projection(f"{header}: paper grid, assumed early stopping",
                                          paper_grid(StopAssumption()), rates),
                        format_projection(f"{header}: paper grid, no early stopping (upper bound)",
                                          paper_grid(NO_EARLY_STOP), rates)])
    print(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test of the same code")
    p.add_argument("--images", type=int, default=13_500, help="training images per model, >= 1 (CIFAR10 member set)")
    p.add_argument("--tabular-rows", type=int, default=44_398, help="fc training rows, >= 1 (Purchase100 member set)")
    p.add_argument("--batch", type=int, default=128, help="training batch size in images, >= 1")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier > 0 (< 1 only for smoke tests)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per item, >= 1 (after 1 warm-up epoch)")
    p.add_argument("--archs", default=",".join((*IMAGE_ARCHS, "fc")), help=f"comma list of {', '.join(IMAGE_ARCHS)}, fc")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list, a subset of {', '.join(MODES)}")
    p.add_argument("--packed", type=int, default=4, help="processes of the packing test, an integer (<= 1: skip it)")
    p.add_argument("--deadline", type=float, default=420.0, help="seconds after which no item starts (each is skipped once less than 20 s remain)")
    p.add_argument("--quick", action="store_true", help="1 timed epoch, a deadline of at most 240 s")
    add_out_argument(p, "bench_gpu.json")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.deadline = 1, min(args.deadline, 240.0)
    args.archs, args.modes = args.archs.split(","), args.modes.split(",")
    unknown = sorted(set(args.modes) - set(MODES)) + sorted(set(args.archs) - {*IMAGE_ARCHS, "fc"})
    if unknown:
        p.error(f"unknown mode/arch: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.time()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device, nothing to measure")
        return 0
    device = torch.device(args.device)
    deadline = start + args.deadline
    items = plan(args, deadline)
    flops = {a: counted_train_gflop(replace(items[0].spec, arch=a, input_shape=(3, 32, 32), num_classes=10))
             for a in IMAGE_ARCHS if a in args.archs}
    print(f"# {machine_description(device)}; {args.images} images, batch {args.batch}, width {args.width}")
    print("# train GFLOP/image (counted | docs/science.md): "
          + ", ".join(f"{a} {g:.2f} | {REFERENCE_TRAIN_GFLOP[a]}" for a, g in flops.items()), flush=True)
    rows = []
    for item in items:
        label = f"{item.kind} {item.spec.arch} {item.mode}".strip()
        if deadline - time.time() < MIN_ITEM_S:
            rows.append({"item": item.kind, "arch": item.spec.arch, "mode": item.mode, "status": "skipped (deadline)"})
            continue
        print(f"[{time.time() - start:6.1f}s] {label}", file=sys.stderr, flush=True)
        try:
            row = run_item(item, flops)
        except Exception as error:  # noqa: BLE001 - one failed item must not lose the others
            row = {"item": item.kind, "arch": item.spec.arch, "mode": item.mode,
                   "status": f"{type(error).__name__}: {error}"[:300]}
        row["images"] = item.spec.images
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(format_table(rows, COLUMNS))
    projection = print_projections(fit_rates(rows), f"projection from this run ({device.type})")
    print(f"# total {time.time() - start:.0f}s")
    write_json(args.out, {"machine": machine_description(device), "args": vars(args), "gflop_per_image": flops,
                          "rows": rows, "projection": projection, "seconds": time.time() - start})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
