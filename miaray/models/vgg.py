"""VGG16 with batch norm, CIFAR variant: 13 conv3x3-BN-ReLU layers and one linear classifier
(14.7M parameters at 32x32, not the 512-4096-4096 ImageNet head of the authors' code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from miaray.models.structure import ChannelGroup, init_xavier, post_norm_group, scaled

# (channels, conv layers) per stage; a 2x2 max-pool follows each stage.
STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class VGG16(nn.Module):
    """VGG16-BN for inputs (C, H, W). A stage's max-pool is left out once the feature map is 1x1,
    so small inputs (8x8) work; adaptive average pooling feeds the classifier."""

    def __init__(self, *, in_channels: int, spatial: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        convs, bns, pool_after = [], [], []
        previous, size = in_channels, spatial
        for channels, layers in STAGES:
            channels = scaled(channels, width)
            for layer in range(layers):
                convs.append(nn.Conv2d(previous, channels, 3, padding=1, bias=False))
                bns.append(nn.BatchNorm2d(channels))
                pools = layer == layers - 1 and size >= 2
                pool_after.append(pools)
                size = size // 2 if pools else size
                previous = channels
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(bns)
        self.pool_after = tuple(pool_after)
        self.fc = nn.Linear(previous, num_classes)
        init_xavier(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn, pools in zip(self.convs, self.bns, self.pool_after):
            x = F.relu(bn(conv(x)))
            if pools:
                x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def channel_groups(self) -> list[ChannelGroup]:
        """One group per conv: its filters, normalised by the BN right after it."""
        return [post_norm_group(self, [(f"convs.{i}", f"bns.{i}")]) for i in range(len(self.convs))]
