"""The training and fine-tuning loop: Adam, batches as index slices of on-device tensors, early stopping.

Read top to bottom: the hot loop is `fit`. A defense changes the loop only through the three hooks of
`Defense` (how batches are drawn, what the loss is, how model and optimiser are wrapped), so Basic,
PPB, DP-SGD and adversarial regularisation share one loop. Pruning masks are re-applied after every
optimiser step so removed weights stay exactly zero.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

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
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    defense_summary: dict[str, float] = field(default_factory=dict)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores); a no-op on the CPU, so CPU results are exact fp32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Logits for all of x in large batches, eval mode, fp32 output."""
    was_training = model.training
    model.eval()
    with autocast(x.device):
        out = torch.cat([model(chunk).float() for chunk in x.split(batch_size)])
    model.train(was_training)
    return out


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) over x, y."""
    logits = predict_logits(model, x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def fit(model: nn.Module, data: TensorSplit, *, epochs: int, lr: float, weight_decay: float,
        batch_size: int, patience: int, monitor: str = "val_loss", seed: int = 0,
        masks: dict[str, torch.Tensor] | None = None, defense: Defense | None = None,
        bn_l1: float = 0.0, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train `model` in place with Adam and early stopping; keep the best validation weights.

    `masks` (from `miaray.prune`) are re-applied after every step. `bn_l1` adds Liu et al.'s L1
    penalty on BN scale factors (network-slimming sparsity training). Raises TrainingDiverged on a
    non-finite loss.
    """
    defense = defense or Defense()
    device = data.x_train.device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(data.y_train)
    trained, optimizer = defense.prepare(model, optimizer, n_train=n, batch_size=batch_size, epochs=epochs)
    # Score improvements as "lower is better" for both monitors.
    score_of = (lambda loss, acc: loss) if monitor == "val_loss" else (lambda loss, acc: -acc)
    best_score, best_state, best_epoch, stale = math.inf, None, 0, 0
    best_loss = best_acc = math.nan
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, epochs + 1):
        trained.train()
        total, steps = 0.0, 0
        for idx in defense.batches(n, batch_size, generator):
            if len(idx) == 0:  # Poisson sampling can draw an empty batch
                continue
            idx = idx.to(device)
            x, y = data.x_train[idx], data.y_train[idx]
            with autocast(device):
                loss = defense.loss(trained, x, y)
                if bn_l1:
                    loss = loss + bn_l1 * bn_l1_penalty(model)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch}, step {steps + 1} "
                                       f"(defense {defense.name})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if masks:
                apply_masks(model, masks)
            total += loss.item()
            steps += 1
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
    defense.finish(model)
    return TrainResult(epochs_run=epoch, best_epoch=best_epoch, best_val_loss=best_loss,
                       best_val_acc=best_acc, seconds=time.perf_counter() - start, history=history,
                       defense_summary=defense.summary())
