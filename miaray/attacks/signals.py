"""What an attacker observes: softmax outputs, prediction sensitivity (paper eq. 2) and the gaps.

Prediction sensitivity of one sample x is the class vector

    PS(x) = 1/n * sum_i |f(x + eps * d_i) - f(x)| / eps,   d_i ~ N(0, I) in the normalised input space,

with f the softmax output. The n perturbed copies of every sample are stacked into one large batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miaray.models.modes import in_mode

# Directions are drawn per block of this many samples from a generator seeded by (seed, block), so
# a sample's directions depend only on the seed and its position, never on the batch size.
_NOISE_BLOCK = 64


@dataclass(frozen=True)
class Signals:
    """The target model's outputs on N labelled samples (tensors on one device).

    probs: N x C softmax; labels: N int64 ground truth; sensitivity: N x C prediction sensitivity
    (eq. 2) or None; ref_probs: N x C softmax on the BlindMI-transformed inputs or None.
    """

    probs: Tensor
    labels: Tensor
    sensitivity: Tensor | None = None
    ref_probs: Tensor | None = None

    def __post_init__(self) -> None:
        if self.probs.ndim != 2:
            raise ValueError(f"probs must be N x C, got shape {tuple(self.probs.shape)}")
        if self.labels.shape != (self.probs.shape[0],):
            raise ValueError(f"labels must have shape ({self.probs.shape[0]},), got {tuple(self.labels.shape)}")
        for name in ("sensitivity", "ref_probs"):
            value = getattr(self, name)
            if value is not None and value.shape != self.probs.shape:
                raise ValueError(f"{name} must have the shape of probs {tuple(self.probs.shape)}, "
                                 f"got {tuple(value.shape)}")

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def num_classes(self) -> int:
        return self.probs.shape[1]

    @property
    def device(self) -> torch.device:
        return self.probs.device

    def true_class(self, values: Tensor) -> Tensor:
        """values[i, labels[i]] for an N x C tensor (e.g. probs or sensitivity)."""
        return values.gather(1, self.labels.view(-1, 1).to(values.device)).squeeze(1)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "Signals":
        return Signals(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                          for f in dataclasses.fields(self)})

    def subset(self, idx: Tensor | np.ndarray | Sequence[int]) -> "Signals":
        """The rows idx (integer indices or a boolean mask)."""
        index = torch.as_tensor(np.asarray(idx) if not isinstance(idx, Tensor) else idx)
        return self._map(lambda t: t[index.to(t.device)])

    def to(self, device: torch.device | str) -> "Signals":
        return self._map(lambda t: t.to(device))

    @staticmethod
    def concat(parts: Sequence["Signals"]) -> "Signals":
        """Rows of all parts in order; an optional field is kept only if every part has it."""
        if not parts:
            raise ValueError("Signals.concat needs at least one part")
        fields = {}
        for f in dataclasses.fields(Signals):
            values = [getattr(p, f.name) for p in parts]
            present = [v is not None for v in values]
            if any(present) and not all(present):
                raise ValueError(f"Signals.concat: {f.name} is missing in some parts")
            fields[f.name] = torch.cat([v.to(parts[0].device) for v in values]) if all(present) else None
        return Signals(**fields)


def membership_set(members: Signals, nonmembers: Signals) -> tuple[Signals, np.ndarray]:
    """Members then non-members as one Signals, with the 0/1 membership vector (1 = member)."""
    membership = np.concatenate([np.ones(len(members), np.int64), np.zeros(len(nonmembers), np.int64)])
    return Signals.concat([members, nonmembers]), membership


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def perturbation_directions(*, shape: tuple[int, ...], start: int, stop: int, n_directions: int,
                            seed: int, device: torch.device) -> Tensor:
    """The directions d_i of samples start..stop-1: a tensor (n_directions, stop - start, *shape).

    Sample j's directions depend only on (seed, j), whatever the batching.
    """
    chunks = []
    for block in range(start // _NOISE_BLOCK, (stop - 1) // _NOISE_BLOCK + 1):
        lo, hi = block * _NOISE_BLOCK, (block + 1) * _NOISE_BLOCK
        block_seed = int(np.random.SeedSequence([seed, block]).generate_state(1)[0])
        gen = torch.Generator(device=device).manual_seed(block_seed)
        noise = torch.randn((n_directions, _NOISE_BLOCK, *shape), generator=gen, device=device)
        chunks.append(noise[:, max(start, lo) - lo:min(stop, hi) - lo])
    return torch.cat(chunks, dim=1)


def _softmax(model: nn.Module, x: Tensor) -> Tensor:
    return F.softmax(model(x).float(), dim=1)


def compute_signals(model: nn.Module, x: Tensor, y: Tensor, *, sensitivity: bool = True,
                    n_directions: int = 10, eps: float = 1e-3, seed: int = 0, batch_size: int = 1024,
                    reference_transform: Callable[[Tensor], Tensor] | None = None) -> Signals:
    """Query model on (x, y): softmax, optionally sensitivity (eq. 2) and BlindMI reference outputs.

    Runs on the model's device in eval mode without gradients, in fp32 (autocast off: eps = 1e-3 is
    below bf16 resolution); x may live on another device and is moved chunk by chunk. batch_size is
    the number of inputs per forward pass, perturbed copies included. The model's train/eval mode is
    restored afterwards. The result lives on the model's device.
    """
    if n_directions < 1 or eps <= 0:
        raise ValueError("n_directions must be >= 1 and eps > 0")
    device = _model_device(model)
    per_chunk = max(1, batch_size // (n_directions + 1)) if sensitivity else batch_size
    if per_chunk > _NOISE_BLOCK:  # whole noise blocks per chunk: no block is drawn twice
        per_chunk -= per_chunk % _NOISE_BLOCK
    probs, sens, refs = [], [], []
    with in_mode(model), torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        for start in range(0, len(x), per_chunk):
            xb = x[start:start + per_chunk].to(device=device, dtype=torch.float32)
            pb = _softmax(model, xb)
            probs.append(pb)
            if sensitivity:
                d = perturbation_directions(shape=tuple(xb.shape[1:]), start=start,
                                            stop=start + len(xb), n_directions=n_directions,
                                            seed=seed, device=device)
                perturbed = (xb.unsqueeze(0) + eps * d).flatten(0, 1)
                pp = _softmax(model, perturbed).view(n_directions, len(xb), -1)
                sens.append((pp - pb.unsqueeze(0)).abs().mean(dim=0) / eps)
            if reference_transform is not None:
                refs.append(_softmax(model, reference_transform(xb)))
    return Signals(probs=torch.cat(probs), labels=torch.as_tensor(y).to(device=device, dtype=torch.int64),
                   sensitivity=torch.cat(sens) if sensitivity else None,
                   ref_probs=torch.cat(refs) if reference_transform is not None else None)


def sensitivity_loop_reference(model: nn.Module, x: Tensor, *, n_directions: int = 10, eps: float = 1e-3,
                               seed: int = 0, samples_per_forward: int = 1) -> Tensor:
    """Slow reference for eq. 2: one forward per direction and per group of samples_per_forward
    samples (1 = the naive per-sample loop), with the same directions as compute_signals.
    Used by the tests and the benchmark only."""
    device = _model_device(model)
    x = x.to(device=device, dtype=torch.float32)
    # Drawn once up front so that the loop is not charged for drawing noise blocks repeatedly.
    directions = perturbation_directions(shape=tuple(x.shape[1:]), start=0, stop=len(x),
                                         n_directions=n_directions, seed=seed, device=device)
    rows = []
    with in_mode(model), torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        for start in range(0, len(x), samples_per_forward):
            xb = x[start:start + samples_per_forward]
            d = directions[:, start:start + samples_per_forward]
            base = _softmax(model, xb)
            total = torch.zeros_like(base)
            for i in range(n_directions):
                total += (_softmax(model, xb + eps * d[i]) - base).abs() / eps
            rows.append(total / n_directions)
    return torch.cat(rows)


def confidence_gap(members: Signals, nonmembers: Signals) -> float:
    """Paper eq. 3: mean ground-truth confidence over members minus over non-members."""
    return float(members.true_class(members.probs).mean() - nonmembers.true_class(nonmembers.probs).mean())


def sensitivity_gap(members: Signals, nonmembers: Signals) -> float:
    """Paper eq. 4: mean ground-truth-class sensitivity over members minus over non-members."""
    if members.sensitivity is None or nonmembers.sensitivity is None:
        raise ValueError("sensitivity_gap needs signals computed with sensitivity=True")
    return float(members.true_class(members.sensitivity).mean()
                 - nonmembers.true_class(nonmembers.sensitivity).mean())


def generalization_gap(train_acc: float, test_acc: float) -> float:
    """Train accuracy minus test accuracy."""
    return float(train_acc - test_acc)
