"""DenseNet121, CIFAR variant (Huang et al. 2017): 3x3 stem with 2 x growth channels, no max-pool,
dense blocks of (6, 12, 24, 16) bottleneck layers, growth rate 32, compression 0.5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from miaray.models.structure import ChannelGroup, NormSlice, init_xavier, scaled

BLOCKS = (6, 12, 24, 16)


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1 (4 x growth) -> BN-ReLU-conv3x3 (growth); the output is appended to the input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, out], 1)  # appended, so a channel keeps its index for the whole block


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (compression) and, while the map is larger than 1x1, a 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int, *, pools: bool) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pools = pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.relu(self.bn(x)))
        return F.avg_pool2d(out, 2) if self.pools else out


class DenseNet121(nn.Module):
    """DenseNet121 for inputs (C, H, W); `width` scales the growth rate (and so every channel count)."""

    def __init__(self, *, in_channels: int, spatial: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        growth = scaled(32, width)
        channels, size = 2 * growth, spatial
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        blocks, transitions = [], []
        for index, layers in enumerate(BLOCKS):
            blocks.append(nn.Sequential(*(Bottleneck(channels + k * growth, growth) for k in range(layers))))
            channels += layers * growth
            if index < len(BLOCKS) - 1:
                transitions.append(Transition(channels, channels // 2, pools=size >= 2))
                channels, size = channels // 2, size // 2 if size >= 2 else size
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        self.growth = growth
        init_xavier(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for index, block in enumerate(self.blocks):
            out = block(out)
            if index < len(self.transitions):
                out = self.transitions[index](out)
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))

    def channel_groups(self) -> list[ChannelGroup]:
        """Every BN is the pre-activation of the conv (or, last, the classifier) after it. A channel
        made by the stem, a transition or a layer's conv2 is normalised by bn1 of every later layer of
        its block and by the BN after the block, at its fixed index in the concatenation. A layer's
        conv1 channels are normalised by that layer's bn2 only."""
        groups: list[ChannelGroup] = []
        for b, block in enumerate(self.blocks):
            after = ((f"transitions.{b}.bn", f"transitions.{b}.conv") if b < len(self.transitions)
                     else ("bn", "fc"))

            def readers(first: int, offset: int) -> tuple[NormSlice, ...]:
                """BN slices that see a channel made before layer `first` of this block."""
                later = [(f"blocks.{b}.{k}.bn1", f"blocks.{b}.{k}.conv1") for k in range(first, len(block))]
                return tuple(NormSlice(bn=bn, offset=offset, layer=layer, position="pre")
                             for bn, layer in later + [after])

            source = "conv1" if b == 0 else f"transitions.{b - 1}.conv"
            source_size = block[0].bn1.num_features
            groups.append(ChannelGroup(size=source_size, convs=(source,), norms=readers(0, 0)))
            for k, layer in enumerate(block):
                name = f"blocks.{b}.{k}"
                groups.append(ChannelGroup(size=layer.conv1.out_channels, convs=(f"{name}.conv1",),
                                           norms=(NormSlice(bn=f"{name}.bn2", offset=0, layer=f"{name}.conv2",
                                                            position="pre"),)))
                groups.append(ChannelGroup(size=self.growth, convs=(f"{name}.conv2",),
                                           norms=readers(k + 1, source_size + k * self.growth)))
        return groups
