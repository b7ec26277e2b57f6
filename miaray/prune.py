"""The four pruning methods of the paper as one-shot masks, and the achieved-sparsity report.

Masks are a plain dict {parameter name: tensor of the parameter's shape}, 1 = keep, 0 = removed:
every conv and linear weight for `l1_unstructured`; every conv weight and BatchNorm weight and bias
(plus the classifier weight where DenseNet slimming touches it) for the structured methods.
`prune` applies them once; the training loop calls `apply_masks` after every optimizer step so the
removed weights stay exactly zero through fine-tuning (docs/science.md, Pruning).

Methods
- `l1_unstructured`: in every Conv2d and Linear weight (first conv and classifier included), zero
  the round(sparsity * n) weights of smallest |w|, layer by layer.
- `l1_structured` / `l2_structured`: in every channel group (see `miaray.models.structure`), zero
  the round(sparsity * size) channels with the smallest L1 / L2 norm; the norm of a channel is
  taken over the filters of all convs that produce it together. A removed channel loses its
  filters and every BatchNorm entry that normalises it (weight and bias), so it is exactly zero
  wherever it exists, as in a physically slimmer network.
- `slimming` (Liu et al. 2017): rank every BatchNorm entry by |gamma| on one global scale and remove
  the smallest until the requested fraction of conv parameters is dead. Removing an entry zeroes
  its weight and bias and the weights that die with it: the producing filter of a post-norm BN
  (Conv -> BN: ResNet, VGG) or the consuming input column of a pre-norm BN (BN -> ReLU -> Conv:
  DenseNet, whose last BN feeds the classifier; those linear columns are masked but not counted).

Decisions
- ResNet residual adds: channels summed by an add are one tied group (the stem or a projection
  shortcut plus the conv2 of every block on that residual stream), pruned together by the
  structured methods, so a removed stream channel is zero before and after every add. Each conv
  still loses the same fraction of its filters. Slimming removes single BN entries, as Liu et al.
  do: a removed bn2 entry silences that block's contribution to the channel exactly, while the
  shortcut still carries it.
- DenseNet: a channel made by one layer feeds bn1 of every later layer of its block and the BN after
  the block; the structured methods zero all those entries. Every DenseNet BN, bn2 included, is the
  pre-norm of the conv after it (the BN-ReLU-Conv composite), so slimming can reach the 3x3 convs
  (a third of the weights); counting bn2 as conv1's post-norm would cap slimming near 0.7.
- Slimming masks and counts one side only (docs/science.md, Pruning): the weights on the other side of
  a removed BN entry (the next conv's input column in VGG, the producing conv1 filter of a DenseNet
  bn2) are dead too but stay unmasked and uncounted, as the structured methods count filters only.
- Structured methods keep at least one channel per group, and slimming keeps the largest-|gamma|
  entry of every BN, so the network stays connected (only matters at tiny widths).
- Sparsity (docs/science.md, Pruning): zeroed / total over all conv + linear weights for
  `l1_unstructured`, over conv weights only for the structured methods. Per-group rounding keeps
  the structured methods within 0.01 of the request at width 1; slimming stops at the first entry
  that reaches it.
- Opacus' GradSampleModule prefixes names with `_module.`; `apply_masks`, `sparsity_report` and
  `bn_l1_penalty` unwrap it and accept either the wrapper or the plain model.
- After `opacus.validators.ModuleValidator.fix` a BatchNorm becomes a GroupNorm of the same name and
  shape, so the masks still apply; GroupNorm statistics then mix removed (zero) channels into the
  group mean and variance of the kept ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from miaray.models.structure import ChannelGroup, NormSlice
from miaray.vocabulary import METHODS, STRUCTURED_METHODS

Masks = dict[str, torch.Tensor]


def prune(model: nn.Module, *, method: str, sparsity: float) -> Masks:
    """Compute the masks of `method` at `sparsity`, zero the removed weights in place, return them."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; choose one of: {', '.join(METHODS)}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity!r} must lie in [0, 1)")
    model = _unwrap(model)
    with torch.no_grad():
        if method == "l1_unstructured":
            masks = _l1_unstructured(model, sparsity)
        elif method == "slimming":
            masks = _slimming(model, _channel_groups(model, method), sparsity)
        else:
            p = 1 if method == "l1_structured" else 2
            masks = _filter_norm(model, _channel_groups(model, method), sparsity, p=p)
    apply_masks(model, masks)
    return masks


