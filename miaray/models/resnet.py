"""ResNet18, CIFAR variant: 3x3 stem, no max-pool, four stages of two BasicBlocks (He et al. 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from miaray.models.structure import ChannelGroup, init_xavier, post_norm_group, scaled


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        projects = stride != 1 or in_channels != channels
        self.shortcut_conv = (nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)
                              if projects else None)
        self.shortcut_bn = nn.BatchNorm2d(channels) if projects else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.shortcut_conv is None else self.shortcut_bn(self.shortcut_conv(x))
        return F.relu(out + shortcut)  # out-of-place add: Opacus hooks reject in-place ops


class ResNet18(nn.Module):
    """ResNet18 for inputs (C, H, W); 8x8 inputs work because stride-2 convs stop at 1x1."""

    def __init__(self, *, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, previous = [], widths[0]
        for stage, channels in enumerate(widths):
            for index in range(2):
                blocks.append(BasicBlock(previous, channels, stride=2 if stage and not index else 1))
                previous = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], num_classes)
        init_xavier(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))

    def channel_groups(self) -> list[ChannelGroup]:
        """Internal channels of each block (conv1 -> bn1) form one group each. Channels summed by a
        residual add form one group: the stem (or a projecting block's conv2 and shortcut) and the
        conv2 of every following identity-shortcut block, so a removed channel is zero everywhere."""
        groups: list[ChannelGroup] = []
        stream = [("conv1", "bn1")]
        for i, block in enumerate(self.blocks):
            name = f"blocks.{i}"
            groups.append(post_norm_group(self, [(f"{name}.conv1", f"{name}.bn1")]))
            if block.shortcut_conv is not None:  # a projection starts a new residual stream
                groups.append(post_norm_group(self, stream))
                stream = [(f"{name}.shortcut_conv", f"{name}.shortcut_bn")]
            stream.append((f"{name}.conv2", f"{name}.bn2"))
        groups.append(post_norm_group(self, stream))
        return groups

