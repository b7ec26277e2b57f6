"""DP-SGD during fine-tuning: Opacus per-example clipping, Gaussian noise, Poisson batches, RDP accounting.

The model is wrapped in Opacus' `GradSampleModule` (hook mode, per-example gradients) and the Adam
optimiser that `fit` built in a `DPOptimizer`: each step clips every example's gradient to
`max_grad_norm`, sums, adds N(0, (noise_multiplier * max_grad_norm)^2) noise and divides by the expected
batch size. Batches are Poisson samples (each training example independently with rate
q = batch_size / n), drawn with the loop's generator, ceil(n / batch_size) of them per epoch. An
`RDPAccountant` is stepped by the optimiser once per step with the real noise multiplier and q.

Batch norm: the pruned model arrives with trained BatchNorm layers, which Opacus rejects (train-mode BN
mixes the examples of a batch). We freeze them (`frozen_bn`): each becomes its eval-mode affine map with
the trained running statistics held constant and gamma/beta still trained. This is per-example and
keeps the trained function; GroupNorm (`ModuleValidator.fix`) would instead replace a trained
normalisation by an untrained one and change the state_dict. Parameter names are unchanged, so the
pruning masks (keyed by the original names) keep applying: removed BN channels of structured and
slimming pruning have gamma = beta = 0 in the masks and stay exactly zero; a slimming-pruned model
therefore keeps its pruning in the frozen gammas.

Before freezing, the running statistics are re-estimated on `calibration` inputs, the model's own
validation split (held out from its training set, as for early stopping). The statistics the original
learned describe the unpruned network, and frozen after pruning they cost DP much of its utility: on
digits, ResNet18 width 0.5, L1 unstructured 0.9, 15 epochs, validation accuracy 0.57 with the stale
statistics against 0.84 re-estimated at noise 0.01, 0.14 against 0.27 at noise 0.1. DP would be judged
on stale statistics, not on its noise. Re-estimated on the training set they would read the members
outside the accountant; the validation split holds none, so epsilon still covers every use of them.

What epsilon covers: only the fine-tuning steps. The pruned starting point was trained on the same
members without privacy, so the pair (epsilon, delta) is a guarantee for this phase, not for the model.
Fine-tuning with a pruning mask discards the noise and gradient on removed weights; their per-example
gradients still count towards the clipping norm (Opacus clips whole per-example gradients).

Empty Poisson batches are skipped by `fit` (probability (1 - q)^n, about e^-batch_size) and are not
counted as steps.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn

from miaray.defenses.frozen_bn import freeze_batchnorm, recalibrate_batchnorm, restore_batchnorm
from miaray.train import Defense


class DPDefense(Defense):
    """DP-SGD (Abadi et al. 2016) with true per-example clipping through Opacus."""

    name = "dp"

    def __init__(self, *, noise_multiplier: float, max_grad_norm: float, delta: float = 1e-5,
                 seed: int = 0, calibration: torch.Tensor | None = None) -> None:
        if noise_multiplier < 0 or max_grad_norm <= 0 or not 0 < delta < 1:
            raise ValueError(f"dp needs noise_multiplier >= 0, max_grad_norm > 0, 0 < delta < 1; got "
                             f"{noise_multiplier}, {max_grad_norm}, {delta}")
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.delta = delta
        self.seed = seed
        self.calibration = calibration
        self.accountant = RDPAccountant()
        self.sample_rate = math.nan
        self._wrapped: GradSampleModule | None = None
        self._frozen: dict[str, nn.Module] = {}

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, n_train: int,
                batch_size: int, epochs: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        self.sample_rate = min(1.0, batch_size / n_train)
        if self.calibration is not None:
            recalibrate_batchnorm(model, self.calibration, batch_size=batch_size)
        self._frozen = freeze_batchnorm(model)
        ModuleValidator.validate(model, strict=True)  # raises on any other layer DP cannot handle
        # strict=False: Opacus refuses trainable layers with buffers because BN updates them from the
        # data; a FrozenBatchNorm's buffers are constants, and it has its own exact grad sampler.
        self._wrapped = GradSampleModule(model, loss_reduction="mean", strict=False)
        self._wrapped.forbid_grad_accumulation()  # Poisson batches: one backward per step
        device = next(model.parameters()).device
        dp_optimizer = DPOptimizer(optimizer, noise_multiplier=self.noise_multiplier,
                                   max_grad_norm=self.max_grad_norm,
                                   expected_batch_size=round(self.sample_rate * n_train),
                                   loss_reduction="mean",
                                   generator=torch.Generator(device=device).manual_seed(self.seed))
        dp_optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        return self._wrapped, dp_optimizer

    def batches(self, n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Poisson sampling: the privacy amplification that the accountant assumes."""
        for _ in range(math.ceil(n / batch_size)):
            yield torch.nonzero(torch.rand(n, generator=generator) < self.sample_rate).flatten()

    @property
    def steps(self) -> int:
        """Optimiser steps taken, as the accountant counted them."""
        return sum(steps for _, _, steps in self.accountant.history)

    def summary(self) -> dict[str, float]:
        return {"epsilon": self.accountant.get_epsilon(self.delta), "delta": self.delta,
                "dp_steps": self.steps, "sample_rate": self.sample_rate}

    def finish(self, model: nn.Module) -> None:
        """Detach Opacus and put the BatchNorm modules back, leaving a plain model (idempotent)."""
        if self._wrapped is not None:
            self._wrapped.remove_hooks()
            for p in model.parameters():  # per-example gradients are batch-size times the model
                for attr in ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample"):
                    if hasattr(p, attr):
                        delattr(p, attr)
            self._wrapped = None
        restore_batchnorm(model, self._frozen)
        self._frozen = {}