def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Re-zero the removed weights in place (call after every optimizer step).

    `model` may be the plain model or an Opacus GradSampleModule around it; mask names are those of
    the plain model. Masks on another device than their parameter are moved on the fly.
    """
    params = dict(_unwrap(model).named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if name not in params:
                raise KeyError(f"mask {name!r} matches no parameter of {type(_unwrap(model)).__name__}; "
                               f"masks must come from prune() on the same architecture")
            param = params[name]
            param.mul_(mask if mask.device == param.device else mask.to(param.device))


def sparsity_report(model: nn.Module, masks: Masks, *, method: str) -> dict[str, Any]:
    """Achieved sparsity counted as docs/science.md (Pruning) defines it, per-layer sparsity, and mask violations.

    Keys: `sparsity` (overall), `counted` (which weights), `layers` {weight name: zeroed fraction},
    `mask_violations` (masked entries that are not zero: 0 when the masks hold) and, for the
    structured methods, `bn_channel_fraction` (removed BN/GroupNorm entries / all entries).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; choose one of: {', '.join(METHODS)}")
    model = _unwrap(model)
    structured = method in STRUCTURED_METHODS
    counted_types = (nn.Conv2d,) if structured else (nn.Conv2d, nn.Linear)
    layers: dict[str, float] = {}
    zeroed = total = 0
    for name, module in model.named_modules():
        if isinstance(module, counted_types):
            key = f"{name}.weight"
            removed = int((masks[key] == 0).sum()) if key in masks else 0
            layers[key] = removed / module.weight.numel()
            zeroed, total = zeroed + removed, total + module.weight.numel()
    params = dict(model.named_parameters())
    violations = sum(int(((masks[name] == 0) & (params[name] != 0)).sum()) for name in masks)
    report: dict[str, Any] = {"method": method, "sparsity": zeroed / total if total else 0.0,
                              "counted": "conv weights" if structured else "conv and linear weights",
                              "layers": layers, "mask_violations": violations}
    if structured:
        norms = [f"{name}.weight" for name, module in model.named_modules()
                 if isinstance(module, (_BatchNorm, nn.GroupNorm))]
        removed_entries = sum(int((masks[key] == 0).sum()) for key in norms if key in masks)
        report["bn_channel_fraction"] = removed_entries / sum(params[key].numel() for key in norms)
    return report


def bn_l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |gamma| over all BatchNorm layers: Liu et al.'s sparsity term (the caller scales it)."""
    gammas = [module.weight.abs().sum() for module in _unwrap(model).modules()
              if isinstance(module, _BatchNorm) and module.weight is not None]
    if not gammas:
        return torch.zeros((), device=next(model.parameters()).device)
    return torch.stack(gammas).sum()


# ---- the methods -----------------------------------------------------------------------------------

def _l1_unstructured(model: nn.Module, sparsity: float) -> Masks:
    masks: Masks = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            count = round(sparsity * module.weight.numel())
            masks[f"{name}.weight"] = _keep_largest(module.weight.abs(), count)
    return masks


def _keep_largest(magnitude: torch.Tensor, count: int) -> torch.Tensor:
    """Mask removing the `count` smallest entries; ties at the cut go in flat (row-major) order."""
    mask = torch.ones_like(magnitude)
    if count == 0:
        return mask
    flat = magnitude.flatten()
    cut = flat.kthvalue(count).values  # a selection, not a sort: fast on the 2.4M-weight convs
    below = flat < cut
    ties = torch.nonzero(flat == cut).flatten()[:count - int(below.sum())]
    mask.view(-1)[below] = 0
    mask.view(-1)[ties] = 0
    return mask


def _filter_norm(model: nn.Module, groups: list[ChannelGroup], sparsity: float, *, p: int) -> Masks:
    masks = _structured_ones(model)
    for group in groups:
        # The norm of a channel over all its filters: sum of |w|^p across the tied convs.
        powered = sum(model.get_submodule(conv).weight.abs().pow(p).flatten(1).sum(1) for conv in group.convs)
        count = min(round(sparsity * group.size), group.size - 1)
        removed = torch.argsort(powered, stable=True)[:count]
        for conv in group.convs:
            masks[f"{conv}.weight"][removed] = 0
        for norm in group.norms:
            for param in ("weight", "bias"):
                masks[f"{norm.bn}.{param}"][norm.offset + removed] = 0
    return masks


