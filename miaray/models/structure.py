"""What the pruning code needs to know about an image model, declared by the model itself.

A model lists its prunable channels as `ChannelGroup`s instead of letting the pruner guess the
conv -> BN coupling from module order. A group is a set of channels tied together: channel j of the
group is produced by filter j of every conv in `convs` (several convs when a residual add sums their
outputs into one channel) and normalised by entry `offset + j` of every BatchNorm in `norms`
(several BNs in DenseNet, where a channel is concatenated into the input of every later layer of
its block). Every conv filter of the model lies in exactly one group and every BatchNorm entry in
exactly one (norm, offset) slice of one group.

Each BatchNorm also names the layer it belongs to: `post` for Conv -> BN (the BN normalises that
conv's output filters, as in ResNet and VGG), `pre` for BN -> ReLU -> Conv/Linear (the BN feeds
that layer's input columns, as in DenseNet). Network slimming uses this to find the weights that
die with a BN channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

Position = Literal["post", "pre"]


@dataclass(frozen=True)
class NormSlice:
    """Entries `offset .. offset + size` of BatchNorm `bn` (module name) normalise a group.

    `layer` is the module name of the conv/linear the BN belongs to and `position` says how:
    `post`: entry i normalises output filter i of `layer`; `pre`: entry i feeds input column i of
    `layer`.
    """

    bn: str
    offset: int
    layer: str
    position: Position


@dataclass(frozen=True)
class ChannelGroup:
    """`size` channels: filter j of each conv in `convs` produces channel j, which entry
    `offset + j` of each slice in `norms` normalises."""

    size: int
    convs: tuple[str, ...]
    norms: tuple[NormSlice, ...]


def scaled(channels: int, width: float) -> int:
    """A channel count times the width multiplier, at least 1."""
    return max(1, round(channels * width))


def init_xavier(model: nn.Module) -> None:
    """Xavier-normal conv/linear weights and zero biases, as the authors' code re-initialises."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def post_norm_group(model: nn.Module, pairs: list[tuple[str, str]]) -> ChannelGroup:
    """The group of channels produced by the same filter index of each (conv, BN after it) pair."""
    size = model.get_submodule(pairs[0][0]).out_channels
    return ChannelGroup(size=size, convs=tuple(conv for conv, _ in pairs),
                        norms=tuple(NormSlice(bn=bn, offset=0, layer=conv, position="post")
                                    for conv, bn in pairs))
