"""The training and fine-tuning loop: Adam, batches as index slices of on-device tensors, early stopping.

Read top to bottom: the hot loop is `fit`. A defense changes the loop only through the hooks of
`Defense` (how model and optimiser are wrapped and unwrapped, how batches are drawn, what the loss is,
what it reports), so Basic, PPB, DP-SGD and adversarial regularisation share one loop. Pruning masks
are re-applied after every optimiser step so removed weights stay exactly zero. On a GPU, Basic
training replays its whole step as one captured CUDA graph (`CapturedStep`): small convnets at batch
128 are bound by kernel launches (benchmarks/README.md, H200: eager bf16 vs `cudagraph` rows).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from miaray.models.modes import in_mode
from miaray.prune import apply_masks, bn_l1_penalty


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops at once instead of producing garbage."""


@dataclass
class TensorSplit:
    """Training and validation tensors of one model, already on its device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """One epoch of index batches: a seeded permutation cut into slices (the last may be short)."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch_size)


class Defense:
    """Basic training: cross-entropy, uniform shuffled batches. Subclasses override the hooks."""

    name = "basic"

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, n_train: int,
                batch_size: int, epochs: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Wrap model and optimiser before the first step (DP-SGD attaches Opacus here)."""
        return model, optimizer

    def batches(self, n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        return shuffled_batches(n, batch_size, generator)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    def summary(self) -> dict[str, float]:
        """Numbers the defense reports after training (epsilon for DP, step counts for ADV)."""
        return {}

    def finish(self, model: nn.Module) -> None:
        """Undo what `prepare` did to the model (DP: remove Opacus hooks and per-sample gradients)."""


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int             # 1-based epoch whose weights were kept
    best_val_loss: float
    best_val_acc: float
    seconds: float              # all of it, capture included
    history: list[dict[str, float]] = field(default_factory=list)
    capture_seconds: float = 0.0  # warm-up and CUDA-graph capture (0 when eager)
    defense_summary: dict[str, float] = field(default_factory=dict)


def autocast(device: torch.device, *, cache_enabled: bool = True):
    """bf16 autocast on CUDA (tensor cores); a no-op on the CPU, so CPU results are exact fp32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda",
                          cache_enabled=cache_enabled)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Logits for all of x in large batches, eval mode, fp32 output."""
    with in_mode(model), autocast(x.device):
        return torch.cat([model(chunk).float() for chunk in x.split(batch_size)])


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) over x, y."""
    logits = predict_logits(model, x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def batch_loss(defense: Defense, trained: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               bn_l1: float, cache_enabled: bool = True) -> torch.Tensor:
    """The training loss of one batch: the defense's loss of `trained` (the model as the defense wraps
    it) plus the slimming penalty on `model`'s BN scales, under autocast."""
    with autocast(x.device, cache_enabled=cache_enabled):
        loss = defense.loss(trained, x, y)
        if bn_l1:
            loss = loss + bn_l1 * bn_l1_penalty(model)
    return loss


def descend(loss: torch.Tensor, optimizer: torch.optim.Optimizer, model: nn.Module,
            masks: dict[str, torch.Tensor] | None) -> None:
    """Backward, one optimiser step, and the pruning masks re-applied (gradients zeroed by the caller)."""
    loss.backward()
    optimizer.step()
    if masks:
        apply_masks(model, masks)


class CapturedStep:
    """The Basic step on full batches (gather, forward, backward, Adam, masks, loss sum) as one CUDA graph.

    Replaying one graph instead of launching a few hundred kernels per step is the `cudagraph` mode of
    benchmarks/bench_gpu.py: a ResNet18 epoch on 13,500 random CIFAR-shaped images took 0.360 s on an
    H200 against 1.220 s for the eager bf16 loop (benchmarks/results/bench_gpu_h200_2026-11-28.json).
    This class itself is timed by the `fit` rows of the same script (not yet run on a GPU). The graph
    reads its batch from a static index buffer and adds its loss to a device scalar, so a replay needs
    no host sync. It is
    PyTorch's whole-network capture recipe: warm-up steps on a side stream allocate the gradients
    and Adam's state outside the graph, then one step is captured. The warm-up steps are undone
    (weights, BN statistics and Adam's moments restored), so training starts from the same state as
    the eager loop and follows the same update rule.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, data: TensorSplit, *,
                 batch_size: int, defense: Defense, masks: dict[str, torch.Tensor] | None, bn_l1: float) -> None:
        self.model, self.optimizer, self.data = model, optimizer, data
        self.defense, self.masks, self.bn_l1 = defense, masks, bn_l1
        device = data.x_train.device
        model.train()  # the graph records the mode's kernels: BatchNorm on batch statistics
        self.idx = torch.arange(batch_size, device=device)  # the batch a replay trains on
        self.total = torch.zeros((), device=device)         # summed loss of the replays
        initial = copy.deepcopy(model.state_dict())
        try:
            with torch.cuda.device(device):  # the capture stream lives on the data's GPU
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    for _ in range(3):
                        optimizer.zero_grad(set_to_none=True)
                        self._step()
                torch.cuda.current_stream(device).wait_stream(side)
                optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the static gradients
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self._step()
        finally:  # also when capture fails: the caller then trains eagerly from the initial state
            model.load_state_dict(initial)  # in place: the graph keeps the parameters' addresses
            for state in optimizer.state.values():  # a fresh Adam: zero moments, step 0
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()
        self.total.zero_()

    def _step(self) -> None:
        x, y = self.data.x_train[self.idx], self.data.y_train[self.idx]
        # cache_enabled=False: autocast's weight-cast cache must not outlive the capture. The learning
        # rate is baked into the graph: fit's Adam keeps a constant one.
        loss = batch_loss(self.defense, self.model, self.model, x, y, bn_l1=self.bn_l1, cache_enabled=False)
        descend(loss, self.optimizer, self.model, self.masks)
        self.total.add_(loss.detach().float())

    def __call__(self, idx: torch.Tensor) -> None:
        """One optimiser step on the full batch idx (on the device)."""
        self.idx.copy_(idx)
        self.graph.replay()

    def take_total(self) -> float:
        """The summed loss of the replays since the last call (one host sync)."""
        total = self.total.item()
        self.total.zero_()
        return total


def fit(model: nn.Module, data: TensorSplit, *, epochs: int, lr: float, weight_decay: float,
        batch_size: int, patience: int, monitor: str = "val_loss", seed: int = 0,
        masks: dict[str, torch.Tensor] | None = None, defense: Defense | None = None,
        bn_l1: float = 0.0, log: Callable[[str], None] | None = None, cuda_graph: bool = True) -> TrainResult:
    """Train `model` in place with Adam and early stopping; keep the best validation weights.

    `masks` (from `miaray.prune`) are re-applied after every step. `bn_l1` adds Liu et al.'s L1
    penalty on BN scale factors (network-slimming sparsity training). Raises TrainingDiverged on a
    non-finite loss. With `cuda_graph`, Basic training on CUDA replays full batches through a
    `CapturedStep` (the other defenses draw random pairs, attach Opacus hooks or take inner steps,
    and stay eager); its non-finite loss is caught at the end of the epoch instead of the step.
    """
    defense = defense or Defense()
    device = data.x_train.device
    generator = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    capture = cuda_graph and device.type == "cuda" and type(defense) is Defense and n >= batch_size
    # capturable: Adam keeps its step count on the GPU, so the step can live inside a graph.
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, capturable=capture)
    trained, optimizer = defense.prepare(model, optimizer, n_train=n, batch_size=batch_size, epochs=epochs)
    start = time.perf_counter()
    captured = None
    if capture:
        try:
            captured = CapturedStep(model, optimizer, data, batch_size=batch_size, defense=defense, masks=masks,
                                    bn_l1=bn_l1)
        except RuntimeError as error:  # slower, same recipe: the step runs eagerly
            warnings.warn(f"CUDA graph capture failed, training eagerly: {error}", RuntimeWarning)
    capture_seconds = time.perf_counter() - start
    # Score improvements as "lower is better" for both monitors.
    score_of = (lambda loss, acc: loss) if monitor == "val_loss" else (lambda loss, acc: -acc)
    best_score, best_state, best_epoch, stale = math.inf, None, 0, 0
    best_loss = best_acc = math.nan
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        trained.train()
        total, steps = 0.0, 0
        batches = list(defense.batches(n, batch_size, generator))
        # One host-to-device copy per epoch: a blocking copy per batch would stall every replay.
        for idx in torch.cat(batches).to(device).split([len(b) for b in batches]):
            if len(idx) == 0:  # Poisson sampling can draw an empty batch
                continue
            if captured is not None and len(idx) == batch_size:
                captured(idx)
                steps += 1
                continue
            loss = batch_loss(defense, trained, model, data.x_train[idx], data.y_train[idx], bn_l1=bn_l1)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss is {value} at epoch {epoch}, step {steps + 1} "
                                       f"(defense {defense.name})")
            # Zeroed in place while a graph is captured: it reads the gradients at fixed addresses.
            optimizer.zero_grad(set_to_none=captured is None)
            descend(loss, optimizer, model, masks)
            total += value
            steps += 1
        if captured is not None:
            total += captured.take_total()
            if not math.isfinite(total):
                raise TrainingDiverged(f"loss is {total} summed over epoch {epoch} (defense {defense.name})")
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"validation loss is {val_loss} after epoch {epoch} (defense {defense.name})")
        history.append({"epoch": epoch, "train_loss": total / max(steps, 1), "val_loss": val_loss,
                        "val_acc": val_acc})
        if log:
            log(f"epoch {epoch:3d}  train_loss {total / max(steps, 1):.4f}  val_loss {val_loss:.4f}  "
                f"val_acc {val_acc:.4f}")
        score = score_of(val_loss, val_acc)
        if score < best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_loss, best_acc = val_loss, val_acc
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    optimizer.zero_grad(set_to_none=True)  # releases the gradients (and a captured graph's buffers)
    defense.finish(model)
    return TrainResult(epochs_run=epoch, best_epoch=best_epoch, best_val_loss=best_loss,
                       best_val_acc=best_acc, seconds=time.perf_counter() - start, history=history,
                       defense_summary=defense.summary(), capture_seconds=capture_seconds)
