"""The fully connected network for tabular data: hidden layers 256 and 128, ReLU, dropout 0.1."""

from __future__ import annotations

import math

import torch
from torch import nn

from miaray.models.structure import init_xavier, scaled


class FC(nn.Module):
    """Flattens any input shape; outputs logits (the softmax is applied by whoever reads them)."""

    def __init__(self, *, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        hidden1, hidden2 = scaled(256, width), scaled(128, width)
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden1), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden1, hidden2), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden2, num_classes),
        )
        init_xavier(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