def _slimming(model: nn.Module, groups: list[ChannelGroup], sparsity: float) -> Masks:
    slices = [norm for group in groups for norm in group.norms]
    sizes = [group.size for group in groups for _ in group.norms]
    # One candidate per BN entry: its |gamma|, the conv parameters that die with it, its BN and slice.
    gamma = np.concatenate([model.get_submodule(norm.bn).weight.detach().abs().cpu().numpy()
                            [norm.offset:norm.offset + size] for norm, size in zip(slices, sizes)])
    dead = np.concatenate([np.full(size, _dead_per_entry(model, norm)) for norm, size in zip(slices, sizes)])
    bn_names = sorted({norm.bn for norm in slices})
    bn_of = np.concatenate([np.full(size, bn_names.index(norm.bn)) for norm, size in zip(slices, sizes)])
    slice_of = np.concatenate([np.full(size, i) for i, size in enumerate(sizes)])
    position = np.concatenate([np.arange(size) for size in sizes])
    # Keep the largest |gamma| of every BN so that no layer is cut off entirely.
    by_strength = np.argsort(-gamma, kind="stable")
    _, first = np.unique(bn_of[by_strength], return_index=True)
    candidate = np.ones(len(gamma), dtype=bool)
    candidate[by_strength[first]] = False
    ranked = np.flatnonzero(candidate)[np.argsort(gamma[candidate], kind="stable")]
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    reached = np.cumsum(dead[ranked])
    count = 0 if sparsity == 0 else int(np.searchsorted(reached, sparsity * total)) + 1
    if count > len(ranked):
        count = len(ranked)
        warnings.warn(f"slimming reached conv sparsity {reached[-1] / total:.3f}, not the requested "
                      f"{sparsity}: every BN keeps its strongest channel", stacklevel=3)
    removed = ranked[:count]
    masks = _structured_ones(model)
    for i in np.unique(slice_of[removed]):
        norm = slices[i]
        index = torch.as_tensor(norm.offset + position[removed[slice_of[removed] == i]])
        masks[f"{norm.bn}.weight"][index] = 0
        masks[f"{norm.bn}.bias"][index] = 0
        key = f"{norm.layer}.weight"
        if key not in masks:  # a pre-norm BN in front of the classifier
            masks[key] = torch.ones_like(model.get_parameter(key))
        if norm.position == "post":
            masks[key][index] = 0
        else:
            masks[key][:, index] = 0
    return masks


def _dead_per_entry(model: nn.Module, norm: NormSlice) -> int:
    """Conv parameters that die with one entry of `norm`: a filter (post) or an input column (pre)."""
    layer = model.get_submodule(norm.layer)
    if not isinstance(layer, nn.Conv2d):
        return 0  # the classifier: masked, but the paper's sparsity counts conv weights only
    return layer.weight[0].numel() if norm.position == "post" else layer.weight[:, 0].numel()


# ---- helpers -----------------------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside an Opacus GradSampleModule (which keeps it as `_module`)."""
    while isinstance(getattr(model, "_module", None), nn.Module):
        model = model._module
    return model


def _channel_groups(model: nn.Module, method: str) -> list[ChannelGroup]:
    if not hasattr(model, "channel_groups"):
        raise ValueError(f"method={method!r} prunes conv channels, and {type(model).__name__} declares "
                         f"none; it takes only 'l1_unstructured' (structured methods: resnet18, vgg16, "
                         f"densenet121)")
    return model.channel_groups()


def _structured_ones(model: nn.Module) -> Masks:
    """All-ones masks for every conv weight and every BatchNorm weight and bias."""
    masks: Masks = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            masks[f"{name}.weight"] = torch.ones_like(module.weight)
        elif isinstance(module, _BatchNorm):
            masks[f"{name}.weight"] = torch.ones_like(module.weight)
            masks[f"{name}.bias"] = torch.ones_like(module.bias)
    return masks
