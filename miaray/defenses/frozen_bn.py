"""Batch norm with frozen running statistics: the per-example form of a trained BatchNorm layer.

DP-SGD needs every example's gradient to depend on that example alone. A BatchNorm layer in train mode
normalises with statistics of the whole batch (and writes them into buffers), so Opacus rejects it. In
eval mode the same layer is a per-channel affine map `gamma * (x - mean) / sqrt(var + eps) + beta`
with constant `mean` and `var`: per-example, hence DP-compatible, and keeping the trained gamma/beta.

`freeze_batchnorm` swaps every BatchNorm of a model for a `FrozenBatchNorm` that holds the *same*
Parameter and buffer objects under the *same* names, so optimisers built before the swap, pruning masks
keyed by parameter name and state_dicts all stay valid. `restore_batchnorm` swaps the originals back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from opacus.grad_sample import register_grad_sampler
from torch import nn

from miaray.models.modes import in_mode

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class FrozenBatchNorm(nn.Module):
    """Eval-mode batch norm in train and eval mode alike; gamma (`weight`) and beta (`bias`) train."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        if not (bn.affine and bn.track_running_stats):
            raise ValueError(f"{bn} needs affine=True and running statistics to be frozen")
        self.eps = bn.eps
        # The very same objects: the optimiser, the masks and the state_dict keep pointing at them.
        self.weight = bn.weight
        self.bias = bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / sqrt(var + eps): the input's factor in the gradient of gamma."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape) + self.eps)


@register_grad_sampler(FrozenBatchNorm)
def _frozen_bn_grad_sample(layer: FrozenBatchNorm, activations: list[torch.Tensor],
                           backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-example gradients of gamma and beta: sums over every non-channel dimension but the batch."""
    x_hat = layer.normalized(activations[0].to(backprops.dtype))
    spatial = tuple(range(2, backprops.dim()))
    grads = {}
    if layer.weight.requires_grad:
        grads[layer.weight] = (backprops * x_hat).sum(dim=spatial) if spatial else backprops * x_hat
    if layer.bias.requires_grad:
        grads[layer.bias] = backprops.sum(dim=spatial) if spatial else backprops
    return grads


def _swap(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)


def freeze_batchnorm(model: nn.Module) -> dict[str, nn.Module]:
    """Replace every BatchNorm of `model` in place by a FrozenBatchNorm; returns the originals by name."""
    originals = {name: m for name, m in model.named_modules() if isinstance(m, _BATCHNORMS)}
    for name, bn in originals.items():
        _swap(model, name, FrozenBatchNorm(bn))
    return originals


def restore_batchnorm(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Undo `freeze_batchnorm`: the original modules share the (possibly trained) parameters."""
    for name, bn in originals.items():
        _swap(model, name, bn)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, *, batch_size: int) -> None:
    """Re-estimate every BatchNorm's running mean and variance on the inputs `x`: in train mode, batch by
    batch, each statistic the plain average of the batches' (momentum None); parameters are left untouched
    and the model's mode is restored. A model without BatchNorm is left as it is."""
    norms = [m for m in model.modules() if isinstance(m, _BATCHNORMS) and m.track_running_stats]
    if not norms or len(x) == 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    with in_mode(model, training=True):
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
